/*
 * Request bodies, both ways: what a client of one API asks, rewritten for a
 * tier that speaks the other. The output is built from the fields we know
 * (everything else is dropped, as the table in ap_conv.h lists); anything the
 * target cannot express is refused with a static message rather than quietly
 * lost, so the client gets a 400 it can act on.
 */
#include "ap_conv_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AP_CONV_DEFAULT_MAX_TOKENS 4096
/* Anthropic's smallest thinking budget. */
#define AP_CONV_MIN_BUDGET 1024

static const struct ap_conv_opts req_no_opts;

/* Largest token limit passed on: what every upstream takes in an int32. */
#define AP_CONV_TOKENS_MAX 2147483647L

/*
 * Token limit `name` of the request: 0 when absent or not a number (*n
 * untouched), 1 with *n set (clamped to opts.max_tokens_limit), or -1 with
 * *err when it is not an integer from 1 to AP_CONV_TOKENS_MAX: 1e300 must be
 * refused, not cast.
 */
static int req_tokens(const cJSON *req, const char *name, const struct ap_conv_opts *o, long *n, const char **err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, name);
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 1 && d <= (double)AP_CONV_TOKENS_MAX) || d != floor(d)) {
        *err = strcmp(name, "max_tokens") == 0 ? "max_tokens must be an integer from 1 to 2147483647"
                                                : "max_completion_tokens must be an integer from 1 to 2147483647";
        return -1;
    }
    *n = (long)d;
    if (o->max_tokens_limit > 0 && *n > o->max_tokens_limit)
        *n = o->max_tokens_limit;
    return 1;
}

static void req_copy(cJSON *out, const cJSON *in, const char *from, const char *to)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, from);
    if (v != NULL && !cJSON_IsNull(v))
        cJSON_AddItemToObject(out, to, cJSON_Duplicate(v, 1));
}

/* {"type":"text","text":...}: an Anthropic text block and an OpenAI text part alike. */
static cJSON *req_text(const char *text)
{
    cJSON *part = cJSON_CreateObject();
    cJSON_AddStringToObject(part, "type", "text");
    cJSON_AddStringToObject(part, "text", text);
    return part;
}

static cJSON *req_schema(const cJSON *schema)
{
    return schema ? cJSON_Duplicate(schema, 1) : cJSON_Parse("{\"type\":\"object\",\"properties\":{}}");
}

static void req_model(cJSON *out, const cJSON *in, const struct ap_conv_opts *o)
{
    if (o->model != NULL)
        cJSON_AddStringToObject(out, "model", o->model);
    else
        req_copy(out, in, "model", "model");
}

/* ======== Anthropic -> OpenAI ======== */

static void a2o_add_msg(cJSON *msgs, const char *role, cJSON *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddItemToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
}

/*
 * Anthropic's system prompt -> ONE leading system message. Block lists are
 * joined with a blank line between the texts: many OpenAI-compatible servers'
 * chat templates take a single system message at the start and reject or
 * ignore any other. cache_control marks are dropped (the table in ap_conv.h);
 * empty blocks add nothing, and no text at all adds no message.
 */
static int a2o_system(const cJSON *sys, cJSON *msgs, const char **err)
{
    const cJSON *b;
    struct ap_conv_text joined = {0};

    if (sys == NULL || cJSON_IsNull(sys))
        return 0;
    if (cJSON_IsString(sys)) {
        a2o_add_msg(msgs, "system", cJSON_CreateString(sys->valuestring));
        return 0;
    }
    if (!cJSON_IsArray(sys)) {
        *err = "system must be a string or a list of text blocks";
        return -1;
    }
    cJSON_ArrayForEach(b, sys) {
        const char *t = ap_conv_str(b, "text");
        if (t == NULL) {
            *err = "system blocks must be text blocks";
            ap_conv_text_free(&joined);
            return -1;
        }
        if (t[0] != '\0' && ap_conv_text_add(&joined, "\n\n", t) < 0) {
            ap_conv_text_free(&joined);
            return -1;
        }
    }
    if (joined.s != NULL)
        a2o_add_msg(msgs, "system", cJSON_CreateString(joined.s));
    ap_conv_text_free(&joined);
    return 0;
}

static cJSON *a2o_image(const cJSON *b, const char **err)
{
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
    const char *type = ap_conv_str(src, "type");
    const char *mt = ap_conv_str(src, "media_type");
    const char *data = ap_conv_str(src, "data");
    const char *url = ap_conv_str(src, "url");
    char *data_url = NULL;

    if (type != NULL && strcmp(type, "base64") == 0 && mt != NULL && data != NULL) {
        if (asprintf(&data_url, "data:%s;base64,%s", mt, data) < 0) {
            *err = "out of memory";
            return NULL;
        }
        url = data_url;
    } else if (type == NULL || strcmp(type, "url") != 0 || url == NULL) {
        *err = "image source must be base64 (media_type, data) or url";
        return NULL;
    }
    cJSON *part = cJSON_CreateObject();
    cJSON_AddStringToObject(part, "type", "image_url");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(part, "image_url"), "url", url);
    free(data_url);
    return part;
}

/* Tool result text, with the result's images moved to `images` (tool messages hold no images). */
static int a2o_result_content(const cJSON *content, struct ap_conv_text *text, cJSON *images, const char **err)
{
    const cJSON *c;

    if (cJSON_IsString(content)) {
        if (ap_conv_text_add(text, "", content->valuestring) == 0)
            return 0;
        *err = "out of memory";
        return -1;
    }
    if (content != NULL && !cJSON_IsNull(content) && !cJSON_IsArray(content)) {
        *err = "tool_result content must be a string or a list of blocks";
        return -1;
    }
    cJSON_ArrayForEach(c, content) {
        const char *type = ap_conv_str(c, "type");
        const char *t = ap_conv_str(c, "text");
        if (type != NULL && strcmp(type, "text") == 0 && t != NULL) {
            if (ap_conv_text_add(text, "\n", t) < 0) {
                *err = "out of memory";
                return -1;
            }
        } else if (type != NULL && strcmp(type, "image") == 0) {
            cJSON *img = a2o_image(c, err);
            if (img == NULL)
                return -1;
            cJSON_AddItemToArray(images, img);
        } else {
            *err = "tool_result content blocks must be text or image";
            return -1;
        }
    }
    return 0;
}

static int a2o_tool_result(const cJSON *b, cJSON *msgs, cJSON *images, const char **err)
{
    const char *id = ap_conv_str(b, "tool_use_id");
    struct ap_conv_text text = {0};

    if (id == NULL) {
        *err = "tool_result block needs a tool_use_id";
        return -1;
    }
    if (a2o_result_content(cJSON_GetObjectItemCaseSensitive(b, "content"), &text, images, err) < 0) {
        ap_conv_text_free(&text);
        return -1;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "tool");
    cJSON_AddStringToObject(m, "tool_call_id", id);
    cJSON_AddStringToObject(m, "content", text.s ? text.s : "");
    /* Non-standard, so that a round trip keeps it; OpenAI has no error flag. */
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "is_error")))
        cJSON_AddTrueToObject(m, "is_error");
    cJSON_AddItemToArray(msgs, m);
    ap_conv_text_free(&text);
    return 0;
}

/* One block of a user turn: a part for the user message, or a tool message. */
static int a2o_user_block(const cJSON *b, cJSON *msgs, cJSON *parts, cJSON *images,
                          const char **err)
{
    const char *type = ap_conv_str(b, "type");
    const char *t = ap_conv_str(b, "text");

    if (type != NULL && strcmp(type, "text") == 0 && t != NULL) {
        cJSON_AddItemToArray(parts, req_text(t));
        return 0;
    }
    if (type != NULL && strcmp(type, "image") == 0) {
        cJSON *img = a2o_image(b, err);
        if (img == NULL)
            return -1;
        cJSON_AddItemToArray(parts, img);
        return 0;
    }
    if (type != NULL && strcmp(type, "tool_result") == 0)
        return a2o_tool_result(b, msgs, images, err);
    *err = "user content blocks must be text, image or tool_result";
    return -1;
}

/*
 * A user turn: its tool results become tool messages, in order, then the rest
 * (tool result images first) one user message after them.
 */
static int a2o_user(const cJSON *content, cJSON *msgs, const char **err)
{
    const cJSON *b;
    const cJSON *last_before = msgs->child ? msgs->child->prev : NULL; /* cJSON keeps the tail there */

    if (cJSON_IsString(content)) {
        a2o_add_msg(msgs, "user", cJSON_CreateString(content->valuestring));
        return 0;
    }
    if (!cJSON_IsArray(content)) {
        *err = "message content must be a string or a list of blocks";
        return -1;
    }
    cJSON *images = cJSON_CreateArray();
    cJSON *parts = cJSON_CreateArray();
    cJSON_ArrayForEach(b, content) {
        if (a2o_user_block(b, msgs, parts, images, err) < 0) {
            cJSON_Delete(images);
            cJSON_Delete(parts);
            return -1;
        }
    }
    while (parts->child != NULL)
        cJSON_AddItemToArray(images, cJSON_DetachItemViaPointer(parts, parts->child));
    cJSON_Delete(parts);
    /* A turn of tool results only needs no user message; an empty turn stays a turn. */
    if (images->child != NULL || (msgs->child ? msgs->child->prev : NULL) == last_before)
        a2o_add_msg(msgs, "user", images);
    else
        cJSON_Delete(images);
    return 0;
}

static int a2o_messages(const cJSON *messages, cJSON *msgs, const char **err)
{
    const cJSON *m;

    if (!cJSON_IsArray(messages)) {
        *err = "messages must be a list";
        return -1;
    }
    cJSON_ArrayForEach(m, messages) {
        const char *role = ap_conv_str(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (role != NULL && strcmp(role, "user") == 0) {
            if (a2o_user(content, msgs, err) < 0)
                return -1;
        } else if (role != NULL && strcmp(role, "assistant") == 0) {
            cJSON *am = ap_conv_assistant_a2o(content, err);
            if (am == NULL)
                return -1;
            cJSON_AddItemToArray(msgs, am);
        } else {
            *err = "message role must be user or assistant";
            return -1;
        }
    }
    return 0;
}

static int a2o_tools(const cJSON *tools, cJSON *out, const char **err)
{
    const cJSON *t;

    if (tools == NULL || cJSON_IsNull(tools))
        return 0;
    if (!cJSON_IsArray(tools)) {
        *err = "tools must be a list";
        return -1;
    }
    if (tools->child == NULL)
        return 0; /* OpenAI rejects an empty tools list */
    cJSON *list = cJSON_AddArrayToObject(out, "tools");
    cJSON_ArrayForEach(t, tools) {
        const char *type = ap_conv_str(t, "type");
        const char *name = ap_conv_str(t, "name");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(t, "input_schema");
        if (type != NULL && strcmp(type, "custom") != 0) {
            *err = "Anthropic server tools cannot be used with an OpenAI-format model";
            return -1;
        }
        if (name == NULL) {
            *err = "tools[] needs a name";
            return -1;
        }
        cJSON *f = cJSON_CreateObject();
        cJSON_AddItemToArray(list, f);
        cJSON_AddStringToObject(f, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(f, "function");
        cJSON_AddStringToObject(fn, "name", name);
        req_copy(fn, t, "description", "description");
        cJSON_AddItemToObject(fn, "parameters", req_schema(schema));
    }
    return 0;
}

static int a2o_tool_choice(const cJSON *tc, cJSON *out, const char **err)
{
    const char *type = ap_conv_str(tc, "type");
    const char *name = ap_conv_str(tc, "name");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(out, "tools");

    /* OpenAI refuses tool_choice and parallel_tool_calls without tools. */
    if (tc == NULL || cJSON_IsNull(tc) || tools == NULL || tools->child == NULL)
        return 0;
    if (type == NULL) {
        *err = "tool_choice needs a type";
        return -1;
    }
    if (strcmp(type, "auto") == 0) {
        cJSON_AddStringToObject(out, "tool_choice", "auto");
    } else if (strcmp(type, "any") == 0) {
        cJSON_AddStringToObject(out, "tool_choice", "required");
    } else if (strcmp(type, "none") == 0) {
        cJSON_AddStringToObject(out, "tool_choice", "none");
    } else if (strcmp(type, "tool") == 0 && name != NULL) {
        cJSON *c = cJSON_AddObjectToObject(out, "tool_choice");
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(c, "function"), "name", name);
    } else {
        *err = "tool_choice type must be auto, any, none or tool (with a name)";
        return -1;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tc, "disable_parallel_tool_use")))
        cJSON_AddFalseToObject(out, "parallel_tool_calls");
    return 0;
}

static void a2o_thinking(const cJSON *thinking, cJSON *out)
{
    const char *type = ap_conv_str(thinking, "type");
    const cJSON *budget = cJSON_GetObjectItemCaseSensitive(thinking, "budget_tokens");

    if (type == NULL || strcmp(type, "enabled") != 0 || !cJSON_IsNumber(budget))
        return;
    /* Bounds around o2a_thinking's budgets, so that a round trip keeps the effort. */
    const char *effort = budget->valuedouble < 4096    ? "low"
                         : budget->valuedouble < 16384 ? "medium"
                                                       : "high";
    cJSON_AddStringToObject(out, "reasoning_effort", effort);
}

static int a2o_params(const cJSON *req, const struct ap_conv_opts *o, cJSON *out, const char **err)
{
    long mt = 0;
    int has_mt = req_tokens(req, "max_tokens", o, &mt, err);
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(req, "stop_sequences");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(req, "stream");
    const char *user = ap_conv_str(cJSON_GetObjectItemCaseSensitive(req, "metadata"), "user_id");

    if (has_mt < 0)
        return -1;
    if (has_mt)
        cJSON_AddNumberToObject(out, "max_tokens", (double)mt);
    req_copy(out, req, "temperature", "temperature");
    req_copy(out, req, "top_p", "top_p");
    if (cJSON_IsArray(stop) && stop->child != NULL)
        cJSON_AddItemToObject(out, "stop", cJSON_Duplicate(stop, 1));
    if (cJSON_IsBool(stream))
        cJSON_AddBoolToObject(out, "stream", cJSON_IsTrue(stream));
    if (cJSON_IsTrue(stream) && o->stream_usage)
        cJSON_AddTrueToObject(cJSON_AddObjectToObject(out, "stream_options"), "include_usage");
    if (user != NULL)
        cJSON_AddStringToObject(out, "user", user);
    a2o_thinking(cJSON_GetObjectItemCaseSensitive(req, "thinking"), out);
    return 0;
}

cJSON *ap_conv_req_a2o(const cJSON *req, const struct ap_conv_opts *o, const char **err)
{
    if (o == NULL)
        o = &req_no_opts;
    *err = NULL;
    if (!cJSON_IsObject(req)) {
        *err = "request body must be a JSON object";
        return NULL;
    }
    cJSON *out = cJSON_CreateObject();
    req_model(out, req, o);
    cJSON *msgs = cJSON_AddArrayToObject(out, "messages");
    if (msgs == NULL ||
        a2o_system(cJSON_GetObjectItemCaseSensitive(req, "system"), msgs, err) < 0 ||
        a2o_messages(cJSON_GetObjectItemCaseSensitive(req, "messages"), msgs, err) < 0 ||
        a2o_tools(cJSON_GetObjectItemCaseSensitive(req, "tools"), out, err) < 0 ||
        a2o_tool_choice(cJSON_GetObjectItemCaseSensitive(req, "tool_choice"), out, err) < 0 ||
        a2o_params(req, o, out, err) < 0) {
        if (*err == NULL)
            *err = "out of memory";
        cJSON_Delete(out);
        return NULL;
    }
    return out;
}

/* ======== OpenAI -> Anthropic ======== */

/*
 * Appends a message, merging it into the previous one when the role repeats:
 * Anthropic needs user and assistant turns to alternate. Takes `content`.
 */
static void o2a_push(cJSON *msgs, const char *role, cJSON *content)
{
    cJSON *last = msgs->child ? msgs->child->prev : NULL; /* cJSON keeps the tail there */

    if (last == NULL || strcmp(ap_conv_str(last, "role"), role) != 0) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", role);
        cJSON_AddItemToObject(m, "content", content);
        cJSON_AddItemToArray(msgs, m);
        return;
    }
    cJSON *lc = cJSON_GetObjectItemCaseSensitive(last, "content");
    if (cJSON_IsString(lc)) {
        cJSON *blocks = cJSON_CreateArray();
        if (lc->valuestring[0] != '\0')
            cJSON_AddItemToArray(blocks, req_text(lc->valuestring));
        cJSON_ReplaceItemInObjectCaseSensitive(last, "content", blocks); /* ViaPointer drops the key */
        lc = blocks;
    }
    if (cJSON_IsString(content) && content->valuestring[0] != '\0')
        cJSON_AddItemToArray(lc, req_text(content->valuestring));
    while (cJSON_IsArray(content) && content->child != NULL)
        cJSON_AddItemToArray(lc, cJSON_DetachItemViaPointer(content, content->child));
    cJSON_Delete(content);
}

static cJSON *o2a_image(const cJSON *part, const char **err)
{
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const char *url = cJSON_IsString(iu) ? iu->valuestring : ap_conv_str(iu, "url");

    if (url == NULL) {
        *err = "image_url part needs image_url.url";
        return NULL;
    }
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "image");
    cJSON *src = cJSON_AddObjectToObject(b, "source");
    if (strncmp(url, "data:", 5) != 0) {
        cJSON_AddStringToObject(src, "type", "url");
        cJSON_AddStringToObject(src, "url", url);
        return b;
    }
    const char *sep = strstr(url, ";base64,");
    char *mt = sep ? strndup(url + 5, (size_t)(sep - (url + 5))) : NULL;
    if (mt == NULL) {
        cJSON_Delete(b);
        *err = sep ? "out of memory" : "image data URLs must be base64";
        return NULL;
    }
    cJSON_AddStringToObject(src, "type", "base64");
    cJSON_AddStringToObject(src, "media_type", mt);
    cJSON_AddStringToObject(src, "data", sep + 8);
    free(mt);
    return b;
}

/* Content parts -> blocks; `images` says whether image parts are allowed. */
static cJSON *o2a_parts(const cJSON *content, int images, const char **err)
{
    const cJSON *part;
    cJSON *blocks = cJSON_CreateArray();

    cJSON_ArrayForEach(part, content) {
        const char *type = ap_conv_str(part, "type");
        const char *t = ap_conv_str(part, "text");
        cJSON *b = NULL;
        if (type != NULL && strcmp(type, "text") == 0 && t != NULL)
            b = req_text(t);
        else if (images && type != NULL && strcmp(type, "image_url") == 0)
            b = o2a_image(part, err);
        else
            *err = images ? "content parts must be text or image_url" : "content parts must be text";
        if (b == NULL) {
            cJSON_Delete(blocks);
            return NULL;
        }
        cJSON_AddItemToArray(blocks, b);
    }
    return blocks;
}

/* String content stays a string; a part list becomes blocks. */
static cJSON *o2a_content(const cJSON *content, int images, const char **err)
{
    if (cJSON_IsString(content))
        return cJSON_CreateString(content->valuestring);
    if (content == NULL || cJSON_IsNull(content))
        return cJSON_CreateString("");
    if (!cJSON_IsArray(content)) {
        *err = "message content must be a string or a list of parts";
        return NULL;
    }
    return o2a_parts(content, images, err);
}

static int o2a_system(const cJSON *m, cJSON *system, const char **err)
{
    cJSON *c = o2a_content(cJSON_GetObjectItemCaseSensitive(m, "content"), 0, err);
    if (c == NULL)
        return -1;
    if (cJSON_IsString(c))
        cJSON_AddItemToArray(system, req_text(c->valuestring));
    while (cJSON_IsArray(c) && c->child != NULL)
        cJSON_AddItemToArray(system, cJSON_DetachItemViaPointer(c, c->child));
    cJSON_Delete(c);
    return 0;
}

static int o2a_tool(const cJSON *m, cJSON *msgs, const char **err)
{
    const char *id = ap_conv_str(m, "tool_call_id");
    if (id == NULL) {
        *err = "tool messages need a tool_call_id";
        return -1;
    }
    cJSON *c = o2a_content(cJSON_GetObjectItemCaseSensitive(m, "content"), 0, err);
    if (c == NULL)
        return -1;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "tool_result");
    cJSON_AddStringToObject(b, "tool_use_id", id);
    cJSON_AddItemToObject(b, "content", c);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "is_error")))
        cJSON_AddTrueToObject(b, "is_error");
    cJSON *blocks = cJSON_CreateArray();
    cJSON_AddItemToArray(blocks, b);
    o2a_push(msgs, "user", blocks);
    return 0;
}

static int o2a_assistant(const cJSON *m, cJSON *msgs, const char **err)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    cJSON *blocks = ap_conv_assistant_o2a(m, 1, err);

    if (blocks == NULL)
        return -1;
    if (blocks->child == NULL) {
        cJSON_Delete(blocks); /* nothing said: Anthropic rejects empty turns */
        return 0;
    }
    if (cJSON_IsString(content) && blocks->child->next == NULL &&
        strcmp(ap_conv_str(blocks->child, "type"), "text") == 0) {
        cJSON_Delete(blocks);
        o2a_push(msgs, "assistant", cJSON_CreateString(content->valuestring));
        return 0;
    }
    o2a_push(msgs, "assistant", blocks);
    return 0;
}

static int o2a_message(const cJSON *m, cJSON *msgs, cJSON *system, const char **err)
{
    const char *role = ap_conv_str(m, "role");

    if (role == NULL) {
        *err = "messages[] needs a role";
        return -1;
    }
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
        return o2a_system(m, system, err);
    if (strcmp(role, "assistant") == 0)
        return o2a_assistant(m, msgs, err);
    if (strcmp(role, "tool") == 0)
        return o2a_tool(m, msgs, err);
    if (strcmp(role, "user") == 0) {
        cJSON *c = o2a_content(cJSON_GetObjectItemCaseSensitive(m, "content"), 1, err);
        if (c == NULL)
            return -1;
        o2a_push(msgs, "user", c);
        return 0;
    }
    *err = "message role must be system, developer, user, assistant or tool";
    return -1;
}

static int o2a_messages(const cJSON *messages, cJSON *out, const char **err)
{
    const cJSON *m;

    if (!cJSON_IsArray(messages)) {
        *err = "messages must be a list";
        return -1;
    }
    cJSON *system = cJSON_CreateArray();
    cJSON *msgs = cJSON_CreateArray();
    cJSON_ArrayForEach(m, messages) {
        if (o2a_message(m, msgs, system, err) < 0) {
            cJSON_Delete(system);
            cJSON_Delete(msgs);
            return -1;
        }
    }
    if (system->child != NULL && system->child->next == NULL) {
        req_copy(out, system->child, "text", "system");
        cJSON_Delete(system);
    } else if (system->child != NULL) {
        cJSON_AddItemToObject(out, "system", system);
    } else {
        cJSON_Delete(system);
    }
    cJSON_AddItemToObject(out, "messages", msgs);
    return 0;
}

static int o2a_tools(const cJSON *tools, cJSON *out, const char **err)
{
    const cJSON *t;

    if (tools == NULL || cJSON_IsNull(tools))
        return 0;
    if (!cJSON_IsArray(tools)) {
        *err = "tools must be a list";
        return -1;
    }
    if (tools->child == NULL)
        return 0;
    cJSON *list = cJSON_AddArrayToObject(out, "tools");
    cJSON_ArrayForEach(t, tools) {
        const char *type = ap_conv_str(t, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        const char *name = ap_conv_str(fn, "name");
        if ((type != NULL && strcmp(type, "function") != 0) || name == NULL) {
            *err = "tools[] must be functions with a name";
            return -1;
        }
        cJSON *a = cJSON_CreateObject();
        cJSON_AddItemToArray(list, a);
        cJSON_AddStringToObject(a, "name", name);
        req_copy(a, fn, "description", "description");
        cJSON_AddItemToObject(a, "input_schema", req_schema(params));
    }
    return 0;
}

static cJSON *o2a_choice(const char *type, const char *name)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", type);
    if (name != NULL)
        cJSON_AddStringToObject(c, "name", name);
    return c;
}

static int o2a_tool_choice(const cJSON *req, cJSON *out, const char **err)
{
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(req, "tool_choice");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(out, "tools");
    const char *s = tc != NULL && cJSON_IsString(tc) ? tc->valuestring : NULL;
    const char *name = ap_conv_str(cJSON_GetObjectItemCaseSensitive(tc, "function"), "name");
    cJSON *c = NULL;

    if (s != NULL && strcmp(s, "auto") == 0)
        c = o2a_choice("auto", NULL);
    else if (s != NULL && strcmp(s, "required") == 0)
        c = o2a_choice("any", NULL);
    else if (s != NULL && strcmp(s, "none") == 0)
        c = o2a_choice("none", NULL);
    else if (cJSON_IsObject(tc) && name != NULL)
        c = o2a_choice("tool", name);
    else if (tc != NULL && !cJSON_IsNull(tc)) {
        *err = "tool_choice must be auto, required, none or a function";
        return -1;
    }
    if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(req, "parallel_tool_calls"))) {
        if (c == NULL)
            c = o2a_choice("auto", NULL);
        if (strcmp(ap_conv_str(c, "type"), "none") != 0)
            cJSON_AddTrueToObject(c, "disable_parallel_tool_use");
    }
    /* Anthropic refuses a tool_choice without tools. */
    if (c != NULL && tools != NULL && tools->child != NULL)
        cJSON_AddItemToObject(out, "tool_choice", c);
    else
        cJSON_Delete(c);
    return 0;
}

static void o2a_thinking(const cJSON *req, long max_tokens, cJSON *out)
{
    static const struct { const char *effort; long budget; } map[] = {
        {"low", 2048}, {"medium", 8192}, {"high", 24576},
    };
    const char *effort = ap_conv_str(req, "reasoning_effort");
    long budget = 0;

    for (size_t i = 0; effort != NULL && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(effort, map[i].effort) == 0)
            budget = map[i].budget;
    if (budget > max_tokens - 1)
        budget = max_tokens - 1; /* Anthropic wants budget_tokens < max_tokens */
    if (budget < AP_CONV_MIN_BUDGET)
        return;
    cJSON *t = cJSON_AddObjectToObject(out, "thinking");
    cJSON_AddStringToObject(t, "type", "enabled");
    cJSON_AddNumberToObject(t, "budget_tokens", (double)budget);
    /* Anthropic rejects temperature and most top_p values with thinking on. */
    cJSON_DeleteItemFromObjectCaseSensitive(out, "temperature");
    cJSON_DeleteItemFromObjectCaseSensitive(out, "top_p");
}

/* max_completion_tokens, else max_tokens, else the default; both checked when present. */
static int o2a_max_tokens(const cJSON *req, const struct ap_conv_opts *o, long *n, const char **err)
{
    long legacy = 0;
    int has_new = req_tokens(req, "max_completion_tokens", o, n, err);
    int has_legacy = req_tokens(req, "max_tokens", o, &legacy, err);
    if (has_new < 0 || has_legacy < 0)
        return -1;
    if (!has_new)
        *n = has_legacy ? legacy : AP_CONV_DEFAULT_MAX_TOKENS;
    if (!has_new && !has_legacy && o->max_tokens_limit > 0 && *n > o->max_tokens_limit)
        *n = o->max_tokens_limit;
    return 0;
}

static void o2a_params(const cJSON *req, long max_tokens, cJSON *out)
{
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(req, "temperature");
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(req, "stop");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(req, "stream");
    const char *user = ap_conv_str(req, "user");

    cJSON_AddNumberToObject(out, "max_tokens", (double)max_tokens);
    if (cJSON_IsNumber(temp))
        cJSON_AddNumberToObject(out, "temperature", temp->valuedouble > 1 ? 1 : temp->valuedouble);
    req_copy(out, req, "top_p", "top_p");
    if (cJSON_IsString(stop)) {
        cJSON_AddItemToArray(cJSON_AddArrayToObject(out, "stop_sequences"),
                             cJSON_CreateString(stop->valuestring));
    } else if (cJSON_IsArray(stop) && stop->child != NULL) {
        cJSON_AddItemToObject(out, "stop_sequences", cJSON_Duplicate(stop, 1));
    }
    if (cJSON_IsBool(stream))
        cJSON_AddBoolToObject(out, "stream", cJSON_IsTrue(stream));
    if (user != NULL)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(out, "metadata"), "user_id", user);
    o2a_thinking(req, max_tokens, out);
}

cJSON *ap_conv_req_o2a(const cJSON *req, const struct ap_conv_opts *o, const char **err)
{
    if (o == NULL)
        o = &req_no_opts;
    *err = NULL;
    if (!cJSON_IsObject(req)) {
        *err = "request body must be a JSON object";
        return NULL;
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(req, "n");
    if (cJSON_IsNumber(n) && n->valuedouble != 1) {
        *err = "n other than 1 is not supported: this model returns one choice";
        return NULL;
    }
    long max_tokens;
    if (o2a_max_tokens(req, o, &max_tokens, err) < 0)
        return NULL;
    cJSON *out = cJSON_CreateObject();
    req_model(out, req, o);
    if (o2a_messages(cJSON_GetObjectItemCaseSensitive(req, "messages"), out, err) < 0 ||
        o2a_tools(cJSON_GetObjectItemCaseSensitive(req, "tools"), out, err) < 0 ||
        o2a_tool_choice(req, out, err) < 0) {
        if (*err == NULL)
            *err = "out of memory";
        cJSON_Delete(out);
        return NULL;
    }
    o2a_params(req, max_tokens, out);
    return out;
}
