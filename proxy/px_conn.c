/*
 * Client connections: a deadline for reading each request, and close
 * notification for whoever is streaming on a connection.
 *
 * evhttp's timeouts are idle timeouts: a client sending one byte every few
 * seconds ("slowloris") would hold a connection forever. We create each
 * connection's bufferevent ourselves (evhttp_set_bevcb) and watch its input
 * buffer: the first bytes of a request start a deadline (REQUEST_READ_TIMEOUT_
 * SECONDS); the request's arrival in the HTTP callback stops it. When it
 * passes, the client gets a 408 and the socket is shut down, and evhttp,
 * seeing EOF, frees the connection itself.
 *
 * evhttp frees the bufferevent without telling us, so we hold one reference
 * to it: the memory stays valid for our timer, and we let go once evhttp is
 * done (it has already sent FIN with shutdown(SHUT_WR) by then, so the client
 * sees the close at once; only the descriptor waits for our release). We
 * learn that evhttp is done from the connection's close callback (set once a
 * request arrived) or, before any request, from a once-a-second check.
 *
 *   state:  idle ──bytes──▶ reading (deadline) ──request read──▶ busy ──reply done──▶ idle
 */
#include "px.h"

#include "ap_log.h"
#include "ap_time.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CONN_CHECK_MS 1000

struct px_conn {
    struct px_ctx *ctx;                 /* borrowed */
    struct bufferevent *bev;            /* evhttp's; we hold one reference */
    struct evhttp_connection *evcon;    /* borrowed; known once a request arrived */
    struct evbuffer_cb_entry *input_cb; /* owned by the input buffer */
    struct event *timer;                /* owned: deadline and liveness checks */
    int64_t deadline_ms;                /* monotonic; 0: no request being read */
    px_conn_close_fn on_close;          /* borrowed interest in the close */
    void *close_arg;
    unsigned busy:1;                    /* a request is being answered */
    unsigned timed_out:1;
};

static void *conn_registry; /* tsearch tree of px_conn, keyed by bev */

static int conn_cmp(const void *a, const void *b)
{
    const struct bufferevent *x = ((const struct px_conn *)a)->bev, *y = ((const struct px_conn *)b)->bev;
    return (x > y) - (x < y);
}

static struct px_conn *conn_find(struct evhttp_connection *evcon)
{
    struct px_conn probe = {.bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL};
    struct px_conn **c = probe.bev ? tfind(&probe, &conn_registry, conn_cmp) : NULL;
    return c ? *c : NULL;
}

static void conn_arm(struct px_conn *c, int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void conn_release(struct px_conn *c)
{
    tdelete(c, &conn_registry, conn_cmp);
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    event_free(c->timer);
    bufferevent_decref(c->bev); /* the last reference: closes the descriptor */
    free(c);
}

static int conn_evhttp_done(struct px_conn *c)
{
    bufferevent_data_cb rd = NULL;
    bufferevent_getcb(c->bev, &rd, NULL, NULL, NULL);
    return rd == NULL; /* bufferevent_free() cleared the callbacks */
}

static void conn_time_out(struct px_conn *c)
{
    static const char reply[] =
        "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
        "Content-Length: 42\r\n\r\n{\"detail\":\"request not received in time\"}";
    evutil_socket_t s = bufferevent_getfd(c->bev);
    c->timed_out = 1;
    if (s < 0)
        return;
    ap_info(NULL, "client too slow sending its request: closing the connection");
    /* Straight to the socket: evhttp is still waiting for the rest of the request. */
    ssize_t w = send(s, reply, sizeof(reply) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    shutdown(s, SHUT_RDWR);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)fd;
    (void)what;
    if (conn_evhttp_done(c)) {
        conn_release(c);
        return;
    }
    int64_t now = ap_mono_ms();
    if (c->deadline_ms != 0 && now >= c->deadline_ms && !c->timed_out) {
        conn_time_out(c);
        conn_arm(c, 50); /* evhttp frees it on the EOF; release soon after */
        return;
    }
    if (c->timed_out || c->evcon == NULL)
        conn_arm(c, CONN_CHECK_MS);
    else if (c->deadline_ms != 0)
        conn_arm(c, c->deadline_ms - now);
    /* Otherwise the close callback wakes us. */
}

static void conn_start_deadline(struct px_conn *c)
{
    c->deadline_ms = ap_mono_ms() + c->ctx->cfg.request_read_s * 1000;
    if (c->evcon != NULL)
        conn_arm(c, c->ctx->cfg.request_read_s * 1000);
    /* Before the first request the once-a-second check is running and sees it. */
}

static void conn_on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct px_conn *c = arg;
    (void)buf;
    if (info->n_added > 0 && c->deadline_ms == 0 && !c->busy)
        conn_start_deadline(c);
}

static void conn_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct px_conn *c = arg;
    (void)evcon;
    if (c->on_close != NULL) {
        px_conn_close_fn fn = c->on_close;
        c->on_close = NULL;
        fn(c->close_arg);
    }
    c->evcon = NULL;
    /* evhttp frees the bufferevent right after this returns; release then. */
    event_active(c->timer, EV_TIMEOUT, 0);
}

/* The reply went out whole: bytes of a pipelined next request start its deadline. */
static void conn_on_complete(struct evhttp_request *req, void *arg)
{
    struct px_conn *c = arg;
    (void)req;
    c->busy = 0;
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        conn_start_deadline(c);
}

static struct bufferevent *conn_on_new(struct event_base *base, void *arg)
{
    struct px_ctx *ctx = arg;
    struct px_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->ctx = ctx;
    c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(base, conn_on_timer, c);
    if (c->bev == NULL || c->timer == NULL)
        goto fail;
    c->input_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), conn_on_input, c);
    if (c->input_cb == NULL || tsearch(c, &conn_registry, conn_cmp) == NULL)
        goto fail;
    bufferevent_incref(c->bev);
    /* Large bodies arrive in fewer reads (libevent's default is 16 KiB a read). */
    bufferevent_set_max_single_read(c->bev, 256 * 1024);
    conn_arm(c, CONN_CHECK_MS);
    return c->bev;
fail:
    if (c->input_cb != NULL)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    free(c);
    return NULL;
}

void px_conn_setup(struct px_ctx *ctx)
{
    evhttp_set_bevcb(ctx->http, conn_on_new, ctx);
}

void px_conn_request_read(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct px_conn *c = conn_find(evcon);
    if (c == NULL)
        return;
    c->deadline_ms = 0;
    c->busy = 1;
    if (c->evcon == NULL) {
        c->evcon = evcon;
        evhttp_connection_set_closecb(evcon, conn_on_close, c);
        evtimer_del(c->timer);
    }
    /* Not called if the connection dies first; then the close callback is. */
    evhttp_request_set_on_complete_cb(req, conn_on_complete, c);
}

void px_conn_watch_close(struct evhttp_connection *evcon, px_conn_close_fn fn, void *arg)
{
    struct px_conn *c = conn_find(evcon);
    if (c == NULL)
        return;
    c->on_close = fn;
    c->close_arg = arg;
}

size_t px_conn_backlog(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static void conn_collect(const void *node, VISIT which, void *arg)
{
    if (which == postorder || which == leaf) {
        struct px_conn ***out = arg;
        *(*out)++ = *(struct px_conn *const *)node;
    }
}

static void conn_count(const void *node, VISIT which, void *arg)
{
    (void)node;
    if (which == postorder || which == leaf)
        (*(size_t *)arg)++;
}

void px_conn_shutdown(void)
{
    size_t n = 0;
    twalk_r(conn_registry, conn_count, &n);
    struct px_conn **all = calloc(n ? n : 1, sizeof(*all)), **p = all;
    if (all == NULL)
        return;
    twalk_r(conn_registry, conn_collect, &p);
    for (size_t i = 0; i < n; i++)
        conn_release(all[i]);
    free(all);
}
