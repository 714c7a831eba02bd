/* The outbound request of one attempt, decided without I/O (see px_outbound.h). */
#include "px_outbound.h"

#include "ap_fallback.h"
#include "ap_http1.h"
#include "ap_json.h"

#include <cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int outbound_url(struct px_target *t, const char *base, const char *path, const char *query)
{
    int n = snprintf(t->url, sizeof(t->url), "%s%s%s%s", base, path, query ? "?" : "", query ? query : "");
    return n < 0 || (size_t)n >= sizeof(t->url) ? -1 : 0;
}

int px_target_for(const struct px_target_in *in, const struct ap_tier *tier, struct px_target *t)
{
    memset(t, 0, sizeof(*t));
    t->tier = tier;
    if (tier != NULL && tier->type == AP_TIER_EXTERNAL) {
        t->fmt = AP_FMT_OPENAI;
        t->auth = tier->api_key;
        t->model = tier->model;
        t->max_tokens_limit = tier->max_tokens_limit;
        t->external = 1;
        return outbound_url(t, tier->base_url, "/chat/completions", NULL);
    }
    t->auth = in->upstream_api_key;
    if (tier != NULL) {
        t->fmt = AP_FMT_ANTHROPIC;
        t->model = tier->model;
        t->max_tokens_limit = tier->max_tokens_limit;
    } else {
        t->fmt = in->upstream_openai ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC;
    }
    if (!in->api || t->fmt == in->client_fmt) /* the client's own path and query (e.g. ?beta=true) */
        return outbound_url(t, in->upstream_url, in->raw_path, in->query);
    return outbound_url(t, in->upstream_url, t->fmt == AP_FMT_OPENAI ? "/v1/chat/completions" : "/v1/messages",
                        NULL);
}

/* ---- headers ---- */

static const struct ap_http1_name outbound_dropped[] = {
    /* Hop-by-hop, or framing that is ours to set. */
    AP_HTTP1_NAME("connection"), AP_HTTP1_NAME("keep-alive"), AP_HTTP1_NAME("proxy-connection"),
    AP_HTTP1_NAME("proxy-authorization"), AP_HTTP1_NAME("proxy-authenticate"), AP_HTTP1_NAME("te"),
    AP_HTTP1_NAME("trailer"), AP_HTTP1_NAME("trailers"), AP_HTTP1_NAME("transfer-encoding"),
    AP_HTTP1_NAME("upgrade"), AP_HTTP1_NAME("content-length"), AP_HTTP1_NAME("host"), AP_HTTP1_NAME("expect"),
    /* Credentials are ours to send, encodings ours to choose, ids ours to give. */
    AP_HTTP1_NAME("x-api-key"), AP_HTTP1_NAME("authorization"), AP_HTTP1_NAME("accept-encoding"),
    AP_HTTP1_NAME("x-request-id"), AP_HTTP1_NAME("content-type"), AP_HTTP1_NAME("cookie"),
};

int px_outbound_drop_header(const char *name, const char *connection)
{
    size_t n = strlen(name);
    if (ap_http1_name_in(name, n, outbound_dropped, sizeof(outbound_dropped) / sizeof(outbound_dropped[0])))
        return 1;
    /* Headers the client named in Connection are hop-by-hop too (RFC 9110 7.6.1). */
    if (connection != NULL) {
        for (const char *p = connection; (p = strcasestr(p, name)) != NULL; p += n) {
            int start = p == connection || p[-1] == ',' || p[-1] == ' ' || p[-1] == '\t';
            int end = p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t';
            if (start && end)
                return 1;
        }
    }
    return 0;
}

static int outbound_add(px_outbound_add_fn add, void *arg, const char *name, const char *value)
{
    char line[4096];
    size_t nl = strlen(name), vl = strlen(value);
    if (nl + vl + 3 > sizeof(line))
        return 0; /* an absurd header is dropped rather than truncated */
    memcpy(line, name, nl);
    line[nl] = ':';
    line[nl + 1] = ' ';
    memcpy(line + nl + 2, value, vl + 1);
    return add(arg, line);
}

int px_outbound_headers(const struct px_header_in *in, const struct px_target *t, px_outbound_add_fn add,
                        void *arg)
{
    const char *ct = NULL, *conn = NULL;
    int have_version = 0, rc = 0;
    for (size_t i = 0; i < in->n; i++) {
        if (strcasecmp(in->names[i], "content-type") == 0 && ct == NULL)
            ct = in->values[i];
        else if (strcasecmp(in->names[i], "connection") == 0 && conn == NULL)
            conn = in->values[i];
        else if (strcasecmp(in->names[i], "anthropic-version") == 0)
            have_version = 1;
    }
    if (!t->external) {
        /* Our own upstream: the client's headers (anthropic-version, -beta...) go along. */
        for (size_t i = 0; i < in->n && rc == 0; i++)
            if (!px_outbound_drop_header(in->names[i], conn))
                rc = outbound_add(add, arg, in->names[i], in->values[i]);
        if (t->fmt == AP_FMT_ANTHROPIC && in->client_fmt == AP_FMT_OPENAI && !have_version)
            rc |= outbound_add(add, arg, "anthropic-version", "2023-06-01");
    } else {
        rc |= outbound_add(add, arg, "Accept", in->stream ? "text/event-stream" : "application/json");
        rc |= outbound_add(add, arg, "User-Agent", "api-proxy");
    }
    if (t->auth != NULL) {
        char bearer[1100];
        snprintf(bearer, sizeof(bearer), "Bearer %s", t->auth);
        if (!t->external || t->fmt == AP_FMT_ANTHROPIC)
            rc |= outbound_add(add, arg, "x-api-key", t->auth);
        rc |= outbound_add(add, arg, "Authorization", bearer);
    }
    /* curl would otherwise add "Expect: 100-continue" and a form content type. */
    rc |= outbound_add(add, arg, "Expect", "");
    rc |= outbound_add(add, arg, "Content-Type", in->body_rewritten || ct == NULL ? "application/json" : ct);
    rc |= outbound_add(add, arg, "x-request-id", in->request_id);
    return rc < 0 ? -1 : 0;
}

/* ---- body ---- */

const char *px_outbound_model(const struct px_body_facts *f, const struct px_target *t)
{
    return t->model ? t->model : f->model;
}

/* "claude-opus-4-6" -> "claude": signatures of one family mean nothing to another. */
static size_t outbound_family(const char *model)
{
    return strcspn(model, "-/:_.");
}

static int outbound_same_family(const char *a, const char *b)
{
    size_t n = outbound_family(a);
    return n == outbound_family(b) && strncasecmp(a, b, n) == 0;
}

int px_outbound_needs_tree(const struct px_body_facts *f, const struct px_target *t)
{
    const char *served = px_outbound_model(f, t);
    return t->fmt != f->client_fmt || strcmp(served, f->model) != 0 || !outbound_same_family(served, f->model) ||
           (t->fmt == AP_FMT_OPENAI && f->stream && !f->client_usage) || t->max_tokens_limit > 0;
}

/* Drops reasoning history the target cannot accept: thinking signed by another model family. */
static void outbound_strip_thinking(cJSON *body, enum ap_fmt fmt)
{
    cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(body, "messages")) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role) || strcmp(role->valuestring, "assistant") != 0)
            continue;
        if (fmt == AP_FMT_OPENAI) {
            cJSON_DeleteItemFromObjectCaseSensitive(m, "reasoning_content");
            cJSON_DeleteItemFromObjectCaseSensitive(m, "reasoning_signature");
            continue;
        }
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsArray(content))
            continue;
        for (cJSON *b = content->child, *next; b != NULL; b = next) {
            next = b->next;
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
            if (cJSON_IsString(type) &&
                (strcmp(type->valuestring, "thinking") == 0 || strcmp(type->valuestring, "redacted_thinking") == 0))
                cJSON_Delete(cJSON_DetachItemViaPointer(content, b));
        }
    }
}

/* Every field that limits output, clamped: 1 if one was changed. */
static int outbound_clamp(cJSON *body, long limit)
{
    static const char *const fields[] = {"max_tokens", "max_completion_tokens"};
    int changed = 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(body, fields[i]);
        if (cJSON_IsNumber(v) && v->valuedouble > (double)limit) {
            cJSON_SetNumberValue(v, (double)limit);
            changed = 1;
        }
    }
    return changed;
}

static int outbound_needs_clamp(const cJSON *body, long limit)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens");
    return limit > 0 && ((cJSON_IsNumber(a) && a->valuedouble > (double)limit) ||
                         (cJSON_IsNumber(b) && b->valuedouble > (double)limit));
}

int px_outbound_body(const struct px_body_facts *f, const cJSON *client, const struct px_target *t,
                     char **out, size_t *out_len, const char **err)
{
    const char *served = px_outbound_model(f, t);
    int foreign = !outbound_same_family(served, f->model);
    int rename = strcmp(served, f->model) != 0;
    int want_usage = t->fmt == AP_FMT_OPENAI && f->stream && !f->client_usage;
    cJSON *doc;

    *out = NULL;
    *out_len = 0;
    if (t->fmt != f->client_fmt) {
        struct ap_conv_opts o = {t->model, t->max_tokens_limit, 1};
        doc = f->client_fmt == AP_FMT_ANTHROPIC ? ap_conv_req_a2o(client, &o, err) : ap_conv_req_o2a(client, &o, err);
        if (doc == NULL) {
            if (*err == NULL)
                *err = "request cannot be converted";
            return -1;
        }
    } else {
        if (!want_usage && !rename && !foreign && !outbound_needs_clamp(client, t->max_tokens_limit))
            return 0;
        doc = cJSON_Duplicate(client, 1);
        if (doc == NULL)
            return -2;
        if (rename)
            cJSON_ReplaceItemInObjectCaseSensitive(doc, "model", cJSON_CreateString(served));
        if (t->max_tokens_limit > 0)
            outbound_clamp(doc, t->max_tokens_limit);
        if (want_usage) {
            /* For accounting; the extra chunk is taken out of the client's stream. */
            cJSON_DeleteItemFromObjectCaseSensitive(doc, "stream_options");
            cJSON *so = cJSON_AddObjectToObject(doc, "stream_options");
            cJSON_AddTrueToObject(so, "include_usage");
        }
    }
    if (foreign)
        outbound_strip_thinking(doc, t->fmt);
    *out = ap_json_print_keep(doc);
    cJSON_Delete(doc);
    if (*out == NULL)
        return -2;
    *out_len = strlen(*out);
    return 0;
}
