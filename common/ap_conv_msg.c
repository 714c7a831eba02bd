/*
 * One assistant turn, both ways. A request's history and a response body hold
 * the same thing (what the model said: thinking, text, tool calls), so
 * ap_conv_req.c and ap_conv_resp.c share these two conversions. The rules are
 * in the table at the top of ap_conv.h.
 */
#include "ap_conv_int.h"
#include "ap_json.h"

#include <stdlib.h>
#include <string.h>

/* ---- Anthropic blocks -> one OpenAI assistant message ---- */

struct conv_a2o_acc {
    struct ap_conv_text text;      /* text blocks concatenated */
    struct ap_conv_text reasoning; /* thinking texts joined with "\n\n" */
    const char *signature; /* borrowed: the last thinking block's signature */
    int nthinking;
    cJSON *tool_calls;     /* owned */
};

static int a2o_text(struct conv_a2o_acc *acc, const cJSON *b, const char **err)
{
    const char *t = ap_conv_str(b, "text");
    if (t == NULL) {
        *err = "text block needs a string text";
        return -1;
    }
    /* "": a stream client gets the blocks as one run of content deltas too. */
    if (ap_conv_text_add(&acc->text, "", t) < 0) {
        *err = "out of memory";
        return -1;
    }
    return 0;
}

static int a2o_thinking(struct conv_a2o_acc *acc, const cJSON *b, const char **err)
{
    const char *t = ap_conv_str(b, "thinking");
    if (t == NULL) {
        *err = "thinking block needs a string thinking";
        return -1;
    }
    if (ap_conv_text_add(&acc->reasoning, "\n\n", t) < 0) {
        *err = "out of memory";
        return -1;
    }
    acc->signature = ap_conv_str(b, "signature");
    acc->nthinking++;
    return 0;
}

static int a2o_tool_use(struct conv_a2o_acc *acc, const cJSON *b, const char **err)
{
    const char *id = ap_conv_str(b, "id");
    const char *name = ap_conv_str(b, "name");
    if (id == NULL || name == NULL) {
        *err = "tool_use block needs a string id and name";
        return -1;
    }
    /* raw_arguments: what ap_conv_assistant_o2a kept of arguments that were not JSON. */
    const char *raw = ap_conv_str(b, "raw_arguments");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
    char *args = raw == NULL && input != NULL ? ap_json_print_keep(input) : NULL;

    if (acc->tool_calls == NULL)
        acc->tool_calls = cJSON_CreateArray();
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddItemToArray(acc->tool_calls, tc);
    cJSON_AddStringToObject(tc, "id", id);
    cJSON_AddStringToObject(tc, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    cJSON_AddStringToObject(fn, "name", name);
    cJSON_AddStringToObject(fn, "arguments", raw ? raw : args ? args : "{}");
    cJSON_free(args);
    return 0;
}

static int a2o_block(struct conv_a2o_acc *acc, const cJSON *b, const char **err)
{
    const char *type = ap_conv_str(b, "type");
    if (type == NULL) {
        *err = "content block needs a type";
        return -1;
    }
    if (strcmp(type, "text") == 0)
        return a2o_text(acc, b, err);
    if (strcmp(type, "thinking") == 0)
        return a2o_thinking(acc, b, err);
    if (strcmp(type, "tool_use") == 0)
        return a2o_tool_use(acc, b, err);
    /* redacted_thinking, server tool blocks: OpenAI has nothing to hold them. */
    return 0;
}

static cJSON *a2o_message(struct conv_a2o_acc *acc)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (acc->text.s != NULL)
        cJSON_AddStringToObject(msg, "content", acc->text.s);
    else if (acc->tool_calls != NULL)
        cJSON_AddNullToObject(msg, "content");
    else
        cJSON_AddStringToObject(msg, "content", "");
    if (acc->reasoning.s != NULL)
        cJSON_AddStringToObject(msg, "reasoning_content", acc->reasoning.s);
    /* A signature covers one block's text: with several joined it would be invalid. */
    if (acc->nthinking == 1 && acc->signature != NULL && acc->signature[0] != '\0')
        cJSON_AddStringToObject(msg, "reasoning_signature", acc->signature);
    if (acc->tool_calls != NULL) {
        cJSON_AddItemToObject(msg, "tool_calls", acc->tool_calls);
        acc->tool_calls = NULL;
    }
    return msg;
}

cJSON *ap_conv_assistant_a2o(const cJSON *content, const char **err)
{
    struct conv_a2o_acc acc = {0};
    cJSON *msg = NULL;
    const cJSON *b;

    if (cJSON_IsString(content)) {
        if (ap_conv_text_add(&acc.text, "", content->valuestring) < 0) {
            *err = "out of memory";
            goto out;
        }
    } else if (cJSON_IsArray(content)) {
        cJSON_ArrayForEach(b, content) {
            if (a2o_block(&acc, b, err) < 0)
                goto out;
        }
    } else if (content != NULL && !cJSON_IsNull(content)) {
        *err = "message content must be a string or a list of blocks";
        goto out;
    }
    msg = a2o_message(&acc);
out:
    ap_conv_text_free(&acc.text);
    ap_conv_text_free(&acc.reasoning);
    cJSON_Delete(acc.tool_calls);
    return msg;
}

/* ---- one OpenAI assistant message -> Anthropic blocks ---- */

static void o2a_add_text(cJSON *blocks, const char *text)
{
    /* Anthropic rejects empty text blocks. */
    if (text == NULL || text[0] == '\0')
        return;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "text");
    cJSON_AddStringToObject(b, "text", text);
    cJSON_AddItemToArray(blocks, b);
}

static void o2a_reasoning(cJSON *blocks, const cJSON *msg, int for_upstream)
{
    const char *r = ap_conv_str(msg, "reasoning_content");
    if (r == NULL)
        r = ap_conv_str(msg, "reasoning");
    if (r == NULL || r[0] == '\0')
        return;
    const char *sig = ap_conv_str(msg, "reasoning_signature");
    if (sig != NULL && sig[0] == '\0')
        sig = NULL;
    /* Anthropic rejects a thinking block it did not sign, and ignores old thinking anyway. */
    if (for_upstream && sig == NULL)
        return;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "thinking");
    cJSON_AddStringToObject(b, "thinking", r);
    cJSON_AddStringToObject(b, "signature", sig ? sig : "");
    cJSON_AddItemToArray(blocks, b);
}

static int o2a_content(cJSON *blocks, const cJSON *content, const char **err)
{
    const cJSON *part;

    if (content == NULL || cJSON_IsNull(content))
        return 0;
    if (cJSON_IsString(content)) {
        o2a_add_text(blocks, content->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(content)) {
        *err = "message content must be a string or a list of parts";
        return -1;
    }
    cJSON_ArrayForEach(part, content) {
        const char *type = ap_conv_str(part, "type");
        if (type != NULL && (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0)) {
            o2a_add_text(blocks, ap_conv_str(part, type));
            continue;
        }
        *err = "assistant content parts must be text or refusal";
        return -1;
    }
    return 0;
}

/* The tool input: arguments parsed when they are a JSON object, else NULL. */
static cJSON *o2a_input(const cJSON *args)
{
    if (cJSON_IsObject(args))
        return cJSON_Duplicate(args, 1); /* some servers send an object, not a string */
    const char *s = cJSON_IsString(args) ? args->valuestring : "";
    s += strspn(s, " \t\r\n");
    if (*s == '\0')
        return cJSON_CreateObject();
    /*
     * Whole string must parse: '{"a":1}{"b":2}' is not one object. Read as a
     * client body (duplicates, U+0000), or the tree would say something else.
     */
    const char *err;
    cJSON *v = ap_json_parse_client_keep(s, strlen(s), &err);
    if (cJSON_IsObject(v))
        return v;
    cJSON_Delete(v);
    return NULL;
}

static int o2a_tool_call(cJSON *blocks, const cJSON *tc, int for_upstream, const char **err)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    const char *name = ap_conv_str(fn, "name");
    if (name == NULL) {
        *err = "tool_calls[] needs function.name";
        return -1;
    }
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    char *gen = ap_conv_str(tc, "id") ? NULL : ap_conv_id(NULL, "toolu_");
    cJSON *input = o2a_input(args);

    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "tool_use");
    cJSON_AddStringToObject(b, "id", gen ? gen : ap_conv_str(tc, "id"));
    cJSON_AddStringToObject(b, "name", name);
    cJSON_AddItemToObject(b, "input", input ? input : cJSON_CreateObject());
    /* The client may want to see what the model wrote; Anthropic itself rejects extra fields. */
    if (input == NULL && !for_upstream)
        cJSON_AddStringToObject(b, "raw_arguments", args->valuestring);
    cJSON_AddItemToArray(blocks, b);
    free(gen);
    return 0;
}

cJSON *ap_conv_assistant_o2a(const cJSON *msg, int for_upstream, const char **err)
{
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    const cJSON *tc;
    cJSON *blocks = cJSON_CreateArray();

    o2a_reasoning(blocks, msg, for_upstream);
    if (o2a_content(blocks, cJSON_GetObjectItemCaseSensitive(msg, "content"), err) < 0)
        goto fail;
    o2a_add_text(blocks, ap_conv_str(msg, "refusal"));
    if (tcs != NULL && !cJSON_IsNull(tcs) && !cJSON_IsArray(tcs)) {
        *err = "tool_calls must be a list";
        goto fail;
    }
    cJSON_ArrayForEach(tc, tcs) {
        if (o2a_tool_call(blocks, tc, for_upstream, err) < 0)
            goto fail;
    }
    return blocks;
fail:
    cJSON_Delete(blocks);
    return NULL;
}
