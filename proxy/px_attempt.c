/*
 * One upstream attempt: the outbound request (decided by px_outbound), its
 * transfer on curl multi, and the relay of its answer.
 *
 *   px_attempt_start ─▶ curl ─▶ on_header (status, headers kept)
 *                            ─▶ on_write ─┬─ 2xx SSE: ap_stream (tap or convert) ─▶ client now;
 *                            │            │  curl paused while the client's buffer is full
 *                            │            └─ else: buffered
 *                            ─▶ on_done ──┬─ streamed: end the stream ─▶ ops->on_stream_end
 *                                         └─ else: one outcome ─▶ ops->on_outcome
 *
 * When another tier may follow, a stream is held back until its first
 * content: a stream that fails before that is reported as an outcome like
 * any error, and the client never sees it. The final event of a stream
 * (message_stop, [DONE]) and any error ending are held in the request's tail
 * until the owner has made the usage durable (see px_request.c).
 */
#include "px_attempt.h"

#include "ap_conv.h"
#include "ap_curl.h"
#include "ap_fallback.h"
#include "ap_http1.h"
#include "ap_log.h"
#include "ap_sse.h"
#include "ap_stream.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Held-back stream bytes past which we commit anyway (an envelope is far smaller). */
#define ATTEMPT_HOLD_MAX (64 * 1024)

struct px_attempt {
    struct px_attempt_spec s;           /* copy; its pointers are borrowed from the owner */
    struct px_ctx *ctx;                 /* borrowed (s.ctx) */
    CURL *easy;                         /* owned (back to the pool when done) */
    struct curl_slist *hdrs;            /* owned */
    int status;                         /* upstream status, 0 before headers */
    char *rh;                           /* owned: upstream headers to relay, "name\0value\0"... */
    size_t rh_len, rh_cap;
    struct evbuffer *body;              /* owned: buffered (non-stream) answer */
    struct evbuffer *chunk;             /* owned: client bytes on their way */
    struct ap_stream *sse;              /* owned: set once a 2xx stream began */
    struct event *idle;                 /* owned: the upstream's silence limit */
    unsigned is_sse:1;                  /* the upstream answered text/event-stream */
    unsigned in_curl:1;                 /* transfer running */
    unsigned paused:1;                  /* curl paused until the client drains */
    unsigned hold:1;                    /* keep the stream from the client until content */
    unsigned started:1;                 /* the stream reached the client: headers are out */
    unsigned retry:1;                   /* the held stream failed before content */
    unsigned transfer_ok:1;             /* curl finished cleanly */
    unsigned final_held:1;              /* the stream's end was seen: its bytes go to the tail */
    unsigned ended:1;                   /* the stream's end was reported */
    int64_t t_sent, t_headers;          /* monotonic ms */
};

static const char *const attempt_hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length", "date", NULL,
};

static int attempt_is_hop(const char *name)
{
    for (int i = 0; attempt_hop_by_hop[i] != NULL; i++)
        if (strcasecmp(name, attempt_hop_by_hop[i]) == 0)
            return 1;
    return 0;
}

/* ---- relaying the answer ---- */

static void attempt_copy_headers(struct px_attempt *a, int converted)
{
    struct px_hreq *h = a->s.hreq;
    for (size_t i = 0; i < a->rh_len;) {
        const char *name = a->rh + i;
        const char *value = name + strlen(name) + 1;
        i = (size_t)(value - a->rh) + strlen(value) + 1;
        if (strcasecmp(name, "x-request-id") == 0 ||
            (converted && (strcasecmp(name, "content-type") == 0 || strcasecmp(name, "content-encoding") == 0)))
            continue;
        px_hreq_add_header(h, name, value);
    }
    if (!px_hreq_has_reply_header(h, "content-type"))
        px_hreq_add_header(h, "Content-Type", a->is_sse ? "text/event-stream" : "application/json");
    px_hreq_add_header(h, "x-request-id", a->s.rid);
    if (a->s.api) {
        px_hreq_add_header(h, "x-api-proxy-model", a->s.served_model);
        px_hreq_add_header(h, "x-api-proxy-tier", a->s.target.tier ? a->s.target.tier->name : "upstream");
    }
}

static void attempt_on_drained(void *arg)
{
    struct px_attempt *a = arg;
    if (a->paused && a->in_curl) {
        a->paused = 0;
        /* May call attempt_on_write before returning, which may pause again. */
        curl_easy_pause(a->easy, CURLPAUSE_CONT);
    }
}

static void attempt_start_stream(struct px_attempt *a)
{
    struct px_hreq *h = a->s.hreq;
    attempt_copy_headers(a, a->s.target.fmt != a->s.client_fmt);
    if (!px_hreq_has_reply_header(h, "cache-control"))
        px_hreq_add_header(h, "Cache-Control", "no-cache");
    px_hreq_on_drain(h, attempt_on_drained, a);
    px_hreq_start(h, a->status);
    a->started = 1;
    a->ctx->stats.streams++;
    a->s.ops->on_stream_start(a->s.owner, a->status);
}

static struct evbuffer *attempt_tail(struct px_attempt *a)
{
    return a->s.tail;
}

/*
 * Sends the client bytes produced so far, except the stream's end: once the
 * upstream's final event was seen, that event (and anything after it) is
 * held in the request's tail until the usage is durable.
 */
static void attempt_relay(struct px_attempt *a, int end)
{
    size_t len = evbuffer_get_length(a->chunk);
    struct evbuffer *tail = NULL;
    if (len == 0)
        return;
    if ((a->final_held || end || ap_stream_done(a->sse)) && (tail = attempt_tail(a)) != NULL) {
        if (!a->final_held) {
            const char *p = (const char *)evbuffer_pullup(a->chunk, -1);
            size_t keep = ap_sse_last_event(p, len);
            px_hreq_chunk(a->s.hreq, p, keep);
            evbuffer_drain(a->chunk, keep);
            a->final_held = 1;
        }
        evbuffer_add_buffer(tail, a->chunk);
        return;
    }
    px_hreq_chunk_buf(a->s.hreq, a->chunk);
}

/* The stream that reached the client ended: its last event (or error ending) waits in the tail. */
static void attempt_end_stream(struct px_attempt *a, int upstream_ok)
{
    ap_stream_end(a->sse, upstream_ok, a->chunk);
    attempt_relay(a, 1);
    ap_stream_usage(a->sse, a->s.usage);
    a->ctx->stats.streams--;
    a->ended = 1;
    px_hreq_on_drain(a->s.hreq, NULL, NULL);
    a->s.ops->on_stream_end(a->s.owner);
}

/* ---- curl callbacks ---- */

/* Any sign of life from the upstream restarts its silence limit. */
static void attempt_alive(struct px_attempt *a)
{
    struct timeval tv = {a->ctx->cfg.upstream_read_s, 0};
    evtimer_add(a->idle, &tv);
}

static void attempt_on_done(CURL *easy, CURLcode rc, void *arg);

/*
 * UPSTREAM_READ_TIMEOUT_SECONDS of silence. Our own timer, because curl's
 * low-speed check averages over a window and fires seconds late. A transfer
 * we paused for a slow client is not the upstream's silence.
 */
static void attempt_on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct px_attempt *a = arg;
    (void)fd;
    (void)what;
    if (!a->in_curl)
        return;
    if (a->paused) {
        attempt_alive(a);
        return;
    }
    ap_curl_remove(a->ctx->curl, a->easy);
    attempt_on_done(a->easy, CURLE_OPERATION_TIMEDOUT, a);
}

static int attempt_keep_header(struct px_attempt *a, const char *name, size_t nl, const char *value, size_t vl)
{
    size_t need = a->rh_len + nl + vl + 2;
    if (need > a->rh_cap) {
        size_t cap = a->rh_cap ? a->rh_cap * 2 : 1024;
        while (cap < need)
            cap *= 2;
        char *p = realloc(a->rh, cap);
        if (p == NULL)
            return -1;
        a->rh = p;
        a->rh_cap = cap;
    }
    memcpy(a->rh + a->rh_len, name, nl);
    a->rh[a->rh_len + nl] = '\0';
    memcpy(a->rh + a->rh_len + nl + 1, value, vl);
    a->rh[a->rh_len + nl + 1 + vl] = '\0';
    a->rh_len = need;
    return 0;
}

static size_t attempt_on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct px_attempt *a = arg;
    size_t len = size * n;
    attempt_alive(a);
    if (len <= 2 && a->status >= 200)
        a->t_headers = ap_mono_ms(); /* the blank line after the final response's headers */
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        a->status = sp ? atoi(sp + 1) : 0;
        a->rh_len = 0;
        a->is_sse = 0;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (colon == NULL || colon == buf)
        return len; /* the blank line ending the headers */
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    char name[128];
    if (nl >= sizeof(name) || end - v > 8192)
        return len;
    memcpy(name, buf, nl);
    name[nl] = '\0';
    if (attempt_is_hop(name))
        return len;
    if (strcasecmp(name, "content-type") == 0 && end - v >= 17 && strncasecmp(v, "text/event-stream", 17) == 0)
        a->is_sse = 1;
    return attempt_keep_header(a, name, nl, v, (size_t)(end - v)) < 0 ? 0 : len;
}

static size_t attempt_on_write(char *data, size_t size, size_t n, void *arg)
{
    struct px_attempt *a = arg;
    size_t len = size * n;

    attempt_alive(a);
    if (!(a->is_sse && a->status >= 200 && a->status < 300)) {
        if ((long)(evbuffer_get_length(a->body) + len) > a->ctx->cfg.max_body)
            return 0; /* too large to buffer: fails the transfer, reported as 502 */
        evbuffer_add(a->body, data, len);
        return len;
    }
    if (a->sse == NULL) {
        struct ap_stream_opts o = {a->s.target.fmt, a->s.client_fmt, NULL, a->s.client_usage};
        a->sse = ap_stream_new(&o);
        if (a->sse == NULL)
            return 0;
        if (!a->s.hold)
            attempt_start_stream(a);
    }
    /* Back-pressure: decide before consuming, curl hands the same bytes back on resume. */
    if (a->started && px_hreq_backlog(a->s.hreq) > (size_t)a->ctx->cfg.stream_buffer) {
        a->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (a->started && evbuffer_get_length(a->chunk) == 0 && !a->final_held && ap_stream_passthrough(a->sse)) {
        /* The usual case: the client gets these very bytes; tap them and send them, no copy. */
        if (ap_stream_tap(a->sse, data, len) < 0)
            ap_warn(a->s.rid, "upstream stream is not valid SSE; ending it");
        size_t keep = len;
        if (ap_stream_done(a->sse)) {
            struct evbuffer *tail = attempt_tail(a);
            if (tail != NULL) {
                keep = ap_sse_last_event(data, len);
                evbuffer_add(tail, data + keep, len - keep);
                a->final_held = 1;
            }
        }
        px_hreq_chunk(a->s.hreq, data, keep);
        return len;
    }
    if (ap_stream_feed(a->sse, data, len, a->chunk) < 0)
        ap_warn(a->s.rid, "upstream stream is not valid SSE; ending it");
    if (!a->started) {
        if (ap_stream_failed(a->sse) && !ap_stream_content_started(a->sse)) {
            a->retry = 1;
            return 0; /* aborts the transfer; on_done reports the failed stream */
        }
        if (!ap_stream_content_started(a->sse) && !ap_stream_done(a->sse) &&
            evbuffer_get_length(a->chunk) < ATTEMPT_HOLD_MAX)
            return len; /* still only the envelope: keep it */
        attempt_start_stream(a);
    }
    attempt_relay(a, 0);
    return len;
}

static enum px_transport attempt_transport(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return PX_TR_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return PX_TR_REFUSED;
    case CURLE_WRITE_ERROR:
        return PX_TR_TOO_LARGE;
    /* Garbage instead of HTTP is "unsupported protocol" to curl (an HTTP/0.9 reply). */
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_PARTIAL_FILE:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return PX_TR_BROKEN;
    default:
        return PX_TR_OTHER;
    }
}

/*
 * 1 when a 2xx body of a Messages / Chat Completions call is an answer of the
 * target's format; its usage is taken on the way (one parse for both).
 */
static int attempt_body_is_answer(struct px_attempt *a)
{
    size_t blen = evbuffer_get_length(a->body);
    cJSON *j = blen ? cJSON_ParseWithLength((const char *)evbuffer_pullup(a->body, -1), blen) : NULL;
    int openai = a->s.target.fmt == AP_FMT_OPENAI;
    int ok = cJSON_IsObject(j) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, openai ? "choices" : "content"));
    if (ok) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
        if (openai)
            ap_usage_merge_openai(a->s.usage, u);
        else
            ap_usage_merge_anthropic(a->s.usage, u);
    }
    cJSON_Delete(j);
    return ok;
}

static void attempt_on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct px_attempt *a = arg;
    (void)easy;
    a->in_curl = 0;
    a->transfer_ok = rc == CURLE_OK;
    evtimer_del(a->idle);

    if (a->started) {
        if (rc != CURLE_OK) {
            ap_warn(a->s.rid, "upstream stream broke: %s", curl_easy_strerror(rc));
            a->ctx->stats.upstream_errors++;
        }
        attempt_end_stream(a, rc == CURLE_OK);
        return;
    }
    struct px_outcome o = {0};
    o.api = a->s.api;
    if (a->sse != NULL) {
        o.kind = PX_OUT_HELD_STREAM;
        o.stream_clean = rc == CURLE_OK && ap_stream_done(a->sse);
        o.stream_error = ap_stream_failed(a->sse) ? ap_stream_error(a->sse) : "";
    } else if (rc != CURLE_OK) {
        o.kind = PX_OUT_TRANSPORT;
        o.transport = attempt_transport(rc);
        ap_info(a->s.rid, "upstream transfer failed: %s", curl_easy_strerror(rc));
    } else {
        o.kind = PX_OUT_ANSWER;
        o.status = a->status;
        o.is_sse = a->is_sse;
        o.body_len = evbuffer_get_length(a->body);
        o.body = o.body_len ? (const char *)evbuffer_pullup(a->body, -1) : "";
        int ok = a->status >= 200 && a->status < 300;
        o.body_is_answer = ok && o.api && !a->is_sse && attempt_body_is_answer(a);
    }
    a->s.ops->on_outcome(a->s.owner, &o);
}

/* ---- delivering a complete answer ---- */

enum px_delivery px_attempt_deliver(struct px_attempt *a, int *status, const char **message)
{
    int ok = a->status >= 200 && a->status < 300;

    if (a->sse != NULL || (ok && a->is_sse)) {
        /* A held stream, or a 2xx stream that never sent a byte: ap_stream gives its ending. */
        if (a->sse == NULL) {
            struct ap_stream_opts o = {a->s.target.fmt, a->s.client_fmt, NULL, a->s.client_usage};
            if ((a->sse = ap_stream_new(&o)) == NULL) {
                *status = 500;
                *message = "out of memory";
                return PX_DELIVERY_FAILED;
            }
        }
        attempt_start_stream(a);
        attempt_end_stream(a, a->transfer_ok || a->retry);
        return PX_DELIVERED_STREAM;
    }
    size_t blen = evbuffer_get_length(a->body);
    const char *b = blen ? (const char *)evbuffer_pullup(a->body, -1) : "";
    if (ok && !a->s.api) {
        if (a->s.target.fmt == AP_FMT_OPENAI)
            ap_usage_openai_body(a->s.usage, b, blen);
        else
            ap_usage_anthropic_body(a->s.usage, b, blen);
    }
    *status = a->status;
    if (a->s.target.fmt == a->s.client_fmt || !a->s.api) {
        attempt_copy_headers(a, 0);
        evbuffer_add_buffer(a->s.tail, a->body);
        return PX_DELIVERED_BODY;
    }
    cJSON *doc;
    if (ok) {
        cJSON *up = cJSON_ParseWithLength(b, blen);
        doc = a->s.client_fmt == AP_FMT_ANTHROPIC ? ap_conv_resp_o2a(up, NULL) : ap_conv_resp_a2o(up, NULL);
        cJSON_Delete(up);
        if (doc == NULL) {
            ap_warn(a->s.rid, "upstream answered %d with a body that is not a %s response", a->status,
                    a->s.target.fmt == AP_FMT_OPENAI ? "chat completion" : "message");
            *status = 502;
            *message = "upstream sent an invalid response";
            return PX_DELIVERY_FAILED;
        }
    } else {
        doc = ap_conv_error(a->s.client_fmt, a->status, b, blen);
    }
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (text == NULL) {
        *status = 500;
        *message = "out of memory";
        return PX_DELIVERY_FAILED;
    }
    evbuffer_add(a->s.tail, text, strlen(text));
    cJSON_free(text);
    attempt_copy_headers(a, 1);
    return PX_DELIVERED_BODY;
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

static int attempt_add_header(void *arg, const char *line)
{
    struct px_attempt *a = arg;
    struct curl_slist *l = curl_slist_append(a->hdrs, line);
    if (l == NULL)
        return -1;
    a->hdrs = l;
    return 0;
}

static int attempt_headers(struct px_attempt *a)
{
    struct px_hreq *h = a->s.hreq;
    size_t n = px_hreq_nheaders(h);
    const char *names[AP_HTTP1_MAX_HEADERS], *values[AP_HTTP1_MAX_HEADERS];
    for (size_t i = 0; i < n && i < AP_HTTP1_MAX_HEADERS; i++)
        px_hreq_header_at(h, i, &names[i], &values[i]);
    struct px_header_in in = {names, values, n, a->s.stream, a->s.body_rewritten, a->s.rid, a->s.client_fmt};
    return px_outbound_headers(&in, &a->s.target, attempt_add_header, a);
}

struct px_attempt *px_attempt_start(const struct px_attempt_spec *spec, int *status, const char **message)
{
    struct px_ctx *ctx = spec->ctx;
    const struct px_config *c = &ctx->cfg;
    struct px_attempt *a = calloc(1, sizeof(*a));
    if (a == NULL)
        goto oom;
    a->s = *spec;
    a->ctx = ctx;
    a->body = evbuffer_new();
    a->chunk = evbuffer_new();
    a->idle = evtimer_new(ctx->base, attempt_on_idle, a);
    a->easy = attempt_easy_get(ctx);
    if (a->body == NULL || a->chunk == NULL || a->idle == NULL || a->easy == NULL || attempt_headers(a) < 0)
        goto oom;
    CURL *e = a->easy;
    curl_easy_setopt(e, CURLOPT_URL, a->s.target.url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->upstream_connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* The path was checked decoded (no dot segments): curl must send it as it is. */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, attempt_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, attempt_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);

    enum px_method m = px_hreq_method(a->s.hreq);
    if (m == PX_GET) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (m == PX_HEAD) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        if (m != PX_POST)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, px_hreq_method_name(a->s.hreq));
        /* POSTFIELDS does not copy: the body stays with the owner until the attempt is freed. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->s.body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, a->s.body_len ? a->s.body : "");
    }
    a->t_sent = ap_mono_ms();
    attempt_alive(a);
    if (ap_curl_add(ctx->curl, e, attempt_on_done, a) < 0) {
        px_attempt_free(a);
        *status = 500;
        *message = "cannot start the upstream request";
        return NULL;
    }
    a->in_curl = 1;
    return a;
oom:
    px_attempt_free(a);
    *status = 500;
    *message = "out of memory";
    return NULL;
}

void px_attempt_info(const struct px_attempt *a, struct px_attempt_info *out)
{
    out->upstream_status = a->status;
    out->t_sent = a->t_sent;
    out->t_headers = a->t_headers;
}

void px_attempt_free(struct px_attempt *a)
{
    if (a == NULL)
        return;
    if (a->in_curl)
        ap_curl_remove(a->ctx->curl, a->easy);
    if (a->started && !a->ended) {
        /* The client left mid-stream: what it was sent counts. */
        ap_stream_usage(a->sse, a->s.usage);
        a->ctx->stats.streams--;
    }
    if (a->started)
        px_hreq_on_drain(a->s.hreq, NULL, NULL);
    if (a->idle != NULL)
        event_free(a->idle);
    attempt_easy_put(a->ctx, a->easy);
    curl_slist_free_all(a->hdrs);
    if (a->body != NULL)
        evbuffer_free(a->body);
    if (a->chunk != NULL)
        evbuffer_free(a->chunk);
    ap_stream_free(a->sse);
    free(a->rh);
    free(a);
}
