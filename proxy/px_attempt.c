/*
 * One upstream attempt: build the request for the target (converted when the
 * target speaks the other format), run it on curl multi, relay the answer.
 *
 *   attempt_start ─▶ curl ─▶ on_header (status, headers kept)
 *                         ─▶ on_write ─┬─ 2xx SSE: ap_stream (tap or convert) ─▶ client now;
 *                         │            │  curl paused while the client's buffer is full
 *                         │            └─ else: buffered
 *                         ─▶ on_done ──▶ reply (converted if needed) or end the stream
 *   client gone mid-stream ─▶ on_client_close ─▶ abort ─▶ finish
 *
 * When another tier may follow (px_relay_has_next), a stream is held back
 * until its first content: a stream that fails before that (an error event,
 * a dropped connection, an empty 200) is retried on the next tier, and the
 * client never sees the failed one. Error answers that say quota, capacity,
 * credit or rate limit (and 429/503/529) mark the model exhausted on every
 * replica and go to the next tier too.
 */
#include "px_req.h"

#include "px_policy.h"

#include "ap_conv.h"
#include "ap_curl.h"
#include "ap_fallback.h"
#include "ap_log.h"
#include "ap_sse.h"
#include "ap_stream.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Held-back stream bytes past which we commit anyway (an envelope is far smaller). */
#define ATTEMPT_HOLD_MAX (64 * 1024)

static const char *const attempt_hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "host", "expect",
    NULL,
};

static int attempt_is_hop(const char *name)
{
    for (int i = 0; attempt_hop_by_hop[i] != NULL; i++)
        if (strcasecmp(name, attempt_hop_by_hop[i]) == 0)
            return 1;
    return 0;
}

/* Request headers that must not reach the upstream. */
static int attempt_drop_header(const char *name, const char *conn_tokens)
{
    if (attempt_is_hop(name) || strcasecmp(name, "x-api-key") == 0 || strcasecmp(name, "authorization") == 0 ||
        strcasecmp(name, "accept-encoding") == 0 || strcasecmp(name, "x-request-id") == 0 ||
        strcasecmp(name, "content-type") == 0)
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

static int attempt_add_header(struct px_req *r, const char *name, const char *value)
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

static int attempt_build_headers(struct px_req *r)
{
    const struct px_target *t = &r->target;
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->ereq);
    const char *ct = evhttp_find_header(in, "Content-Type");
    int rc = 0;

    if (!t->external) {
        /* Our own upstream: the client's headers (anthropic-version, -beta...) go along. */
        const char *conn = evhttp_find_header(in, "Connection");
        for (struct evkeyval *kv = in->tqh_first; kv != NULL && rc == 0; kv = kv->next.tqe_next)
            if (!attempt_drop_header(kv->key, conn))
                rc = attempt_add_header(r, kv->key, kv->value);
        if (t->fmt == AP_FMT_ANTHROPIC && r->client_fmt == AP_FMT_OPENAI &&
            evhttp_find_header(in, "anthropic-version") == NULL)
            rc |= attempt_add_header(r, "anthropic-version", "2023-06-01");
    } else {
        rc |= attempt_add_header(r, "Accept", r->stream ? "text/event-stream" : "application/json");
        rc |= attempt_add_header(r, "User-Agent", "api-proxy");
    }
    if (t->auth != NULL) {
        char bearer[1100];
        snprintf(bearer, sizeof(bearer), "Bearer %s", t->auth);
        if (!t->external || t->fmt == AP_FMT_ANTHROPIC)
            rc |= attempt_add_header(r, "x-api-key", t->auth);
        rc |= attempt_add_header(r, "Authorization", bearer);
    }
    /* curl would otherwise add "Expect: 100-continue" and a form content type. */
    rc |= attempt_add_header(r, "Expect", "");
    rc |= attempt_add_header(r, "Content-Type", r->send_body || ct == NULL ? "application/json" : ct);
    rc |= attempt_add_header(r, "x-request-id", r->rid);
    return rc < 0 ? -1 : 0;
}

/* "claude-opus-4-6" -> "claude": signatures of one family mean nothing to another. */
static size_t attempt_family(const char *model)
{
    return strcspn(model, "-/:_.");
}

static int attempt_same_family(const char *a, const char *b)
{
    size_t n = attempt_family(a);
    return n == attempt_family(b) && strncasecmp(a, b, n) == 0;
}

/* Drops reasoning history the target cannot accept: thinking signed by another model family. */
static void attempt_strip_thinking(cJSON *body, enum ap_fmt fmt)
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
        for (int i = cJSON_GetArraySize(content) - 1; i >= 0; i--) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(content, i), "type");
            if (cJSON_IsString(type) &&
                (strcmp(type->valuestring, "thinking") == 0 || strcmp(type->valuestring, "redacted_thinking") == 0))
                cJSON_DeleteItemFromArray(content, i);
        }
    }
}

/*
 * The body for the target: the client's bytes untouched when nothing must
 * change, else the client's JSON edited (model, usage request, token limit)
 * or converted to the other format. Returns -1 after replying 400.
 */
static int attempt_build_body(struct px_req *r)
{
    const struct px_target *t = &r->target;
    cJSON *out = NULL;
    const char *err = NULL;

    snprintf(r->served_model, sizeof(r->served_model), "%s", t->model ? t->model : r->model);
    if (!r->api)
        return 0; /* pass-through route */
    int foreign = !attempt_same_family(r->served_model, r->model);
    int rename = t->model != NULL && strcmp(t->model, r->model) != 0;
    int want_usage = t->fmt == AP_FMT_OPENAI && r->stream && !r->client_usage;
    /* The tree is built only when something must change. */
    if (t->fmt == r->client_fmt && !rename && !want_usage && !foreign && t->max_tokens_limit <= 0)
        return 0;
    if (px_req_json(r) == NULL) {
        px_relay_reply_error(r, 400, "request body is not valid JSON");
        return -1;
    }
    if (t->fmt != r->client_fmt) {
        struct ap_conv_opts o = {t->model, t->max_tokens_limit, 1};
        out = r->client_fmt == AP_FMT_ANTHROPIC ? ap_conv_req_a2o(r->json, &o, &err)
                                                 : ap_conv_req_o2a(r->json, &o, &err);
        if (out == NULL) {
            px_relay_reply_error(r, 400, err ? err : "request cannot be converted");
            return -1;
        }
    } else {
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(r->json, "max_tokens");
        int clamp = t->max_tokens_limit > 0 && cJSON_IsNumber(mt) && mt->valuedouble > t->max_tokens_limit;
        if (!want_usage && !clamp && !rename && !foreign)
            return 0;
        out = cJSON_Duplicate(r->json, 1);
        if (out == NULL)
            goto oom;
        if (rename)
            cJSON_ReplaceItemInObjectCaseSensitive(out, "model", cJSON_CreateString(t->model));
        if (clamp)
            cJSON_ReplaceItemInObjectCaseSensitive(out, "max_tokens", cJSON_CreateNumber((double)t->max_tokens_limit));
        if (want_usage) {
            /* For accounting; the extra chunk is taken out of the client's stream. */
            cJSON_DeleteItemFromObjectCaseSensitive(out, "stream_options");
            cJSON *so = cJSON_AddObjectToObject(out, "stream_options");
            cJSON_AddTrueToObject(so, "include_usage");
        }
    }
    if (foreign)
        attempt_strip_thinking(out, t->fmt);
    r->send_body = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    if (r->send_body == NULL)
        goto oom;
    r->send_len = strlen(r->send_body);
    return 0;
oom:
    px_relay_reply_error(r, 500, "out of memory");
    return -1;
}

/* ---- relaying the answer ---- */

static void attempt_copy_headers(struct px_req *r, int converted)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    for (struct evkeyval *kv = r->resp_headers.tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (converted && (strcasecmp(kv->key, "content-type") == 0 || strcasecmp(kv->key, "content-encoding") == 0))
            continue;
        evhttp_add_header(out, kv->key, kv->value);
    }
    if (evhttp_find_header(out, "Content-Type") == NULL)
        evhttp_add_header(out, "Content-Type", r->is_sse ? "text/event-stream" : "application/json");
    evhttp_remove_header(out, "x-request-id");
    evhttp_add_header(out, "x-request-id", r->rid);
    /* policy: the key's own x-ratelimit-* replace the upstream's */
    struct ap_header rl[4];
    for (size_t i = 0, n = px_policy_headers(r->adm, rl); i < n; i++) {
        evhttp_remove_header(out, rl[i].name);
        evhttp_add_header(out, rl[i].name, rl[i].value);
    }
    if (r->api) {
        const struct ap_tier *t = r->target.tier;
        evhttp_add_header(out, "x-api-proxy-model", r->served_model);
        evhttp_add_header(out, "x-api-proxy-tier", t ? t->name : "upstream");
    }
}

static void attempt_on_client_close(void *arg)
{
    struct px_req *r = arg;
    r->client_gone = 1;
    r->evcon = NULL;
    px_attempt_abort(r);
    /* The request was detached from its dead connection: ending it frees it. */
    if (r->ereq != NULL) {
        evhttp_send_reply_end(r->ereq);
        r->ereq = NULL;
        if (!r->waiting)
            r->ctx->stats.streams--;
    }
    ap_info(r->rid, "client left mid-stream; upstream transfer aborted");
    px_relay_finish(r);
}

static void attempt_on_drained(struct evhttp_connection *evcon, void *arg)
{
    struct px_req *r = arg;
    (void)evcon;
    if (r->paused && r->in_curl && !r->client_gone) {
        r->paused = 0;
        /* May call attempt_on_write before returning, which may pause again. */
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
    }
}

static void attempt_start_stream(struct px_req *r)
{
    attempt_copy_headers(r, r->target.fmt != r->client_fmt);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    if (evhttp_find_header(out, "Cache-Control") == NULL)
        evhttp_add_header(out, "Cache-Control", "no-cache");
    px_conn_watch_close(r->evcon, attempt_on_client_close, r);
    r->reply_status = r->status;
    evhttp_send_reply_start(r->ereq, r->status, NULL);
    r->started = 1;
    r->ctx->stats.streams++;
}

static void attempt_send_chunk(struct px_req *r)
{
    if (evbuffer_get_length(r->chunk) > 0)
        evhttp_send_reply_chunk_with_cb(r->ereq, r->chunk, attempt_on_drained, r);
}

/* The stream's last bytes (the chunked terminator): the client sees the end. */
static void attempt_deliver_stream_end(struct px_req *r)
{
    px_conn_watch_close(r->evcon, NULL, NULL);
    evhttp_send_reply_end(r->ereq);
    r->ereq = NULL;
}

/* Ends the client's stream and the request. */
static void attempt_end_stream(struct px_req *r, int upstream_ok)
{
    ap_stream_end(r->sse, upstream_ok, r->chunk);
    attempt_send_chunk(r);
    ap_stream_usage(r->sse, &r->usage);
    r->ctx->stats.streams--;
    px_relay_complete(r, attempt_deliver_stream_end);
}

static void attempt_deliver_body(struct px_req *r)
{
    evhttp_send_reply(r->ereq, r->reply_status, NULL, r->body);
    r->ereq = NULL;
}

/* ---- curl callbacks ---- */

/* Any sign of life from the upstream restarts its silence limit. */
static void attempt_alive(struct px_req *r)
{
    struct timeval tv = {r->ctx->cfg.upstream_read_s, 0};
    evtimer_add(r->idle, &tv);
}

static void attempt_on_done(CURL *easy, CURLcode rc, void *arg);

/*
 * UPSTREAM_READ_TIMEOUT_SECONDS of silence. Our own timer, because curl's
 * low-speed check averages over a window and fires seconds late. A transfer
 * we paused for a slow client is not the upstream's silence.
 */
static void attempt_on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct px_req *r = arg;
    (void)fd;
    (void)what;
    if (!r->in_curl)
        return;
    if (r->paused) {
        attempt_alive(r);
        return;
    }
    ap_curl_remove(r->ctx->curl, r->easy);
    attempt_on_done(r->easy, CURLE_OPERATION_TIMEDOUT, r);
}

static size_t attempt_on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct px_req *r = arg;
    size_t len = size * n;
    attempt_alive(r);
    if (len <= 2 && r->status >= 200)
        r->t_headers = ap_mono_ms(); /* the blank line after the final response's headers */
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        r->status = sp ? atoi(sp + 1) : 0;
        evhttp_clear_headers(&r->resp_headers);
        r->is_sse = 0;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (colon == NULL || colon == buf)
        return len; /* the blank line ending the headers */
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
    if (attempt_is_hop(name))
        return len;
    if (strcasecmp(name, "content-type") == 0 && strncasecmp(value, "text/event-stream", 17) == 0)
        r->is_sse = 1;
    evhttp_add_header(&r->resp_headers, name, value);
    return len;
}

static size_t attempt_on_write(char *data, size_t size, size_t n, void *arg)
{
    struct px_req *r = arg;
    size_t len = size * n;

    if (r->client_gone)
        return 0;
    attempt_alive(r);
    if (!(r->is_sse && r->status >= 200 && r->status < 300)) {
        if ((long)(evbuffer_get_length(r->body) + len) > r->ctx->cfg.max_body)
            return 0; /* too large to buffer: fails the transfer, reported as 502 */
        evbuffer_add(r->body, data, len);
        return len;
    }
    if (r->sse == NULL) {
        struct ap_stream_opts o = {r->target.fmt, r->client_fmt, NULL, r->client_usage};
        r->sse = ap_stream_new(&o);
        if (r->sse == NULL)
            return 0;
        if (!r->hold)
            attempt_start_stream(r);
    }
    /* Back-pressure: decide before consuming, curl hands the same bytes back on resume. */
    if (r->started && px_conn_backlog(r->evcon) > (size_t)r->ctx->cfg.stream_buffer) {
        r->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (ap_stream_feed(r->sse, data, len, r->chunk) < 0)
        ap_warn(r->rid, "upstream stream is not valid SSE; ending it");
    if (!r->started) {
        if (ap_stream_failed(r->sse) && !ap_stream_content_started(r->sse)) {
            r->retry = 1;
            return 0; /* aborts the transfer; attempt_on_done moves on */
        }
        if (!ap_stream_content_started(r->sse) && !ap_stream_done(r->sse) &&
            evbuffer_get_length(r->chunk) < ATTEMPT_HOLD_MAX)
            return len; /* still only the envelope: keep it */
        attempt_start_stream(r);
    }
    attempt_send_chunk(r);
    return len;
}

static int attempt_failure_status(CURLcode rc, const char **msg)
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

/* A complete non-stream answer: relayed as is, or converted to the client's format; ends the request. */
static void attempt_reply_buffered(struct px_req *r)
{
    size_t blen = evbuffer_get_length(r->body);
    const char *b = (const char *)evbuffer_pullup(r->body, -1);
    int ok = r->status >= 200 && r->status < 300;
    int convert = r->target.fmt != r->client_fmt;

    if (ok && r->is_sse) {
        /* A 2xx stream that never delivered a byte; ap_stream gives it its error ending. */
        struct ap_stream_opts o = {r->target.fmt, r->client_fmt, NULL, r->client_usage};
        r->sse = ap_stream_new(&o);
        if (r->sse == NULL) {
            px_relay_reply_error(r, 500, "out of memory");
            px_relay_finish(r);
            return;
        }
        attempt_start_stream(r);
        ap_stream_feed(r->sse, b, blen, r->chunk);
        attempt_end_stream(r, 1);
        return;
    }
    if (ok && !r->api) { /* other routes; Messages / Chat answers were read by attempt_body_is_answer */
        if (r->target.fmt == AP_FMT_OPENAI)
            ap_usage_openai_body(&r->usage, b, blen);
        else
            ap_usage_anthropic_body(&r->usage, b, blen);
    }
    if (!convert) {
        attempt_copy_headers(r, 0);
        r->reply_status = r->status;
        px_relay_complete(r, attempt_deliver_body);
        return;
    }
    cJSON *doc;
    if (ok) {
        cJSON *up = cJSON_ParseWithLength(b, blen);
        doc = r->client_fmt == AP_FMT_ANTHROPIC ? ap_conv_resp_o2a(up, NULL) : ap_conv_resp_a2o(up, NULL);
        cJSON_Delete(up);
        if (doc == NULL) {
            ap_warn(r->rid, "upstream answered %d with a body that is not a %s response", r->status,
                    r->target.fmt == AP_FMT_OPENAI ? "chat completion" : "message");
            px_relay_reply_error(r, 502, "upstream sent an invalid response");
            px_relay_finish(r);
            return;
        }
    } else {
        doc = ap_conv_error(r->client_fmt, r->status, b, blen);
    }
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (text == NULL) {
        px_relay_reply_error(r, 500, "out of memory");
        px_relay_finish(r);
        return;
    }
    evbuffer_drain(r->body, evbuffer_get_length(r->body));
    evbuffer_add(r->body, text, strlen(text));
    cJSON_free(text);
    attempt_copy_headers(r, 1);
    evhttp_remove_header(evhttp_request_get_output_headers(r->ereq), "Content-Type");
    evhttp_add_header(evhttp_request_get_output_headers(r->ereq), "Content-Type", "application/json");
    r->reply_status = r->status;
    px_relay_complete(r, attempt_deliver_body);
}

/* A failure another tier may not share: refused or broken connections, garbage. */
static int attempt_transport_retryable(CURLcode rc)
{
    /* Garbage instead of HTTP is "unsupported protocol" to curl (an HTTP/0.9 reply). */
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
           rc == CURLE_GOT_NOTHING || rc == CURLE_WEIRD_SERVER_REPLY || rc == CURLE_PARTIAL_FILE ||
           rc == CURLE_UNSUPPORTED_PROTOCOL;
}

/*
 * 1 when a 2xx body of a Messages / Chat Completions call is an answer of the
 * target's format; its usage is taken on the way (one parse for both).
 */
static int attempt_body_is_answer(struct px_req *r)
{
    size_t blen = evbuffer_get_length(r->body);
    cJSON *j = blen ? cJSON_ParseWithLength((const char *)evbuffer_pullup(r->body, -1), blen) : NULL;
    int openai = r->target.fmt == AP_FMT_OPENAI;
    int ok = cJSON_IsObject(j) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, openai ? "choices" : "content"));
    if (ok) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
        if (openai)
            ap_usage_merge_openai(&r->usage, u);
        else
            ap_usage_merge_anthropic(&r->usage, u);
    }
    cJSON_Delete(j);
    return ok;
}

/* Reactive fallback on a complete error answer: 1 if the next tier took over. */
static int attempt_reactive(struct px_req *r)
{
    size_t blen = evbuffer_get_length(r->body);
    const char *b = (const char *)evbuffer_pullup(r->body, -1);
    int hot = r->status == 429 || r->status == 503 || r->status == 529 || px_reactive_text(b ? b : "", blen);
    if (!hot || !px_relay_has_next(r))
        return 0;
    char why[64];
    snprintf(why, sizeof(why), "HTTP %d", r->status);
    if (r->target.tier != NULL)
        px_fallback_mark(r->ctx->fb, r->target.tier, why);
    return px_relay_next(r, why);
}

/* A held stream ended before anything reached the client: retry, or give the client what there is. */
static void attempt_held_done(struct px_req *r, CURLcode rc)
{
    int clean = rc == CURLE_OK && ap_stream_done(r->sse);
    if (!clean && px_relay_has_next(r)) {
        const char *err = ap_stream_failed(r->sse) ? ap_stream_error(r->sse) : "";
        if (err[0] != '\0' && r->target.tier != NULL && px_reactive_text(err, strlen(err)))
            px_fallback_mark(r->ctx->fb, r->target.tier, err);
        if (px_relay_next(r, ap_stream_failed(r->sse) ? "error before content" : "stream ended before content"))
            return;
    }
    attempt_start_stream(r);
    attempt_end_stream(r, rc == CURLE_OK || r->retry);
}

static void attempt_on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct px_req *r = arg;
    const char *msg = NULL;
    (void)easy;
    r->in_curl = 0;
    evtimer_del(r->idle);

    if (r->started) {
        if (rc != CURLE_OK) {
            ap_warn(r->rid, "upstream stream broke: %s", curl_easy_strerror(rc));
            r->ctx->stats.upstream_errors++;
        }
        attempt_end_stream(r, rc == CURLE_OK);
        return;
    }
    if (r->sse != NULL) {
        attempt_held_done(r, rc);
        return;
    }
    if (rc != CURLE_OK && attempt_transport_retryable(rc) && px_relay_has_next(r) &&
        px_relay_next(r, curl_easy_strerror(rc)))
        return;
    if (rc == CURLE_OK && r->is_sse && r->status >= 200 && r->status < 300 &&
        evbuffer_get_length(r->body) == 0 && px_relay_has_next(r) && px_relay_next(r, "empty stream"))
        return;
    if (rc == CURLE_OK && (r->status < 200 || r->status >= 300) && attempt_reactive(r))
        return;
    if (rc == CURLE_OK && r->status >= 200 && r->status < 300 && r->api && !r->is_sse &&
        !attempt_body_is_answer(r)) {
        /* A 2xx that is not a message or completion: broken, maybe only on this tier. */
        if (px_relay_has_next(r) && px_relay_next(r, "invalid answer"))
            return;
        ap_warn(r->rid, "upstream answered %d with a body that is not a response", r->status);
        r->ctx->stats.upstream_errors++;
        px_relay_reply_error(r, 502, "upstream sent an invalid response");
        px_relay_finish(r);
        return;
    }
    if (rc != CURLE_OK || r->status < 100 || r->status > 599) {
        int st = rc != CURLE_OK ? attempt_failure_status(rc, &msg) : 502;
        if (rc == CURLE_OK)
            msg = "upstream sent an invalid status";
        ap_warn(r->rid, "upstream request failed: %s (%s)", msg, curl_easy_strerror(rc));
        r->ctx->stats.upstream_errors++;
        px_relay_reply_error(r, st, msg);
        px_relay_finish(r);
        return;
    }
    attempt_reply_buffered(r); /* replies and finishes */
}

/* ---- lifecycle ---- */

static CURL *attempt_easy_get(struct px_ctx *ctx)
{
    return ctx->easy_pool_n > 0 ? ctx->easy_pool[--ctx->easy_pool_n] : curl_easy_init();
}

/* Back to the pool with its options cleared (live connections stay in the multi handle's cache). */
static void attempt_easy_put(struct px_ctx *ctx, CURL *e)
{
    if (e == NULL)
        return;
    if (ctx->easy_pool_n < (int)(sizeof(ctx->easy_pool) / sizeof(ctx->easy_pool[0]))) {
        curl_easy_reset(e);
        ctx->easy_pool[ctx->easy_pool_n++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

void px_attempt_pool_free(struct px_ctx *ctx)
{
    while (ctx->easy_pool_n > 0)
        curl_easy_cleanup(ctx->easy_pool[--ctx->easy_pool_n]);
}

void px_attempt_start(struct px_req *r)
{
    struct px_ctx *ctx = r->ctx;
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ereq);

    if (attempt_build_body(r) < 0) {
        px_relay_finish(r);
        return;
    }
    r->easy = attempt_easy_get(ctx);
    if (r->easy == NULL || attempt_build_headers(r) < 0) {
        px_relay_reply_error(r, 500, "out of memory");
        px_relay_finish(r);
        return;
    }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->target.url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ctx->cfg.upstream_connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, attempt_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, attempt_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);

    enum evhttp_cmd_type m = evhttp_request_get_command(r->ereq);
    static const struct { enum evhttp_cmd_type m; const char *name; } custom[] = {
        {EVHTTP_REQ_PUT, "PUT"}, {EVHTTP_REQ_DELETE, "DELETE"}, {EVHTTP_REQ_PATCH, "PATCH"},
        {EVHTTP_REQ_OPTIONS, "OPTIONS"},
    };
    if (m == EVHTTP_REQ_GET) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (m == EVHTTP_REQ_HEAD) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        for (size_t i = 0; i < sizeof(custom) / sizeof(custom[0]); i++)
            if (custom[i].m == m)
                curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, custom[i].name);
        /* POSTFIELDS does not copy: the body stays in the request (or send_body) until we reply. */
        size_t blen = r->send_body ? r->send_len : evbuffer_get_length(in);
        const char *b = r->send_body ? r->send_body : blen ? (const char *)evbuffer_pullup(in, -1) : "";
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, b);
    }
    r->t_sent = ap_mono_ms();
    r->t_headers = 0;
    if (r->idle == NULL && (r->idle = evtimer_new(ctx->base, attempt_on_idle, r)) == NULL) {
        px_relay_reply_error(r, 500, "out of memory");
        px_relay_finish(r);
        return;
    }
    attempt_alive(r);
    if (ap_curl_add(ctx->curl, e, attempt_on_done, r) < 0) {
        px_relay_reply_error(r, 500, "cannot start the upstream request");
        px_relay_finish(r);
        return;
    }
    r->in_curl = 1;
}

void px_attempt_abort(struct px_req *r)
{
    if (r->idle != NULL)
        evtimer_del(r->idle);
    if (r->in_curl) {
        ap_curl_remove(r->ctx->curl, r->easy);
        r->in_curl = 0;
    }
    if (r->sse != NULL)
        ap_stream_usage(r->sse, &r->usage);
}

void px_attempt_reset(struct px_req *r)
{
    px_attempt_abort(r);
    attempt_easy_put(r->ctx, r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    evhttp_clear_headers(&r->resp_headers);
    if (r->body != NULL)
        evbuffer_drain(r->body, evbuffer_get_length(r->body));
    if (r->chunk != NULL)
        evbuffer_drain(r->chunk, evbuffer_get_length(r->chunk));
    ap_stream_free(r->sse);
    r->sse = NULL;
    cJSON_free(r->send_body);
    r->send_body = NULL;
    r->send_len = 0;
    r->status = 0;
    r->is_sse = 0;
    r->paused = 0;
    r->retry = 0;
    r->usage = (struct ap_usage){0};
}
