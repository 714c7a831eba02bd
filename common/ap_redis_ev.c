/*
 * hiredis on libevent, with fewer system calls per command than hiredis' own
 * adapter (adapters/libevent.h).
 *
 * That adapter uses one-shot events: each reply re-adds the read event, and
 * each command adds the write event, which is removed again once it fires.
 * With epoll that is three epoll_ctl per round trip, and a command waits for
 * the next poll before it is written. A usage batch, a key lookup and a
 * policy admission are each one round trip, so on a one-connection stream
 * that was a tenth of the proxy's system calls.
 *
 * Here the read event stays added (persistent) while hiredis wants replies,
 * and a command is written later in the same loop turn: the write event is
 * made active by hand (event_active, no poll), so the commands issued by all
 * the callbacks of one turn go out together in one write. The write event
 * is polled only while the socket is full, and while connecting (readiness
 * to write is how a non-blocking connect completes).
 *
 * hiredis may free the context inside our own callback (a broken socket):
 * its cleanup hook then marks the events dead and the callback frees them
 * once hiredis returns, as hiredis' newer adapters do.
 */
#include "ap_redis_ev.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdlib.h>

struct redis_ev {
    redisAsyncContext *ac;      /* borrowed: hiredis owns us (cleanup frees us) */
    struct event *rev;          /* owned: readable, persistent while `reading` */
    struct event *wev;          /* owned: writable; polled only while `polling` */
    unsigned reading:1;
    unsigned polling:1;         /* wev is added (socket full, or connecting) */
    unsigned in_write:1;        /* inside redisAsyncHandleWrite */
    unsigned want_write:1;      /* hiredis asked for more writing during it */
    unsigned in_cb:1;           /* inside one of our callbacks: cleanup defers the free */
    unsigned dead:1;            /* cleanup ran during a callback */
};

static void ev_free(struct redis_ev *e)
{
    event_free(e->rev);
    event_free(e->wev);
    free(e);
}

static void ev_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ev *e = arg;
    (void)fd;
    (void)what;
    e->in_cb = 1;
    redisAsyncHandleRead(e->ac);
    e->in_cb = 0;
    if (e->dead)
        ev_free(e);
}

static void ev_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ev *e = arg;
    (void)fd;
    (void)what;
    e->in_cb = 1;
    e->in_write = 1;
    e->want_write = 0;
    redisAsyncHandleWrite(e->ac);
    e->in_write = 0;
    e->in_cb = 0;
    if (e->dead) {
        ev_free(e);
        return;
    }
    /* Not all written (or still connecting): wait until the socket takes more. */
    if (e->want_write && !e->polling) {
        event_add(e->wev, NULL);
        e->polling = 1;
    } else if (!e->want_write && e->polling) {
        event_del(e->wev);
        e->polling = 0;
    }
}

static void ev_add_read(void *priv)
{
    struct redis_ev *e = priv;
    if (!e->reading) {
        event_add(e->rev, NULL);
        e->reading = 1;
    }
}

static void ev_del_read(void *priv)
{
    struct redis_ev *e = priv;
    if (e->reading) {
        event_del(e->rev);
        e->reading = 0;
    }
}

static void ev_add_write(void *priv)
{
    struct redis_ev *e = priv;
    if (e->in_write) {
        e->want_write = 1; /* ev_on_write decides once hiredis returns */
        return;
    }
    if (e->polling)
        return;
    if (!(e->ac->c.flags & REDIS_CONNECTED)) {
        /* A connect completes when the socket becomes writable: poll for it. */
        event_add(e->wev, NULL);
        e->polling = 1;
        return;
    }
    /* Written later in this loop turn, with whatever else this turn sends. */
    event_active(e->wev, EV_WRITE, 1);
}

static void ev_del_write(void *priv)
{
    struct redis_ev *e = priv;
    if (e->in_write) {
        e->want_write = 0;
        return;
    }
    if (e->polling) {
        event_del(e->wev);
        e->polling = 0;
    }
}

static void ev_cleanup(void *priv)
{
    struct redis_ev *e = priv;
    if (e->in_cb) {
        /* Freed by the callback we are in, once hiredis returns to it. */
        event_del(e->rev);
        event_del(e->wev);
        e->dead = 1;
        return;
    }
    ev_free(e);
}

int ap_redis_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    if (ac->ev.data != NULL)
        return -1;
    struct redis_ev *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, ev_on_read, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE | EV_PERSIST, ev_on_write, e);
    if (e->rev == NULL || e->wev == NULL) {
        if (e->rev != NULL)
            event_free(e->rev);
        if (e->wev != NULL)
            event_free(e->wev);
        free(e);
        return -1;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = e;
    /* As hiredis' adapter: read for replies, and poll writability for the connect. */
    ev_add_read(e);
    event_add(e->wev, NULL);
    e->polling = 1;
    return 0;
}
