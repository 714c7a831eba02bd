/*
 * Our own HTTP/1.1 client for plain-http upstreams (the px_xfer transport
 * for http:// URLs), with a keep-alive pool per host and port.
 *
 * Why not libcurl here: on the hot path (a local upstream over plain HTTP)
 * libcurl cost more than all our own per-request work together: per-transfer
 * setup, and two poll() calls per request to check that a pooled connection
 * is alive before reusing it. Here an idle connection keeps its read event,
 * so a connection the upstream closed is noticed and dropped when it
 * happens, and a request costs one writev and one read. libcurl still
 * carries https (external tiers).
 *
 *   start ─▶ resolve (ap_resolve, cached 30 s) ─▶ idle connection, or connect
 *         ─▶ writev(head, body) ─▶ read ─▶ ap_h1resp ─▶ on_status/on_header/on_body
 *         ─▶ complete: back to the pool when reusable ─▶ on_done
 *
 * A request that finds its reused connection closed before any byte of an
 * answer (the upstream timed it out as we picked it) is sent once more on a
 * new connection, as libcurl does.
 */
#include "px_xfer.h"

#include "px.h"

#include "ap_h1resp.h"
#include "ap_log.h"
#include "ap_put.h"
#include "ap_resolve.h"
#include "ap_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define UP_BUF 16384
#define UP_IDLE_MAX 256                 /* idle connections kept per host */
#define UP_RESOLVE_TTL_MS 30000

struct up_conn;

struct up_pool {
    char host[256];
    int port;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t resolved_at;                /* monotonic ms; 0: never */
    struct up_conn *idle;               /* most recently used first */
    size_t nidle;
    struct up_pool *next;
};

struct px_upstream {
    struct up_pool *pools;              /* owned */
};

struct up_xfer;

struct up_conn {
    struct px_ctx *ctx;                 /* borrowed */
    struct up_pool *pool;               /* borrowed */
    evutil_socket_t fd;
    struct event *rev;                  /* owned: readable (also while idle: a close is seen at once) */
    struct event *wev;                  /* owned: writable (connect, or a request not sent whole) */
    struct up_xfer *x;                  /* borrowed: the exchange using it; NULL while idle */
    struct up_conn *next;               /* in the pool's idle list */
    unsigned used:1;                    /* carried an exchange before */
    unsigned connected:1;
};

struct up_xfer {
    struct px_xfer x;                   /* first: the generic part */
    struct px_ctx *ctx;                 /* borrowed */
    struct up_pool *pool;               /* borrowed */
    struct up_conn *c;                  /* owned while attached */
    struct ap_resolve *resolving;       /* pending lookup */
    struct event *timer;                /* owned: the connect deadline */
    char *head;                         /* owned: the request's head */
    size_t head_len;
    const char *body;                   /* borrowed */
    size_t body_len;
    struct evbuffer *out;               /* owned: what is not sent yet */
    char *buf;                          /* owned: answer bytes */
    size_t have, pos;                   /* bytes in buf; parse position */
    struct ap_h1resp resp;
    const char *pend;                   /* a data span not taken yet (paused) */
    size_t pend_len;
    int is_head;
    unsigned started:1;                 /* past the deferred start: the timer is the connect deadline */
    unsigned paused:1;
    unsigned got_bytes:1;               /* some answer arrived */
    unsigned retried:1;
    unsigned eof:1;
};

/* ---- pools and connections ---- */

static struct px_upstream *up_state(struct px_ctx *ctx)
{
    if (ctx->upstream == NULL)
        ctx->upstream = calloc(1, sizeof(struct px_upstream));
    return ctx->upstream;
}

static struct up_pool *up_pool_get(struct px_ctx *ctx, const char *host, int port)
{
    struct px_upstream *u = up_state(ctx);
    if (u == NULL)
        return NULL;
    for (struct up_pool *p = u->pools; p != NULL; p = p->next)
        if (p->port == port && strcmp(p->host, host) == 0)
            return p;
    struct up_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    snprintf(p->host, sizeof(p->host), "%s", host);
    p->port = port;
    p->next = u->pools;
    u->pools = p;
    return p;
}

static void up_conn_close(struct up_conn *c)
{
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static void up_idle_remove(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    for (struct up_conn **pp = &p->idle; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            p->nidle--;
            c->next = NULL;
            return;
        }
    }
}

static void up_on_read(evutil_socket_t fd, short what, void *arg);
static void up_on_write(evutil_socket_t fd, short what, void *arg);

static struct up_conn *up_conn_new(struct px_ctx *ctx, struct up_pool *p)
{
    struct up_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->ctx = ctx;
    c->pool = p;
    c->fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    c->rev = event_new(ctx->base, c->fd, EV_READ | EV_PERSIST, up_on_read, c);
    c->wev = event_new(ctx->base, c->fd, EV_WRITE | EV_PERSIST, up_on_write, c);
    if (c->rev == NULL || c->wev == NULL) {
        up_conn_close(c);
        return NULL;
    }
    return c;
}

/* The exchange is over and its connection may carry another: keep it, watching for a close. */
static void up_conn_release(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    c->x = NULL;
    c->used = 1;
    event_del(c->wev);
    if (p->nidle >= UP_IDLE_MAX) {
        up_conn_close(c);
        return;
    }
    c->next = p->idle;
    p->idle = c;
    p->nidle++;
}

void px_upstream_shutdown(struct px_ctx *ctx)
{
    struct px_upstream *u = ctx->upstream;
    if (u == NULL)
        return;
    while (u->pools != NULL) {
        struct up_pool *p = u->pools;
        u->pools = p->next;
        while (p->idle != NULL) {
            struct up_conn *c = p->idle;
            p->idle = c->next;
            up_conn_close(c);
        }
        free(p);
    }
    free(u);
    ctx->upstream = NULL;
}

/* ---- the exchange ---- */

static void up_send(struct up_xfer *x);
static void up_process(struct up_xfer *x);

/* Detaches the connection: back to the pool when the answer ended cleanly and nothing else came. */
static void up_detach(struct up_xfer *x, int reusable)
{
    struct up_conn *c = x->c;
    if (c == NULL)
        return;
    x->c = NULL;
    if (reusable && c->connected && x->pos == x->have && evbuffer_get_length(x->out) == 0)
        up_conn_release(c);
    else
        up_conn_close(c);
}

/* The last thing an exchange does: the consumer may free it from on_done. */
static void up_finish(struct up_xfer *x, enum px_transport result)
{
    up_detach(x, result == PX_TR_NONE && ap_h1resp_reusable(&x->resp));
    if (x->timer != NULL)
        evtimer_del(x->timer);
    x->x.cbs->on_done(x->x.arg, result);
}

/* Takes a connection: an idle one of the pool, or a new one (connecting). */
static void up_connect(struct up_xfer *x)
{
    struct up_pool *p = x->pool;
    struct up_conn *c = p->idle;
    if (c != NULL && !x->retried) {
        up_idle_remove(c);
        c->x = x;
        x->c = c;
        up_send(x);
        return;
    }
    c = up_conn_new(x->ctx, p);
    if (c == NULL) {
        up_finish(x, PX_TR_REFUSED);
        return;
    }
    c->x = x;
    x->c = c;
    if (connect(c->fd, (struct sockaddr *)&p->addr, p->addrlen) == 0) {
        c->connected = 1;
        event_add(c->rev, NULL);
        up_send(x);
        return;
    }
    if (errno != EINPROGRESS) {
        up_finish(x, PX_TR_REFUSED);
        return;
    }
    long ms = x->ctx->cfg.upstream_connect_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(x->timer, &tv);
    event_add(c->wev, NULL); /* writable: connected (or failed) */
}

static void up_on_resolved(void *arg, const char *addr, const char *why);

/* The start (deferred to the loop), then the connect deadline. */
static void up_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct up_xfer *x = arg;
    (void)fd;
    (void)what;
    if (!x->started) {
        x->started = 1;
        struct up_pool *p = x->pool;
        if (p->resolved_at != 0 && ap_mono_ms() - p->resolved_at < UP_RESOLVE_TTL_MS) {
            up_connect(x);
            return;
        }
        struct ap_resolve *q = ap_resolve(x->ctx->base, p->host, up_on_resolved, x);
        if (q != NULL)
            x->resolving = q; /* else up_on_resolved ran already (and x may be gone) */
        return;
    }
    if (x->c != NULL && !x->c->connected) {
        ap_info(NULL, "upstream %s:%d: connect timed out", x->pool->host, x->pool->port);
        up_finish(x, PX_TR_TIMEOUT);
    }
}

static void up_on_resolved(void *arg, const char *addr, const char *why)
{
    struct up_xfer *x = arg;
    struct up_pool *p = x->pool;
    x->resolving = NULL;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&p->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&p->addr;
    memset(&p->addr, 0, sizeof(p->addr));
    if (addr != NULL && inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p->port);
        p->addrlen = sizeof(*v4);
    } else if (addr != NULL && inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p->port);
        p->addrlen = sizeof(*v6);
    } else {
        ap_warn(NULL, "upstream %s: cannot resolve: %s", p->host, why ? why : "no address");
        p->resolved_at = 0;
        up_finish(x, PX_TR_REFUSED);
        return;
    }
    p->resolved_at = ap_mono_ms();
    up_connect(x);
}

/* Writes what is left of the request. */
static void up_send(struct up_xfer *x)
{
    struct up_conn *c = x->c;
    if (evbuffer_get_length(x->out) == 0 && x->head != NULL) {
        struct iovec iov[2] = {{x->head, x->head_len}, {(void *)x->body, x->body_len}};
        ssize_t w = writev(c->fd, iov, x->body_len ? 2 : 1);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            up_process(x); /* the peer is gone: EOF handling decides (retry on a reused connection) */
            return;
        }
        size_t done = w > 0 ? (size_t)w : 0;
        if (done < x->head_len) {
            evbuffer_add(x->out, x->head + done, x->head_len - done);
            done = 0;
        } else {
            done -= x->head_len;
        }
        if (done < x->body_len)
            evbuffer_add_reference(x->out, x->body + done, x->body_len - done, NULL, NULL);
    } else if (evbuffer_get_length(x->out) > 0) {
        if (evbuffer_write(x->out, c->fd) < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            up_process(x);
            return;
        }
    }
    if (evbuffer_get_length(x->out) > 0) {
        event_add(c->wev, NULL);
    } else {
        event_del(c->wev);
        if (x->paused == 0)
            event_add(c->rev, NULL);
    }
}

static void up_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    struct up_xfer *x = c->x;
    (void)what;
    if (x == NULL) {
        event_del(c->wev);
        return;
    }
    if (!c->connected) {
        int err = 0;
        socklen_t l = sizeof(err);
        evtimer_del(x->timer);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err != 0) {
            ap_info(NULL, "upstream %s:%d: %s", x->pool->host, x->pool->port, strerror(err ? err : errno));
            up_finish(x, PX_TR_REFUSED);
            return;
        }
        c->connected = 1;
        event_del(c->wev);
    }
    up_send(x);
}

/*
 * Reads the answer as far as the buffer and the consumer allow, and hands it
 * on. Ends the exchange on its last byte, on garbage, or on a lost
 * connection (retried once when nothing arrived on a reused connection).
 */
static void up_process(struct up_xfer *x)
{
    struct up_conn *c = x->c;
    for (;;) {
        if (x->pend != NULL) {
            size_t r = x->x.cbs->on_body(x->x.arg, x->pend, x->pend_len);
            if (r == PX_XFER_PAUSE) {
                x->paused = 1;
                event_del(c->rev);
                return;
            }
            if (r != x->pend_len) {
                up_finish(x, PX_TR_ABORTED);
                return;
            }
            x->pend = NULL;
        }
        struct ap_h1resp_ev ev;
        size_t t = ap_h1resp_next(&x->resp, x->buf + x->pos, x->have - x->pos, x->eof, &ev);
        x->pos += t;
        switch (ev.kind) {
        case AP_H1R_STATUS:
            x->x.cbs->on_status(x->x.arg, ev.status);
            continue;
        case AP_H1R_HEADER:
            if (x->x.cbs->on_header(x->x.arg, ev.name, ev.name_len, ev.value, ev.value_len) < 0) {
                up_finish(x, PX_TR_ABORTED);
                return;
            }
            continue;
        case AP_H1R_HEADERS_DONE:
            continue;
        case AP_H1R_DATA:
            x->pend = ev.data;
            x->pend_len = ev.len;
            continue;
        case AP_H1R_DONE:
            up_finish(x, PX_TR_NONE);
            return;
        case AP_H1R_ERROR:
            if (x->eof && !x->got_bytes && c->used && !x->retried) {
                /* The upstream closed this kept-alive connection as we picked it: once more, on a new one. */
                x->retried = 1;
                up_detach(x, 0);
                evbuffer_drain(x->out, evbuffer_get_length(x->out));
                x->eof = 0;
                x->have = x->pos = 0;
                ap_h1resp_init(&x->resp, x->is_head);
                up_connect(x);
                return;
            }
            ap_info(NULL, "upstream %s:%d: %s", x->pool->host, x->pool->port, ev.error);
            up_finish(x, PX_TR_BROKEN);
            return;
        case AP_H1R_MORE:
            if (t > 0)
                continue;
            if (x->eof) {
                up_finish(x, PX_TR_BROKEN);
                return;
            }
            /* Keep the unread part at the start of the buffer for the next read. */
            if (x->pos > 0) {
                memmove(x->buf, x->buf + x->pos, x->have - x->pos);
                x->have -= x->pos;
                x->pos = 0;
            }
            return;
        }
    }
}

static void up_read(struct up_conn *c, evutil_socket_t fd)
{
    struct up_xfer *x = c->x;
    if (x == NULL) {
        /* Idle: the upstream closed it (or sent what nobody asked for). */
        up_idle_remove(c);
        up_conn_close(c);
        return;
    }
    if (x->paused)
        return;
    if (x->pend == NULL && x->pos == x->have) {
        x->pos = x->have = 0;
    }
    if (x->pend == NULL && x->have < UP_BUF && !x->eof) {
        ssize_t n = read(fd, x->buf + x->have, UP_BUF - x->have);
        if (n > 0) {
            x->have += (size_t)n;
            x->got_bytes = 1;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            x->eof = 1;
            event_del(c->rev);
        }
    } else if (x->pend == NULL && x->have == UP_BUF && x->pos == 0) {
        ap_info(NULL, "upstream %s:%d: header line longer than %d bytes", x->pool->host, x->pool->port, UP_BUF);
        up_finish(x, PX_TR_BROKEN);
        return;
    }
    up_process(x);
}

static void up_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    struct px_ctx *ctx = c->ctx; /* c may be gone when up_read returns */
    (void)what;
    /* What one read brings (head, events, end) reaches the client in one write. */
    px_conn_cork(ctx);
    up_read(c, fd);
    px_conn_uncork(ctx);
}

/* ---- px_xfer ---- */

static void up_resume(struct px_xfer *xx)
{
    struct up_xfer *x = (struct up_xfer *)xx;
    if (!x->paused || x->c == NULL)
        return;
    x->paused = 0;
    /* From the loop, not from here: the caller may not expect callbacks inside this call. */
    event_add(x->c->rev, NULL);
    event_active(x->c->rev, EV_READ, 1);
}

static void up_free(struct px_xfer *xx)
{
    struct up_xfer *x = (struct up_xfer *)xx;
    if (x->resolving != NULL)
        ap_resolve_cancel(x->resolving);
    if (x->c != NULL) {
        x->c->x = NULL;
        up_conn_close(x->c); /* mid-exchange: the connection's state is unknown */
    }
    if (x->timer != NULL)
        event_free(x->timer);
    if (x->out != NULL)
        evbuffer_free(x->out);
    free(x->head);
    free(x->buf);
    free(x);
}

static const struct px_xfer_ops up_ops = {up_resume, up_free};

/* "http://host[:port]/path?query" -> host, port, path. 0, or -1 when our client does not take it. */
static int up_parse_url(const char *url, char *host, size_t hn, int *port, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *a = url + 7;
    size_t al = strcspn(a, "/?#");
    if (al == 0 || memchr(a, '@', al) != NULL || a[0] == '[')
        return -1; /* credentials and IPv6 literals: left to libcurl */
    const char *colon = memchr(a, ':', al);
    size_t hl = colon ? (size_t)(colon - a) : al;
    if (hl == 0 || hl >= hn)
        return -1;
    memcpy(host, a, hl);
    host[hl] = '\0';
    *port = 80;
    if (colon != NULL) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (end != a + al || p < 1 || p > 65535)
            return -1;
        *port = (int)p;
    }
    *path = a[al] == '/' ? a + al : NULL;
    return a[al] == '\0' || a[al] == '/' ? 0 : -1;
}

static char *up_build_head(const struct px_xfer_req *req, const char *host, int port, const char *path,
                           size_t *len)
{
    size_t cap = 256 + strlen(req->method) + strlen(host) + (path ? strlen(path) : 1);
    for (size_t i = 0; i < req->nheaders; i++)
        cap += strlen(req->headers[i]) + 2;
    char *h = malloc(cap);
    if (h == NULL)
        return NULL;
    /* cap bounds it all: the fixed parts fit in its 256 spare bytes. */
    size_t o = ap_put_str(h, 0, req->method);
    h[o++] = ' ';
    o = ap_put_str(h, o, path ? path : "/");
    o = AP_PUT_LIT(h, o, " HTTP/1.1\r\nHost: ");
    o = ap_put_str(h, o, host);
    if (port != 80) {
        h[o++] = ':';
        o = ap_put_dec(h, o, (unsigned)port);
    }
    o = AP_PUT_LIT(h, o, "\r\n");
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *line = req->headers[i];
        const char *colon = strchr(line, ':');
        /* "Name:" with nothing after it means "do not send Name" (libcurl's convention, kept). */
        if (colon == NULL || colon[1 + strspn(colon + 1, " ")] == '\0')
            continue;
        size_t l = strlen(line);
        memcpy(h + o, line, l);
        o += l;
        h[o++] = '\r';
        h[o++] = '\n';
    }
    if (req->has_body) {
        o = AP_PUT_LIT(h, o, "Content-Length: ");
        o = ap_put_dec(h, o, req->body_len);
        o = AP_PUT_LIT(h, o, "\r\n");
    }
    o = AP_PUT_LIT(h, o, "\r\n");
    *len = o;
    return h;
}

struct px_xfer *px_upstream_start(struct px_ctx *ctx, const struct px_xfer_req *req, const struct px_xfer_cbs *cbs,
                                  void *arg, int *unsupported)
{
    char host[256];
    int port;
    const char *path;
    *unsupported = 0;
    if (up_parse_url(req->url, host, sizeof(host), &port, &path) < 0) {
        *unsupported = 1;
        return NULL;
    }
    struct up_xfer *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->x = (struct px_xfer){&up_ops, cbs, arg};
    x->ctx = ctx;
    x->pool = up_pool_get(ctx, host, port);
    x->head = up_build_head(req, host, port, path, &x->head_len);
    x->body = req->body;
    x->body_len = req->has_body ? req->body_len : 0;
    x->out = evbuffer_new();
    x->buf = malloc(UP_BUF);
    x->timer = evtimer_new(ctx->base, up_on_timer, x);
    x->is_head = strcmp(req->method, "HEAD") == 0;
    ap_h1resp_init(&x->resp, x->is_head);
    if (x->pool == NULL || x->head == NULL || x->out == NULL || x->buf == NULL || x->timer == NULL) {
        up_free(&x->x);
        return NULL;
    }
    /*
     * Started from the loop (later in this same turn, no extra wait): the caller
     * must hold its handle before any callback, on_done included, can run.
     */
    event_active(x->timer, EV_TIMEOUT, 1);
    return &x->x;
}
