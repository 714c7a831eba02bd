/*
 * One upstream attempt: the outbound request (decided by px_outbound), its
 * exchange (px_xfer: our HTTP/1.1 client, or libcurl for https), and the
 * relay of its answer.
 *
 *   px_attempt_start ─▶ xfer ─▶ on_status, on_header (headers kept)
 *                            ─▶ on_write ─┬─ 2xx SSE: ap_stream (tap or convert) ─▶ client now;
 *                            │            │  the exchange paused while the client's buffer is full
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
#include "px_xfer.h"

#include "ap_conv.h"
#include "ap_fallback.h"
#include "ap_http1.h"
#include "ap_json.h"
#include "ap_jscan.h"
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
    struct px_xfer *xfer;               /* owned: the exchange, while it runs */
    char *hbuf;                         /* owned: the request's header lines, NUL-separated */
    size_t hbuf_len, hbuf_cap;
    int status;                         /* upstream status, 0 before headers */
    char *rh;                           /* owned: upstream headers to relay, "name\0value\0"... */
    size_t rh_len, rh_cap;
    struct evbuffer *body;              /* owned: buffered (non-stream) answer */
    struct evbuffer *chunk;             /* owned: client bytes on their way */
    struct ap_stream *sse;              /* owned: set once a 2xx stream began */
    struct event *idle;                 /* owned: the upstream's silence limit */
    unsigned is_sse:1;                  /* the upstream answered text/event-stream */
    unsigned in_curl:1;                 /* the exchange runs */
    unsigned paused:1;                  /* the exchange waits until the client drains */
    unsigned too_large:1;               /* we stopped an answer past MAX_BODY_BYTES */
    unsigned hold:1;                    /* keep the stream from the client until content */
    unsigned started:1;                 /* the stream reached the client: headers are out */
    unsigned retry:1;                   /* the held stream failed before content */
    unsigned transfer_ok:1;             /* the exchange ended cleanly */
    unsigned final_held:1;              /* the stream's end was seen: its bytes go to the tail */
    unsigned ended:1;                   /* the stream's end was reported */
    int64_t t_sent, t_headers;          /* monotonic ms */
};

static const struct ap_http1_name attempt_hop_by_hop[] = {
    AP_HTTP1_NAME("connection"), AP_HTTP1_NAME("keep-alive"), AP_HTTP1_NAME("proxy-connection"),
    AP_HTTP1_NAME("proxy-authenticate"), AP_HTTP1_NAME("te"), AP_HTTP1_NAME("trailer"),
    AP_HTTP1_NAME("transfer-encoding"), AP_HTTP1_NAME("upgrade"), AP_HTTP1_NAME("content-length"),
    AP_HTTP1_NAME("date"),
};

static int attempt_is_hop(const char *name, size_t len)
{
    return ap_http1_name_in(name, len, attempt_hop_by_hop, sizeof(attempt_hop_by_hop) / sizeof(attempt_hop_by_hop[0]));
}

/* ---- relaying the answer ---- */

static void attempt_copy_headers(struct px_attempt *a, int converted)
{
    struct px_hreq *h = a->s.hreq;
    for (size_t i = 0; i < a->rh_len;) {
        const char *name = a->rh + i;
        const char *value = name + strlen(name) + 1;
        i = (size_t)(value - a->rh) + strlen(value) + 1;
        int replaced = 0;
        for (size_t k = 0; k < a->s.nextra; k++)
            replaced |= strcasecmp(name, a->s.extra[k].name) == 0;
        if (replaced || strcasecmp(name, "x-request-id") == 0 ||
            (converted && (strcasecmp(name, "content-type") == 0 || strcasecmp(name, "content-encoding") == 0)))
            continue;
        px_hreq_add_header(h, name, value);
    }
    if (!px_hreq_has_reply_header(h, "content-type"))
        px_hreq_add_header(h, "Content-Type", a->is_sse ? "text/event-stream" : "application/json");
    px_hreq_add_header(h, "x-request-id", a->s.rid);
    /* The owner's own headers (the key policy's x-ratelimit-*) replace the upstream's of the same name. */
    for (size_t i = 0; i < a->s.nextra; i++)
        px_hreq_add_header(h, a->s.extra[i].name, a->s.extra[i].value);
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
        /* May call attempt_on_body before returning, which may pause again. */
        px_xfer_resume(a->xfer);
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
 * The stream's end was seen in what the upstream just sent: from here on,
 * the client's bytes wait in the request's tail until the usage is durable.
 * The whole read that carried the end waits with it, not only the final
 * event: its events reached us at the same moment, so holding them costs the
 * client nothing, and the reply then ends in one write instead of two (on a
 * short answer that arrives whole, head and all, in one). Anything the reply
 * queued and had not written yet (the head, in the same read) is held too.
 */
static struct evbuffer *attempt_hold(struct px_attempt *a)
{
    struct evbuffer *tail = attempt_tail(a);
    if (tail != NULL && !a->final_held) {
        a->final_held = 1;
        px_hreq_hold(a->s.hreq);
    }
    return tail;
}

/* Sends the client bytes produced so far; from the stream's end on, they go to the tail. */
static void attempt_relay(struct px_attempt *a, int end)
{
    struct evbuffer *tail = NULL;
    if (evbuffer_get_length(a->chunk) == 0)
        return;
    if ((a->final_held || end || ap_stream_done(a->sse)) && (tail = attempt_hold(a)) != NULL) {
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

/* ---- the exchange's callbacks ---- */

/* Any sign of life from the upstream restarts its silence limit. */
static void attempt_alive(struct px_attempt *a)
{
    struct timeval tv = {a->ctx->cfg.upstream_read_s, 0};
    evtimer_add(a->idle, &tv);
}

static void attempt_on_done(void *arg, enum px_transport result);

/*
 * UPSTREAM_READ_TIMEOUT_SECONDS of silence. Our own timer, the same for
 * every transport (libcurl's low-speed check averages over a window and
 * fires seconds late). A transfer
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
    px_xfer_free(a->xfer);
    a->xfer = NULL;
    attempt_on_done(a, PX_TR_TIMEOUT);
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

static void attempt_on_status(void *arg, int status)
{
    struct px_attempt *a = arg;
    attempt_alive(a);
    a->status = status;
    a->t_headers = ap_mono_ms();
    a->rh_len = 0;
    a->is_sse = 0;
}

static int attempt_on_header(void *arg, const char *name, size_t nl, const char *value, size_t vl)
{
    struct px_attempt *a = arg;
    char n[128];
    if (nl >= sizeof(n) || vl > 8192)
        return 0; /* dropped, not relayed */
    memcpy(n, name, nl);
    n[nl] = '\0';
    if (attempt_is_hop(n, nl))
        return 0;
    if (AP_HTTP1_IS(n, nl, "content-type") && vl >= 17 && strncasecmp(value, "text/event-stream", 17) == 0)
        a->is_sse = 1;
    return attempt_keep_header(a, n, nl, value, vl);
}

static size_t attempt_on_body(void *arg, const char *data, size_t len)
{
    struct px_attempt *a = arg;

    attempt_alive(a);
    if (!(a->is_sse && a->status >= 200 && a->status < 300)) {
        if ((long)(evbuffer_get_length(a->body) + len) > a->ctx->cfg.max_body) {
            a->too_large = 1;
            return 0; /* too large to buffer: stops the exchange, reported as 502 */
        }
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
    /* Back-pressure: decide before consuming, the same bytes come back on resume. Once the
     * end is held, nothing more goes to the client before the reply ends: no pause. */
    if (a->started && !a->final_held && px_hreq_backlog(a->s.hreq) > (size_t)a->ctx->cfg.stream_buffer) {
        a->paused = 1;
        return PX_XFER_PAUSE;
    }
    if (a->started && evbuffer_get_length(a->chunk) == 0 && !a->final_held && ap_stream_passthrough(a->sse)) {
        /* The usual case: the client gets these very bytes; tap them and send them, no copy. */
        if (ap_stream_tap(a->sse, data, len) < 0)
            ap_warn(a->s.rid, "upstream stream is not valid SSE; ending it");
        struct evbuffer *tail = ap_stream_done(a->sse) ? attempt_hold(a) : NULL;
        if (tail != NULL)
            evbuffer_add(tail, data, len);
        else
            px_hreq_chunk(a->s.hreq, data, len);
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

/*
 * 1 when a 2xx body of a Messages / Chat Completions call is an answer of the
 * target's format; its usage is taken on the way. One scan, no tree of the
 * whole answer (that parse was ~4% of a small request's CPU): only the usage
 * object is parsed. A body the scan does not pass (malformed, or a name given
 * twice) is read by cJSON as before, which decides as it always did.
 */
static int attempt_body_is_answer(struct px_attempt *a)
{
    size_t blen = evbuffer_get_length(a->body);
    const char *b = blen ? (const char *)evbuffer_pullup(a->body, -1) : "";
    int openai = a->s.target.fmt == AP_FMT_OPENAI;
    struct ap_jscan js;
    cJSON *j = NULL;
    const cJSON *u = NULL;
    int ok;
    if (ap_jscan(b, blen, &js) == AP_JSCAN_OK) {
        ok = js.root == AP_J_OBJECT && (openai ? js.choices : js.content) == AP_J_ARRAY;
        if (ok && js.usage == AP_J_OBJECT)
            u = j = cJSON_ParseWithLength(js.usage_raw, js.usage_len);
    } else {
        j = blen ? cJSON_ParseWithLength(b, blen) : NULL;
        ok = cJSON_IsObject(j) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, openai ? "choices" : "content"));
        u = ok ? cJSON_GetObjectItemCaseSensitive(j, "usage") : NULL;
    }
    if (ok) {
        if (openai)
            ap_usage_merge_openai(a->s.usage, u);
        else
            ap_usage_merge_anthropic(a->s.usage, u);
    }
    cJSON_Delete(j);
    return ok;
}

static const char *attempt_result_name(enum px_transport r)
{
    static const char *const names[] = {"ok", "connection refused", "connection broken", "timed out",
                                        "answer too large", "aborted", "transfer failed"};
    return (size_t)r < sizeof(names) / sizeof(names[0]) ? names[r] : "transfer failed";
}

static void attempt_on_done(void *arg, enum px_transport rc)
{
    struct px_attempt *a = arg;
    a->in_curl = 0;
    a->transfer_ok = rc == PX_TR_NONE;
    evtimer_del(a->idle);
    if (rc == PX_TR_ABORTED && a->too_large)
        rc = PX_TR_TOO_LARGE;

    if (a->started) {
        if (rc != PX_TR_NONE) {
            ap_warn(a->s.rid, "upstream stream broke: %s", attempt_result_name(rc));
            a->ctx->stats.upstream_errors++;
        }
        attempt_end_stream(a, rc == PX_TR_NONE);
        return;
    }
    struct px_outcome o = {0};
    o.api = a->s.api;
    if (a->sse != NULL) {
        o.kind = PX_OUT_HELD_STREAM;
        o.stream_clean = rc == PX_TR_NONE && ap_stream_done(a->sse);
        o.stream_error = ap_stream_failed(a->sse) ? ap_stream_error(a->sse) : "";
    } else if (rc != PX_TR_NONE) {
        o.kind = PX_OUT_TRANSPORT;
        o.transport = rc;
        ap_info(a->s.rid, "upstream transfer failed: %s", attempt_result_name(rc));
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
        cJSON *up = ap_json_parse_keep(b, blen);
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
    char *text = ap_json_print_keep(doc);
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

void px_attempt_pool_free(struct px_ctx *ctx)
{
    px_xfer_shutdown(ctx);
}

static int attempt_add_header(void *arg, const char *line)
{
    struct px_attempt *a = arg;
    size_t l = strlen(line) + 1;
    if (a->hbuf_len + l > a->hbuf_cap) {
        size_t cap = a->hbuf_cap ? a->hbuf_cap * 2 : 1024;
        while (cap < a->hbuf_len + l)
            cap *= 2;
        char *p = realloc(a->hbuf, cap);
        if (p == NULL)
            return -1;
        a->hbuf = p;
        a->hbuf_cap = cap;
    }
    memcpy(a->hbuf + a->hbuf_len, line, l);
    a->hbuf_len += l;
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

static const struct px_xfer_cbs attempt_xfer_cbs = {
    attempt_on_status, attempt_on_header, attempt_on_body, attempt_on_done,
};

struct px_attempt *px_attempt_start(const struct px_attempt_spec *spec, int *status, const char **message)
{
    struct px_ctx *ctx = spec->ctx;
    struct px_attempt *a = calloc(1, sizeof(*a));
    if (a == NULL)
        goto oom;
    a->s = *spec;
    a->ctx = ctx;
    a->body = evbuffer_new();
    a->chunk = evbuffer_new();
    a->idle = evtimer_new(ctx->base, attempt_on_idle, a);
    if (a->body == NULL || a->chunk == NULL || a->idle == NULL || attempt_headers(a) < 0)
        goto oom;
    const char *lines[AP_HTTP1_MAX_HEADERS + 16];
    size_t nl = 0;
    for (size_t o = 0; o < a->hbuf_len && nl < sizeof(lines) / sizeof(lines[0]); o += strlen(a->hbuf + o) + 1)
        lines[nl++] = a->hbuf + o;
    enum px_method m = px_hreq_method(a->s.hreq);
    struct px_xfer_req req = {a->s.target.url, px_hreq_method_name(a->s.hreq), lines, nl, a->s.body,
                              a->s.body_len, m != PX_GET && m != PX_HEAD};
    a->t_sent = ap_mono_ms();
    attempt_alive(a);
    a->xfer = px_xfer_start(ctx, &req, &attempt_xfer_cbs, a);
    if (a->xfer == NULL) {
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
    px_xfer_free(a->xfer);
    if (a->started && !a->ended) {
        /* The client left mid-stream: what it was sent counts. */
        ap_stream_usage(a->sse, a->s.usage);
        a->ctx->stats.streams--;
    }
    if (a->started)
        px_hreq_on_drain(a->s.hreq, NULL, NULL);
    if (a->idle != NULL)
        event_free(a->idle);
    free(a->hbuf);
    if (a->body != NULL)
        evbuffer_free(a->body);
    if (a->chunk != NULL)
        evbuffer_free(a->chunk);
    ap_stream_free(a->sse);
    free(a->rh);
    free(a);
}
