/*
 * Client connections: reading requests (head, then body), writing replies,
 * and the deadlines in between.
 *
 *   HEAD ──head parsed──▶ BODY / CHUNKED ──body read──▶ BUSY (handler) ──reply done──▶ HEAD
 *     │                                                   │
 *     └──framing error, timeout, Connection: close────────┴──▶ CLOSING ──output written──▶ LINGER ──EOF──▶ closed
 *
 * The read event stays added for the life of the connection (no re-arming
 * per request, unlike evhttp); while a handler works, bytes still arriving
 * are kept (bounded) so that a client that leaves is noticed at once, before
 * any byte of the answer exists. Replies are written as soon as they are
 * queued, or at the end of the callback when it corked them (px_conn_cork);
 * the write event is added only when the socket is full.
 *
 * One timer per connection follows the current state's deadline lazily: a
 * later deadline leaves the timer alone (it re-arms when it fires early), so
 * a request on a kept-alive connection usually costs no timer operation.
 *   idle (no request begun)        CLIENT_TIMEOUT_SECONDS, then closed quietly
 *   request begun, not all read    REQUEST_READ_TIMEOUT_SECONDS, then 408 (slowloris)
 *   reply blocked by the client    CLIENT_TIMEOUT_SECONDS without progress, then closed
 *   lingering after the last reply 2 s
 */
#include "px_conn.h"

#include "px.h"

#include "ap_log.h"
#include "ap_time.h"

#include <cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define CONN_READ_SIZE 16384
#define CONN_READAHEAD_MAX (64 * 1024)   /* bytes kept while a request is answered */
#define CONN_LINGER_MS 2000
#define CONN_LINGER_BYTES (1 << 20)
/* Corked writes up to this size are copied into the output buffer; larger ones go out at once. */
#define CONN_CORK_COPY_MAX (16 * 1024)

/* ---- the embedded request ---- */

/* Buffers above this are given back after a request instead of being kept for the next. */
#define CONN_KEEP_BYTES (64 * 1024)

static void conn_req_init(struct px_hreq *h, struct px_conn *c)
{
    memset(h, 0, sizeof(*h));
    h->conn = c;
}

static void conn_trim(char **p, size_t *cap)
{
    if (*cap > CONN_KEEP_BYTES) {
        free(*p);
        *p = NULL;
        *cap = 0;
    }
}

static void conn_req_reset(struct px_hreq *h)
{
    conn_trim(&h->body, &h->body_cap);
    conn_trim(&h->rh, &h->rh_cap);
    h->body_len = 0;
    h->rh_len = 0;
    h->on_close = h->on_drain = NULL;
    h->close_arg = h->drain_arg = NULL;
    h->started = h->chunked_reply = h->eof_reply = h->head_only = h->close_after = h->held = 0;
    h->h1.target = NULL;
}

static void conn_req_release(struct px_hreq *h)
{
    free(h->head);
    free(h->path);
    free(h->body);
    free(h->rh);
    memset(h, 0, sizeof(*h));
}

static enum px_method conn_method(const char *m)
{
    static const struct { const char *name; enum px_method m; } map[] = {
        {"GET", PX_GET}, {"POST", PX_POST}, {"HEAD", PX_HEAD}, {"PUT", PX_PUT},
        {"DELETE", PX_DELETE}, {"PATCH", PX_PATCH}, {"OPTIONS", PX_OPTIONS},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(m, map[i].name) == 0)
            return map[i].m;
    return PX_OTHER;
}

static int conn_req_prepare(struct px_hreq *h)
{
    size_t tl = h->h1.target_len;
    h->method = conn_method(h->h1.method);
    h->head_only = h->method == PX_HEAD;
    /* One buffer: the decoded path, then the raw path (both at most as long as the target). */
    if (2 * (tl + 1) > h->path_cap) {
        char *p = realloc(h->path, 2 * (tl + 1));
        if (p == NULL)
            return -1;
        h->path = p;
        h->path_cap = 2 * (tl + 1);
    }
    char *raw = h->path + tl + 1;
    if (h->h1.target[0] == '*') {
        strcpy(h->path, "*");
        strcpy(raw, "*");
        h->raw_path = raw;
        h->query = NULL;
        return 0;
    }
    if (ap_http1_path_decode(h->h1.target, tl, h->path, tl + 1) < 0)
        return -1;
    const char *q = memchr(h->h1.target, '?', tl);
    size_t rl = q ? (size_t)(q - h->h1.target) : tl;
    memcpy(raw, h->h1.target, rl);
    raw[rl] = '\0';
    h->raw_path = raw;
    h->query = q ? q + 1 : NULL;
    return 0;
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg);
static void conn_on_write(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(evutil_socket_t fd, short what, void *arg);
static void conn_process(struct px_conn *c);
static void conn_on_deadline(struct px_conn *c);

static void conn_free(struct px_conn *c)
{
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->in != NULL)
        evbuffer_free(c->in);
    if (c->out != NULL)
        evbuffer_free(c->out);
    conn_req_release(&c->req);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

/* Frees the connection if nobody holds it any more (nor the cork list). */
static void conn_maybe_free(struct px_conn *c)
{
    if (c->dead && c->state != PX_CONN_BUSY && c->holds == 0 && !c->corked)
        conn_free(c);
}

/* Keeps the connection's memory while a function of ours still uses it. */
static void conn_hold(struct px_conn *c)
{
    c->holds++;
}

static void conn_unhold(struct px_conn *c)
{
    c->holds--;
    conn_maybe_free(c);
}

/* Sets the current state's deadline (0: none), arming the timer only if it would fire too late. */
static void conn_deadline(struct px_conn *c, int64_t at)
{
    c->deadline = at;
    if (at == 0 || (c->armed != 0 && c->armed <= at))
        return;
    int64_t ms = at - ap_mono_ms();
    if (ms < 0)
        ms = 0;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(c->timer, &tv);
    c->armed = at;
}

static void conn_idle(struct px_conn *c)
{
    conn_deadline(c, ap_mono_ms() + c->ctx->cfg.client_timeout * 1000);
}

/* ---- the connections of the server ---- */

static void conn_unlink(struct px_conn *c)
{
    struct px_ctx *ctx = c->ctx;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (ctx->conns == c)
        ctx->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    ctx->nconns--;
}

size_t px_conn_count(const struct px_ctx *ctx)
{
    return ctx->nconns;
}

size_t px_conn_unsent(const struct px_ctx *ctx)
{
    size_t n = 0;
    for (const struct px_conn *c = ctx->conns; c != NULL; c = c->next)
        n += !c->dead && evbuffer_get_length(c->out) > 0;
    return n;
}

void px_conn_drain_all(struct px_ctx *ctx)
{
    for (struct px_conn *c = ctx->conns, *next; c != NULL; c = next) {
        next = c->next;
        px_conn_drain(c);
    }
}

void px_conn_abort_all(struct px_ctx *ctx)
{
    while (ctx->conns != NULL)
        px_conn_abort(ctx->conns);
}

struct px_conn *px_conn_new(struct px_ctx *ctx, evutil_socket_t fd)
{
    struct px_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->ctx = ctx;
    c->fd = fd;
    c->rev = event_new(ctx->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->wev = event_new(ctx->base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
    c->timer = evtimer_new(ctx->base, conn_on_timer, c);
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    if (c->rev == NULL || c->wev == NULL || c->timer == NULL || c->in == NULL || c->out == NULL ||
        event_add(c->rev, NULL) < 0) {
        c->fd = -1; /* the caller closes it */
        conn_free(c);
        return NULL;
    }
    conn_req_init(&c->req, c);
    c->next = ctx->conns;
    if (ctx->conns != NULL)
        ctx->conns->prev = c;
    ctx->conns = c;
    ctx->nconns++;
    c->reading = 1;
    c->state = PX_CONN_HEAD;
    conn_idle(c);
    return c;
}

void px_conn_close(struct px_conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    event_del(c->rev);
    event_del(c->wev);
    event_del(c->timer);
    c->armed = 0;
    close(c->fd);
    c->fd = -1;
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    conn_unlink(c);
    if (c->state == PX_CONN_BUSY && c->req.on_close != NULL) {
        /*
         * Told from the loop, not from here: we may be inside a handler's own
         * call (a write that failed), where aborting its transfer is not allowed.
         */
        event_active(c->timer, EV_TIMEOUT, 1);
    }
    conn_maybe_free(c);
}

void px_conn_abort(struct px_conn *c)
{
    conn_hold(c);
    px_conn_close(c);
    if (c->state == PX_CONN_BUSY && c->req.on_close != NULL) {
        px_hreq_fn fn = c->req.on_close;
        c->req.on_close = NULL;
        fn(c->req.close_arg);
    }
    conn_unhold(c);
}

/* After the last reply: no more output; drop what the client still sends, then close. */
static void conn_linger(struct px_conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = PX_CONN_LINGER;
    c->deadline = 0;
    conn_deadline(c, ap_mono_ms() + CONN_LINGER_MS);
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    if (!c->reading) {
        event_add(c->rev, NULL);
        c->reading = 1;
    }
}

/*
 * Queues the connection for px_conn_uncork; `corked` keeps it from being
 * freed until then. Not a hold: a hold also means "my loop goes on with the
 * next pipelined request", which the cork list does not do.
 */
static void conn_cork_add(struct px_conn *c)
{
    if (c->corked)
        return;
    c->corked = 1;
    c->cnext = c->ctx->corked;
    c->ctx->corked = c;
}

void px_conn_cork(struct px_ctx *ctx)
{
    ctx->cork++;
}

void px_conn_uncork(struct px_ctx *ctx)
{
    if (--ctx->cork > 0)
        return;
    while (ctx->corked != NULL) {
        struct px_conn *c = ctx->corked;
        ctx->corked = c->cnext;
        c->cnext = NULL;
        conn_hold(c);
        c->corked = 0;
        px_conn_flush(c);
        /*
         * A handler that paused on a backlog of bytes that were only queued
         * learns they left, as from conn_on_write (no write event comes when
         * the socket took them all).
         */
        if (!c->dead && !c->writing && c->state == PX_CONN_BUSY && c->req.on_drain != NULL)
            c->req.on_drain(c->req.drain_arg);
        conn_unhold(c);
    }
}

void px_conn_flush(struct px_conn *c)
{
    if (c->dead) {
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        return;
    }
    if (c->ctx->cork > 0) {
        conn_cork_add(c);
        return;
    }
    if (c->req.held && c->state == PX_CONN_BUSY)
        return; /* px_hreq_hold: written when the reply ends */
    if (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            px_conn_close(c);
            return;
        }
    }
    if (evbuffer_get_length(c->out) > 0) {
        if (!c->writing) {
            event_add(c->wev, NULL);
            c->writing = 1;
        }
        /* Progress restarts the stall limit. */
        c->deadline = 0;
        conn_deadline(c, ap_mono_ms() + c->ctx->cfg.client_timeout * 1000);
        return;
    }
    if (c->writing) {
        event_del(c->wev);
        c->writing = 0;
        if (c->state == PX_CONN_BUSY)
            c->deadline = 0;
    }
    if (c->state == PX_CONN_CLOSING)
        conn_linger(c);
}

void px_conn_writev(struct px_conn *c, const struct iovec *iov, int n)
{
    if (c->dead)
        return;
    int held = c->req.held && c->state == PX_CONN_BUSY;
    if (c->ctx->cork > 0 || held) {
        size_t total = 0;
        for (int i = 0; i < n; i++)
            total += iov[i].iov_len;
        if (total <= CONN_CORK_COPY_MAX || held) {
            for (int i = 0; i < n; i++)
                evbuffer_add(c->out, iov[i].iov_base, iov[i].iov_len);
            px_conn_flush(c); /* corked: listed for px_conn_uncork; held: nothing */
            return;
        }
        /* A large corked piece is not copied: it goes out now, after what was queued. */
    }
    size_t skip = 0;
    if (evbuffer_get_length(c->out) == 0) {
        /* Nothing queued: straight to the socket, no copy; only a remainder is buffered. */
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            px_conn_close(c);
            return;
        }
        skip = w > 0 ? (size_t)w : 0;
    }
    for (int i = 0; i < n; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        evbuffer_add(c->out, (const char *)iov[i].iov_base + skip, iov[i].iov_len - skip);
        skip = 0;
    }
    px_conn_flush(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)fd;
    (void)what;
    conn_hold(c);
    px_conn_flush(c);
    /* Told only from here (never inside the handler's own writes), so it may resume its source. */
    if (!c->dead && !c->writing && c->state == PX_CONN_BUSY && c->req.on_drain != NULL)
        c->req.on_drain(c->req.drain_arg);
    conn_unhold(c);
}

void px_conn_request_done(struct px_conn *c)
{
    if (c->req.held) {
        c->req.held = 0; /* a reply completed without px_hreq_end: what it held goes now */
        px_conn_flush(c);
    }
    if (c->dead) {
        c->state = PX_CONN_HEAD;
        conn_maybe_free(c);
        return;
    }
    int close_now = c->req.close_after || !c->req.h1.keep_alive || c->idle_close;
    conn_req_reset(&c->req);
    c->head_scan = 0;
    if (close_now) {
        c->state = PX_CONN_CLOSING;
        px_conn_flush(c);
        return;
    }
    c->state = PX_CONN_HEAD;
    if (!c->reading) {
        event_add(c->rev, NULL);
        c->reading = 1;
    }
    if (evbuffer_get_length(c->in) > 0) {
        if (c->holds == 0)
            conn_process(c); /* else the loop that holds it goes on by itself */
    } else if (!c->writing) {
        conn_idle(c);
    }
}

void px_conn_drain(struct px_conn *c)
{
    c->idle_close = 1;
    if (c->state == PX_CONN_HEAD && evbuffer_get_length(c->in) == 0)
        px_conn_close(c);
}

/* The head, then the body, are here: hand the request to the router. */
static void conn_dispatch(struct px_conn *c)
{
    c->state = PX_CONN_BUSY;
    c->deadline = 0;
    c->timing_request = 0;
    c->ctx->dispatch(c->ctx, &c->req);
}

/*
 * A request the connection itself refuses (framing, size, time): a JSON error
 * in the endpoint's format when the head got that far, {"detail"} otherwise,
 * then the connection closes.
 */
static void conn_refuse(struct px_conn *c, int status, const char *reason)
{
    const char *target = c->req.h1.target;
    cJSON *doc = px_error_doc(target != NULL ? px_fmt_for_path(target) : PX_FMT_ADMIN, status, reason);
    char *json = doc ? cJSON_PrintUnformatted(doc) : NULL;
    /* Busy first: a failed write closes the connection, and a busy one is not freed under us. */
    c->state = PX_CONN_BUSY;
    cJSON_Delete(doc);
    if (json != NULL) {
        char head[256];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n",
                         status, px_status_reason(status), strlen(json));
        struct iovec iov[2] = {{head, (size_t)n}, {json, strlen(json)}};
        px_conn_writev(c, iov, 2);
        cJSON_free(json);
    }
    c->timing_request = 0;
    c->req.close_after = 1;
    px_conn_request_done(c);
}

/* Moves the body bytes already in `in` into the request. 1 when complete (dispatched), else 0. */
static int conn_body_from_input(struct px_conn *c)
{
    struct px_hreq *h = &c->req;
    size_t want = (size_t)h->h1.content_length - h->body_len;
    size_t have = evbuffer_get_length(c->in);
    size_t n = have < want ? have : want;
    if (n > 0) {
        evbuffer_remove(c->in, h->body + h->body_len, n);
        h->body_len += n;
        h->body[h->body_len] = '\0';
    }
    if (h->body_len < h->h1.content_length)
        return 0;
    conn_dispatch(c);
    return 1;
}

/* Prepares for the body of the parsed head. 0 to go on, -1 after refusing. */
static int conn_start_body(struct px_conn *c)
{
    struct px_hreq *h = &c->req;
    long max = c->ctx->cfg.max_body;
    if (h->h1.body == AP_HTTP1_BODY_LENGTH) {
        /* Refused before reading a byte of it (and without a 100 Continue). */
        if (h->h1.content_length > (uint64_t)max) {
            conn_refuse(c, 413, "request body too large");
            return -1;
        }
        size_t need = (size_t)h->h1.content_length + 1;
        if (need > h->body_cap) {
            char *b = realloc(h->body, need);
            if (b == NULL) {
                conn_refuse(c, 500, "out of memory");
                return -1;
            }
            h->body = b;
            h->body_cap = need;
        }
        h->body_len = 0;
        c->state = PX_CONN_BODY;
    } else {
        memset(&h->chunked, 0, sizeof(h->chunked));
        h->body_len = 0;
        c->state = PX_CONN_CHUNKED;
    }
    if (h->h1.expect_continue && evbuffer_get_length(c->in) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        evbuffer_add(c->out, cont, sizeof(cont) - 1);
        px_conn_flush(c);
    }
    return 0;
}

/* Reads a head from `in`. 1 when the state moved on, 0 when more bytes are needed, -1 when refused. */
static int conn_parse_head(struct px_conn *c)
{
    struct px_hreq *h = &c->req;
    size_t len = evbuffer_get_length(c->in);
    /* Empty lines before a request are allowed (RFC 9112 2.2): some clients send one after a body. */
    while (len >= 2 && c->head_scan == 0) {
        unsigned char two[2];
        evbuffer_copyout(c->in, two, 2);
        if (two[0] != '\r' || two[1] != '\n')
            break;
        evbuffer_drain(c->in, 2);
        len -= 2;
    }
    if (len == 0)
        return 0;
    size_t lim = (size_t)c->ctx->cfg.max_headers;
    size_t look = len < lim ? len : lim;
    struct ap_http1_err err = {0, NULL};
    const char *buf = (const char *)evbuffer_pullup(c->in, (ev_ssize_t)look);
    long n = buf ? ap_http1_head_end(buf, look, &c->head_scan, &err) : -1;
    if (buf == NULL)
        err = (struct ap_http1_err){500, "out of memory"};
    if (n < 0) {
        conn_refuse(c, err.status, err.reason);
        return -1;
    }
    if (n == 0) {
        if (look == lim) {
            conn_refuse(c, 431, "request header fields too large");
            return -1;
        }
        return 0;
    }
    if ((size_t)n + 1 > h->head_cap) {
        char *p = realloc(h->head, (size_t)n + 1);
        if (p == NULL) {
            conn_refuse(c, 500, "out of memory");
            return -1;
        }
        h->head = p;
        h->head_cap = (size_t)n + 1;
    }
    evbuffer_remove(c->in, h->head, (size_t)n);
    h->head[n] = '\0';
    c->head_scan = 0;
    if (ap_http1_parse(h->head, (size_t)n, &h->h1, &err) < 0) {
        conn_refuse(c, err.status, err.reason);
        return -1;
    }
    if (conn_req_prepare(h) < 0) {
        conn_refuse(c, 400, "malformed request path");
        return -1;
    }
    if (h->h1.body == AP_HTTP1_BODY_NONE) {
        conn_dispatch(c);
        return 1;
    }
    return conn_start_body(c) < 0 ? -1 : 1;
}

/* Decodes the chunked body bytes in `in`. 1 when the body is complete, 0 when more are needed. */
static int conn_feed_chunked(struct px_conn *c)
{
    struct px_hreq *h = &c->req;
    struct ap_http1_err err = {0, NULL};
    int done = 0;
    while (!done && evbuffer_get_length(c->in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(c->in, -1, NULL, &v, 1) < 1)
            break;
        long used = ap_http1_chunked_feed(&h->chunked, v.iov_base, v.iov_len, &h->body, &h->body_len,
                                          &h->body_cap, (size_t)c->ctx->cfg.max_body, &done, &err);
        if (used < 0) {
            conn_refuse(c, err.status, err.reason);
            return -1;
        }
        evbuffer_drain(c->in, (size_t)used);
    }
    if (!done)
        return 0;
    conn_dispatch(c);
    return 1;
}

/*
 * Reads every complete request it can (pipelined ones after the current
 * reply), dispatching each. A request not yet whole gets
 * REQUEST_READ_TIMEOUT_SECONDS from now; one that arrived in one read, the
 * usual case, costs no timer operation.
 */
static void conn_process(struct px_conn *c)
{
    conn_hold(c);
    while (!c->dead) {
        int r;
        if (c->state == PX_CONN_HEAD)
            r = conn_parse_head(c);
        else if (c->state == PX_CONN_BODY)
            r = conn_body_from_input(c);
        else if (c->state == PX_CONN_CHUNKED)
            r = conn_feed_chunked(c);
        else
            break;
        if (r <= 0)
            break;
    }
    int partial = c->state == PX_CONN_BODY || c->state == PX_CONN_CHUNKED ||
                  (c->state == PX_CONN_HEAD && evbuffer_get_length(c->in) > 0);
    if (!c->dead && partial && !c->timing_request) {
        c->timing_request = 1;
        c->deadline = 0;
        conn_deadline(c, ap_mono_ms() + c->ctx->cfg.request_read_s * 1000);
    }
    conn_unhold(c);
}

/* A Content-Length body is read straight into its buffer, without passing through `in`. */
static void conn_read_body(struct px_conn *c)
{
    struct px_hreq *h = &c->req;
    size_t want = (size_t)h->h1.content_length - h->body_len;
    ssize_t n = read(c->fd, h->body + h->body_len, want);
    if (n > 0) {
        h->body_len += (size_t)n;
        h->body[h->body_len] = '\0';
        if (h->body_len == h->h1.content_length)
            conn_process(c); /* dispatches */
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    px_conn_close(c); /* the client left mid-body, or the socket broke */
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)what;
    if (c->state == PX_CONN_BODY) {
        conn_read_body(c);
        return;
    }
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(c->in, CONN_READ_SIZE, &v, 1) < 1) {
        px_conn_close(c);
        return;
    }
    ssize_t n = read(fd, v.iov_base, v.iov_len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        /* EOF or a broken socket: whatever the state, the client is gone. */
        px_conn_close(c);
        return;
    }
    v.iov_len = (size_t)n;
    evbuffer_commit_space(c->in, &v, 1);
    switch (c->state) {
    case PX_CONN_LINGER:
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
        return;
    case PX_CONN_BUSY:
    case PX_CONN_CLOSING:
        /* Read ahead (a pipelined request) only so far; then wait for the reply. */
        if (evbuffer_get_length(c->in) > CONN_READAHEAD_MAX) {
            event_del(c->rev);
            c->reading = 0;
        }
        return;
    default:
        conn_process(c);
    }
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)fd;
    (void)what;
    c->armed = 0;
    if (c->dead) {
        /* The deferred news of px_conn_close. */
        if (c->state == PX_CONN_BUSY && c->req.on_close != NULL) {
            px_hreq_fn fn = c->req.on_close;
            c->req.on_close = NULL;
            fn(c->req.close_arg);
        }
        return;
    }
    if (c->deadline == 0)
        return;
    int64_t now = ap_mono_ms();
    if (now < c->deadline) {
        int64_t at = c->deadline;
        c->deadline = 0;
        conn_deadline(c, at);
        return;
    }
    c->deadline = 0;
    conn_hold(c);
    conn_on_deadline(c);
    conn_unhold(c);
}

static void conn_on_deadline(struct px_conn *c)
{
    switch (c->state) {
    case PX_CONN_HEAD:
        if (!c->timing_request) {
            px_conn_close(c); /* idle keep-alive connection */
            return;
        }
        /* fall through */
    case PX_CONN_BODY:
    case PX_CONN_CHUNKED:
        ap_info(NULL, "client too slow sending its request: closing the connection");
        conn_refuse(c, 408, "request not received in time");
        return;
    default:
        /* A client that stopped reading, or a linger that ran out. */
        px_conn_close(c);
    }
}
