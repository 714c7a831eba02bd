/*
 * Proxied requests: authenticate, forward to the upstream with curl multi,
 * relay the answer, count usage.
 *
 *   px_relay_handle ─▶ auth (cache / Redis) ─▶ relay_start ─▶ curl
 *        headers ─▶ relay_on_header          (status, headers kept)
 *        body    ─▶ relay_on_write ─┬─ SSE:  chunk to client now (pause curl if the
 *                                   │        client's buffer is full, resume on drain)
 *                                   └─ else: buffer, reply whole at the end
 *        done    ─▶ relay_on_done ─▶ reply / end stream ─▶ relay_finish
 *   client gone mid-stream ─▶ relay_on_client_close ─▶ abort curl ─▶ relay_finish
 *
 * One px_req holds everything about one request and relay_finish frees it,
 * exactly once, after the transfer is over and evhttp has the reply.
 */
#include "px.h"

#include "ap_curl.h"
#include "ap_keys.h"
#include "ap_log.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct px_req {
    struct px_ctx *ctx;                 /* borrowed */
    struct evhttp_request *ereq;        /* borrowed; NULL once handed back to evhttp */
    struct evhttp_connection *evcon;    /* borrowed */
    enum px_route route;
    enum px_fmt fmt;                    /* error format of the endpoint */
    char rid[33];
    char path[256];                     /* for logs: masked, no query */
    const char *method;                 /* static string */
    int64_t t0;                         /* monotonic ms at arrival */
    char key_hash[AP_SHA256_HEX];
    struct px_key_info key;
    char model[AP_MODEL_MAX];           /* requested model, "" if none */
    int upstream_openai;                /* the upstream answers in OpenAI format */

    CURL *easy;                         /* owned */
    struct curl_slist *hdrs;            /* owned */
    int status;                         /* upstream status, 0 before headers */
    struct evkeyvalq resp_headers;      /* owned: upstream headers to relay */
    struct evbuffer *body;              /* owned: buffered (non-SSE) upstream body */
    struct evbuffer *chunk;             /* owned: staging for a streamed chunk */
    struct ap_sse parser;               /* owned: reads usage out of the stream */
    struct ap_usage usage;
    int reply_status;                   /* what the client got */

    unsigned sse:1;                     /* streaming the upstream's text/event-stream */
    unsigned started:1;                 /* streamed reply begun: headers are out */
    unsigned paused:1;                  /* curl paused until the client drains */
    unsigned client_gone:1;
    unsigned in_curl:1;                 /* transfer running */
    unsigned stream_done:1;             /* the upstream ended its stream properly */
    unsigned stream_error:1;            /* the upstream sent an error event */
    unsigned finished:1;
};

static void relay_finish(struct px_req *r);

/* ---- small helpers ---- */

static const char *const relay_hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "host", "expect",
    NULL,
};

static int relay_is_hop(const char *name)
{
    for (int i = 0; relay_hop_by_hop[i] != NULL; i++)
        if (strcasecmp(name, relay_hop_by_hop[i]) == 0)
            return 1;
    return 0;
}

/* Request headers that must not reach the upstream. */
static int relay_drop_request_header(const char *name, const char *conn_tokens)
{
    if (relay_is_hop(name) || strcasecmp(name, "x-api-key") == 0 || strcasecmp(name, "authorization") == 0 ||
        strcasecmp(name, "accept-encoding") == 0 || strcasecmp(name, "x-request-id") == 0)
        return 1;
    /* Headers the client named in Connection are hop-by-hop too (RFC 9110 7.6.1). */
    if (conn_tokens != NULL) {
        size_t n = strlen(name);
        for (const char *p = conn_tokens; (p = strcasestr(p, name)) != NULL; p += n) {
            int start = p == conn_tokens || p[-1] == ',' || p[-1] == ' ';
            int end = p[n] == '\0' || p[n] == ',' || p[n] == ' ';
            if (start && end)
                return 1;
        }
    }
    return 0;
}

static void relay_reply_error(struct px_req *r, int status, const char *msg)
{
    r->reply_status = status;
    evhttp_add_header(evhttp_request_get_output_headers(r->ereq), "x-request-id", r->rid);
    px_reply_error(r->ereq, r->fmt, status, msg);
    r->ereq = NULL;
}

/* ---- SSE usage tap ---- */

static int relay_on_event(void *arg, const char *event, const char *data, size_t len)
{
    struct px_req *r = arg;
    if (r->upstream_openai) {
        if (strcmp(data, "[DONE]") == 0) {
            r->stream_done = 1;
        } else if (memmem(data, len, "\"usage\"", 7) != NULL || memmem(data, len, "\"error\"", 7) != NULL) {
            cJSON *j = cJSON_ParseWithLength(data, len);
            ap_usage_merge_openai(&r->usage, cJSON_GetObjectItemCaseSensitive(j, "usage"));
            if (cJSON_GetObjectItemCaseSensitive(j, "error") != NULL)
                r->stream_error = 1;
            cJSON_Delete(j);
        }
        return 0;
    }
    if (ap_usage_anthropic_event(&r->usage, event, data, len))
        r->stream_done = 1;
    else if (strcmp(event, "error") == 0)
        r->stream_error = 1;
    return 0;
}

/* ---- the streamed reply ---- */

static void relay_copy_headers(struct px_req *r)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    for (struct evkeyval *kv = r->resp_headers.tqh_first; kv != NULL; kv = kv->next.tqe_next)
        evhttp_add_header(out, kv->key, kv->value);
    if (evhttp_find_header(out, "Content-Type") == NULL)
        evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_remove_header(out, "x-request-id");
    evhttp_add_header(out, "x-request-id", r->rid);
}

static void relay_on_client_close(void *arg)
{
    struct px_req *r = arg;
    r->client_gone = 1;
    r->evcon = NULL;
    if (r->in_curl) {
        ap_curl_remove(r->ctx->curl, r->easy);
        r->in_curl = 0;
    }
    /* The request was detached from its dead connection: ending it frees it. */
    if (r->ereq != NULL) {
        evhttp_send_reply_end(r->ereq);
        r->ereq = NULL;
    }
    ap_info(r->rid, "client left mid-stream; upstream transfer aborted");
    relay_finish(r);
}

static void relay_on_drained(struct evhttp_connection *evcon, void *arg)
{
    struct px_req *r = arg;
    (void)evcon;
    if (r->paused && r->in_curl && !r->client_gone) {
        r->paused = 0;
        /* May call relay_on_write before returning, which may pause again. */
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
    }
}

static void relay_start_stream(struct px_req *r)
{
    relay_copy_headers(r);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    if (evhttp_find_header(out, "Cache-Control") == NULL)
        evhttp_add_header(out, "Cache-Control", "no-cache");
    px_conn_watch_close(r->evcon, relay_on_client_close, r);
    r->reply_status = r->status;
    evhttp_send_reply_start(r->ereq, r->status, NULL);
    r->started = 1;
    r->ctx->stats.streams++;
}

static void relay_end_stream(struct px_req *r, const char *error)
{
    if (error != NULL) {
        /* Headers are out: the failure becomes an error event in the client's format. */
        cJSON *doc = px_error_doc(r->fmt, 502, error);
        char *s = cJSON_PrintUnformatted(doc);
        if (r->fmt == PX_FMT_OPENAI) {
            evbuffer_add_printf(r->chunk, "data: %s\n\ndata: [DONE]\n\n", s);
        } else {
            ap_sse_write(r->chunk, "error", s, strlen(s));
        }
        cJSON_free(s);
        cJSON_Delete(doc);
        evhttp_send_reply_chunk(r->ereq, r->chunk);
    }
    px_conn_watch_close(r->evcon, NULL, NULL);
    evhttp_send_reply_end(r->ereq);
    r->ereq = NULL;
    r->ctx->stats.streams--;
}

/* ---- curl callbacks ---- */

static size_t relay_on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct px_req *r = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        r->status = sp ? atoi(sp + 1) : 0;
        evhttp_clear_headers(&r->resp_headers);
        r->sse = 0;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (colon == NULL || colon == buf)
        return len; /* the blank line ending the headers, or junk */
    char name[128], value[2048];
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    if (nl >= sizeof(name) || (size_t)(end - v) >= sizeof(value))
        return len;
    memcpy(name, buf, nl);
    name[nl] = '\0';
    memcpy(value, v, (size_t)(end - v));
    value[end - v] = '\0';
    if (relay_is_hop(name))
        return len;
    if (strcasecmp(name, "content-type") == 0 && strncasecmp(value, "text/event-stream", 17) == 0)
        r->sse = 1;
    evhttp_add_header(&r->resp_headers, name, value);
    return len;
}

static size_t relay_on_write(char *data, size_t size, size_t n, void *arg)
{
    struct px_req *r = arg;
    size_t len = size * n;

    if (r->client_gone)
        return 0;
    if (!(r->sse && r->status >= 200 && r->status < 300)) {
        if ((long)(evbuffer_get_length(r->body) + len) > r->ctx->cfg.max_body)
            return 0; /* too large to buffer: fails the transfer, reported as 502 */
        evbuffer_add(r->body, data, len);
        return len;
    }
    if (!r->started)
        relay_start_stream(r);
    /* Back-pressure: decide before consuming, curl hands the same bytes back on resume. */
    if (px_conn_backlog(r->evcon) > (size_t)r->ctx->cfg.stream_buffer) {
        r->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (ap_sse_feed(&r->parser, data, len, relay_on_event, r) < 0)
        ap_warn(r->rid, "stream event too large to inspect; usage may be incomplete");
    evbuffer_add(r->chunk, data, len);
    evhttp_send_reply_chunk_with_cb(r->ereq, r->chunk, relay_on_drained, r);
    return len;
}

static int relay_failure_status(CURLcode rc, const char **msg)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        *msg = "upstream timed out";
        return 504;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        *msg = "upstream unreachable";
        return 502;
    case CURLE_WRITE_ERROR:
        *msg = "upstream response too large";
        return 502;
    default:
        *msg = "upstream connection failed";
        return 502;
    }
}

static void relay_on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct px_req *r = arg;
    const char *msg = NULL;
    (void)easy;
    r->in_curl = 0;

    if (r->started) {
        if (rc != CURLE_OK) {
            relay_failure_status(rc, &msg);
            ap_warn(r->rid, "upstream stream broke: %s", curl_easy_strerror(rc));
            r->ctx->stats.upstream_errors++;
        } else if (!r->stream_done && !r->stream_error) {
            msg = "upstream stream ended early";
            ap_warn(r->rid, "%s", msg);
        }
        relay_end_stream(r, msg);
        relay_finish(r);
        return;
    }
    if (rc != CURLE_OK || r->status < 100 || r->status > 599) {
        int st = rc != CURLE_OK ? relay_failure_status(rc, &msg) : 502;
        if (rc == CURLE_OK)
            msg = "upstream sent an invalid status";
        ap_warn(r->rid, "upstream request failed: %s (%s)", msg, curl_easy_strerror(rc));
        r->ctx->stats.upstream_errors++;
        relay_reply_error(r, st, msg);
        relay_finish(r);
        return;
    }
    if (r->status >= 200 && r->status < 300) {
        size_t blen = evbuffer_get_length(r->body);
        const char *b = (const char *)evbuffer_pullup(r->body, -1);
        if (r->sse) /* a 2xx stream that never delivered a byte */
            ap_sse_feed(&r->parser, b, blen, relay_on_event, r);
        else if (r->upstream_openai)
            ap_usage_openai_body(&r->usage, b, blen);
        else
            ap_usage_anthropic_body(&r->usage, b, blen);
    }
    relay_copy_headers(r);
    r->reply_status = r->status;
    evhttp_send_reply(r->ereq, r->status, NULL, r->body);
    r->ereq = NULL;
    relay_finish(r);
}

/* ---- starting the transfer ---- */

static int relay_add_header(struct px_req *r, const char *name, const char *value)
{
    char line[4096];
    int n = snprintf(line, sizeof(line), "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof(line))
        return 0; /* an absurd header is dropped rather than truncated */
    struct curl_slist *l = curl_slist_append(r->hdrs, line);
    if (l == NULL)
        return -1;
    r->hdrs = l;
    return 0;
}

static int relay_build_headers(struct px_req *r)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->ereq);
    const char *conn = evhttp_find_header(in, "Connection");
    int has_ct = 0;
    for (struct evkeyval *kv = in->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (relay_drop_request_header(kv->key, conn))
            continue;
        if (strcasecmp(kv->key, "content-type") == 0)
            has_ct = 1;
        if (relay_add_header(r, kv->key, kv->value) < 0)
            return -1;
    }
    const char *key = r->ctx->cfg.upstream_api_key;
    char bearer[1100];
    if (key != NULL) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", key);
        if (relay_add_header(r, "x-api-key", key) < 0 || relay_add_header(r, "Authorization", bearer) < 0)
            return -1;
    }
    /* curl would otherwise add "Expect: 100-continue" and a form content type. */
    struct curl_slist *l = curl_slist_append(r->hdrs, "Expect:");
    if (l == NULL)
        return -1;
    r->hdrs = l;
    if (!has_ct && relay_add_header(r, "Content-Type", "application/json") < 0)
        return -1;
    return relay_add_header(r, "x-request-id", r->rid);
}

static void relay_start(struct px_req *r)
{
    struct px_ctx *ctx = r->ctx;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(r->ereq);
    const char *query = evhttp_uri_get_query(u);
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ereq);
    size_t blen = evbuffer_get_length(in);
    char url[4096];

    int n = snprintf(url, sizeof(url), "%s%s%s%s", ctx->cfg.upstream_url, evhttp_uri_get_path(u),
                     query ? "?" : "", query ? query : "");
    if (n < 0 || (size_t)n >= sizeof(url)) {
        relay_reply_error(r, 414, "request target too long");
        relay_finish(r);
        return;
    }
    r->easy = curl_easy_init();
    if (r->easy == NULL || relay_build_headers(r) < 0) {
        relay_reply_error(r, 500, "out of memory");
        relay_finish(r);
        return;
    }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ctx->cfg.upstream_connect_ms);
    /* An upstream silent for this long is given up on (curl does not count paused time). */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, ctx->cfg.upstream_read_s);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, relay_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, relay_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);

    switch (evhttp_request_get_command(r->ereq)) {
    case EVHTTP_REQ_GET:
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        break;
    case EVHTTP_REQ_HEAD:
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        break;
    case EVHTTP_REQ_POST:
        break;
    case EVHTTP_REQ_PUT:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
        break;
    case EVHTTP_REQ_DELETE:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
        break;
    case EVHTTP_REQ_PATCH:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PATCH");
        break;
    default:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "OPTIONS");
        break;
    }
    if (evhttp_request_get_command(r->ereq) != EVHTTP_REQ_GET &&
        evhttp_request_get_command(r->ereq) != EVHTTP_REQ_HEAD) {
        /* POSTFIELDS does not copy: the body stays in the request's input buffer until we reply. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, blen ? (const char *)evbuffer_pullup(in, -1) : "");
    }
    if (ap_curl_add(ctx->curl, e, relay_on_done, r) < 0) {
        relay_reply_error(r, 500, "cannot start the upstream request");
        relay_finish(r);
        return;
    }
    r->in_curl = 1;
}

/* ---- request intake ---- */

static const char *relay_method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OPTIONS";
    }
}

/* Validates a Messages / Chat Completions body; replies 400 and returns -1 when bad. */
static int relay_check_body(struct px_req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ereq);
    size_t len = evbuffer_get_length(in);
    if (evhttp_request_get_command(r->ereq) != EVHTTP_REQ_POST) {
        relay_reply_error(r, 405, "use POST");
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength((const char *)evbuffer_pullup(in, -1), len);
    const char *err = NULL;
    if (j == NULL)
        err = "request body is not valid JSON";
    else if (!cJSON_IsObject(j))
        err = "request body must be a JSON object";
    else {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "stream");
        if (m == NULL)
            err = "model: field required";
        else if (!cJSON_IsString(m) || m->valuestring[0] == '\0')
            err = "model: must be a non-empty string";
        else if (s != NULL && !cJSON_IsBool(s) && !cJSON_IsNull(s))
            err = "stream: must be a boolean";
        else
            ap_store_model_name(m->valuestring, r->model, sizeof(r->model));
    }
    cJSON_Delete(j);
    if (err != NULL) {
        relay_reply_error(r, 400, err);
        return -1;
    }
    return 0;
}

static void relay_authorized(struct px_req *r)
{
    if (r->key.state == PX_KEY_DISABLED) {
        relay_reply_error(r, 403, "API key disabled");
        relay_finish(r);
        return;
    }
    if (r->key.state != PX_KEY_ENABLED) {
        relay_reply_error(r, 401, "Invalid API key");
        relay_finish(r);
        return;
    }
    relay_start(r);
}

static void relay_on_key(void *arg, int ok, const struct px_key_info *info)
{
    struct px_req *r = arg;
    if (!ok) {
        relay_reply_error(r, 503, "cannot verify the API key right now; try again shortly");
        relay_finish(r);
        return;
    }
    r->key = *info;
    relay_authorized(r);
}

void px_relay_handle(struct px_ctx *ctx, struct evhttp_request *req, enum px_route route)
{
    struct px_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        px_reply_error(req, PX_FMT_ANTHROPIC, 500, "out of memory");
        return;
    }
    r->ctx = ctx;
    r->ereq = req;
    r->evcon = evhttp_request_get_connection(req);
    r->route = route;
    r->fmt = route == PX_ROUTE_CHAT ? PX_FMT_OPENAI : PX_FMT_ANTHROPIC;
    r->upstream_openai = route == PX_ROUTE_CHAT || (route == PX_ROUTE_PASS && ctx->cfg.upstream_openai);
    r->t0 = ap_mono_ms();
    r->key.state = PX_KEY_UNKNOWN;
    r->resp_headers.tqh_first = NULL;
    r->resp_headers.tqh_last = &r->resp_headers.tqh_first;
    ap_sse_init(&r->parser, 0);
    px_request_id(req, r->rid);
    px_log_path(evhttp_request_get_uri(req), r->path, sizeof(r->path));
    r->method = relay_method_name(evhttp_request_get_command(req));
    r->body = evbuffer_new();
    r->chunk = evbuffer_new();
    ctx->stats.requests++;
    ctx->stats.active++;
    if (r->body == NULL || r->chunk == NULL) {
        relay_reply_error(r, 500, "out of memory");
        relay_finish(r);
        return;
    }

    const char *key = px_request_key(req);
    if (key == NULL) {
        relay_reply_error(r, 401, "Missing API key");
        relay_finish(r);
        return;
    }
    ap_sha256_hex(key, strlen(key), r->key_hash);
    if ((route == PX_ROUTE_MESSAGES || route == PX_ROUTE_CHAT) && relay_check_body(r) < 0) {
        relay_finish(r);
        return;
    }
    if (px_keys_lookup(ctx->keys, r->key_hash, &r->key) == 0) {
        relay_authorized(r);
        return;
    }
    if (px_keys_fetch(ctx->keys, r->key_hash, relay_on_key, r) < 0) {
        relay_reply_error(r, 503, "cannot verify the API key right now; try again shortly");
        relay_finish(r);
    }
}

/* ---- the end ---- */

static void relay_log(struct px_req *r)
{
    char fields[1024], model[AP_MODEL_MAX * 2];
    ap_log_json_str(model, sizeof(model), r->model);
    snprintf(fields, sizeof(fields),
             "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"upstream_status\":%d,\"key\":\"%s\","
             "\"model\":\"%s\",\"in\":%lld,\"out\":%lld,\"stream\":%s,\"client_gone\":%s,\"ms\":%lld",
             r->method, r->path, r->reply_status, r->status, r->key.id, model,
             (long long)r->usage.input, (long long)r->usage.output, r->started ? "true" : "false",
             r->client_gone ? "true" : "false", (long long)(ap_mono_ms() - r->t0));
    ap_log_fields(AP_LOG_INFO, r->rid, "request", fields);
}

static void relay_finish(struct px_req *r)
{
    if (r->finished)
        return;
    r->finished = 1;
    if (r->in_curl) {
        ap_curl_remove(r->ctx->curl, r->easy);
        r->in_curl = 0;
    }
    if (r->key.state == PX_KEY_ENABLED && r->reply_status != 0) {
        int ok = r->reply_status >= 200 && r->reply_status < 300;
        px_usage_record(r->ctx->usage, r->key.id, r->model, &r->usage, ok);
    }
    relay_log(r);
    r->ctx->stats.active--;
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    evhttp_clear_headers(&r->resp_headers);
    if (r->body != NULL)
        evbuffer_free(r->body);
    if (r->chunk != NULL)
        evbuffer_free(r->chunk);
    ap_sse_free(&r->parser);
    free(r);
}
