/*
 * The connections of ap_sentinel (see ap_sentinel.h): one-shot queries and
 * the long-lived +switch-master watch, on the caller's libevent loop.
 *
 *   query:  [resolve] ─▶ connect ─▶ AUTH? ─▶ SENTINEL get-master-addr-by-name
 *             any failure, a nil answer or QUERY_TIMEOUT_MS ─▶ the next sentinel
 *   watch:  [resolve] ─▶ connect ─▶ AUTH? ─▶ SUBSCRIBE +switch-master
 *             lost or timed out ─▶ the next sentinel, after a backoff
 *
 * Both run on a sentinel_link: one connection to one sentinel, which reports
 * any loss (failed resolve or connect, refused AUTH, closed connection) to
 * its owner's `lost` function. Reply callbacks ignore NULL replies (hiredis
 * gives one to every pending callback when a context is freed, possibly after
 * its owner is gone); ac->data is cleared before we close a context ourselves.
 */
#include "ap_sentinel.h"

#include "ap_log.h"
#include "ap_redis.h"
#include "ap_resolve.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUERY_TIMEOUT_MS 1000
#define WATCH_CONNECT_TIMEOUT_MS 2000
#define WATCH_BACKOFF_MIN_MS 100
#define WATCH_BACKOFF_MAX_MS 2000
#define SWITCH_CHANNEL "+switch-master"

/* One connection to one sentinel. */
struct sentinel_link {
    struct ap_sentinel *s;              /* borrowed */
    struct ap_hostport to;              /* the sentinel */
    struct ap_resolve *res;             /* owned until its callback */
    redisAsyncContext *ac;              /* owned by hiredis once connected */
    void (*lost)(void *owner, const char *why);
    void (*ready)(void *owner);         /* connected (AUTH sent): send the command */
    void *owner;
};

struct ap_sentinel_query {
    struct sentinel_link link;
    ap_sentinel_found_fn fn;
    void *arg;
    struct ap_hostport order[AP_SENTINELS_MAX]; /* the list when the query began */
    size_t n, tried;                    /* order[tried] is being asked */
    struct event *timer;                /* owned: next attempt, attempt timeout */
    char why[512];                      /* the last failure */
    struct ap_sentinel_query *next;     /* s->queries */
};

struct ap_sentinel {
    struct event_base *base;            /* borrowed */
    struct ap_sentinel_cfg cfg;         /* reordered: the one that answered last comes first */
    ap_sentinel_switch_fn on_switch;
    void *arg;
    struct ap_sentinel_query *queries;  /* owned */
    /* the watch */
    struct sentinel_link w;
    size_t w_next;                      /* which sentinel to watch next */
    char w_at[300];                     /* w.to as host:port, for logs */
    struct event *w_timer;              /* owned: connect timeout, backoff */
    int w_backoff_ms;
    unsigned started:1;
};

static void sentinel_arm(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ==== links ==== */

static void link_close(struct sentinel_link *l)
{
    ap_redis_close(&l->ac);
    if (l->res != NULL) {
        ap_resolve_cancel(l->res);
        l->res = NULL;
    }
}

static int link_busy(const struct sentinel_link *l)
{
    return l->ac != NULL || l->res != NULL;
}

static void link_on_connect(const redisAsyncContext *ac, int status)
{
    struct sentinel_link *l = ac->data;
    if (l == NULL || status == REDIS_OK)
        return;
    l->ac = NULL; /* hiredis frees it after this callback */
    l->lost(l->owner, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void link_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct sentinel_link *l = ac->data;
    (void)status;
    if (l == NULL)
        return;
    l->ac = NULL;
    l->lost(l->owner, ac->err ? ac->errstr : "connection closed");
}

static void link_on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct sentinel_link *l = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
        l->lost(l->owner, "AUTH refused (REDIS_SENTINEL_PASSWORD)");
}

static void link_on_resolved(void *arg, const char *addr, const char *why)
{
    struct sentinel_link *l = arg;
    l->res = NULL;
    if (addr == NULL) {
        l->lost(l->owner, why);
        return;
    }
    l->ac = ap_redis_dial(l->s->base, addr, l->to.port, l, link_on_connect, link_on_disconnect);
    if (l->ac == NULL) {
        l->lost(l->owner, "connect failed");
        return;
    }
    if (l->s->cfg.password[0] != '\0')
        redisAsyncCommand(l->ac, link_on_auth, l, "AUTH %s", l->s->cfg.password);
    l->ready(l->owner);
}

static void link_open(struct sentinel_link *l, const struct ap_hostport *to)
{
    l->to = *to;
    /* The callback may run before this returns. */
    struct ap_resolve *res = ap_resolve(l->s->base, to->host, link_on_resolved, l);
    if (res != NULL)
        l->res = res;
}

/* ==== queries ==== */

static void query_unlink(struct ap_sentinel_query *q)
{
    for (struct ap_sentinel_query **p = &q->link.s->queries; *p != NULL; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

static void query_free(struct ap_sentinel_query *q)
{
    link_close(&q->link);
    query_unlink(q);
    event_free(q->timer);
    free(q);
}

static void query_finish(struct ap_sentinel_query *q, const char *host, int port)
{
    struct ap_sentinel *s = q->link.s;
    ap_sentinel_found_fn fn = q->fn;
    void *arg = q->arg;
    char h[256], why[700];
    if (host != NULL) {
        snprintf(h, sizeof(h), "%s", host);
        /* Ask the one that answered first from now on. */
        for (size_t i = 0; i < s->cfg.n; i++)
            if (s->cfg.addr[i].port == q->link.to.port && strcmp(s->cfg.addr[i].host, q->link.to.host) == 0) {
                ap_sentinel_promote(&s->cfg, i);
                break;
            }
    } else {
        snprintf(why, sizeof(why), "no sentinel could name master %s (last: %s)", s->cfg.master, q->why);
    }
    query_free(q);
    if (host != NULL)
        fn(arg, h, port, NULL);
    else
        fn(arg, NULL, 0, why);
}

/* This sentinel could not tell: try the next one (from the loop, not from inside hiredis). */
static void query_next(void *owner, const char *why)
{
    struct ap_sentinel_query *q = owner;
    char at[200];
    ap_hostport_format(q->link.to.host, q->link.to.port, at, sizeof(at));
    snprintf(q->why, sizeof(q->why), "%s: %.300s", at, why);
    ap_warn(NULL, "sentinel: %s", q->why);
    link_close(&q->link);
    q->tried++;
    evtimer_del(q->timer);
    sentinel_arm(q->timer, 0);
}

static void query_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_sentinel_query *q = priv;
    redisReply *rep = reply;
    char host[256], why[300];
    int port;
    (void)ac;
    if (rep == NULL)
        return;
    switch (ap_sentinel_master_reply(rep, host, sizeof(host), &port)) {
    case 1:
        query_finish(q, host, port);
        break;
    case 0:
        snprintf(why, sizeof(why), "does not know master %s", q->link.s->cfg.master);
        query_next(q, why);
        break;
    default:
        snprintf(why, sizeof(why), "unexpected answer%s%s", rep->type == REDIS_REPLY_ERROR ? ": " : "",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "");
        query_next(q, why);
        break;
    }
}

static void query_ready(void *owner)
{
    struct ap_sentinel_query *q = owner;
    redisAsyncCommand(q->link.ac, query_on_reply, q, "SENTINEL get-master-addr-by-name %s", q->link.s->cfg.master);
}

/* Timer: start the next attempt, or (with an attempt running) give up on it. */
static void query_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ap_sentinel_query *q = arg;
    (void)fd;
    (void)what;
    if (link_busy(&q->link)) {
        query_next(q, "no answer in time");
        return;
    }
    if (q->tried >= q->n) {
        query_finish(q, NULL, 0);
        return;
    }
    sentinel_arm(q->timer, QUERY_TIMEOUT_MS);
    link_open(&q->link, &q->order[q->tried]);
}

struct ap_sentinel_query *ap_sentinel_query(struct ap_sentinel *s, ap_sentinel_found_fn fn, void *arg)
{
    struct ap_sentinel_query *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->timer = evtimer_new(s->base, query_on_timer, q);
    if (q->timer == NULL) {
        free(q);
        return NULL;
    }
    q->link.s = s;
    q->link.lost = query_next;
    q->link.ready = query_ready;
    q->link.owner = q;
    q->fn = fn;
    q->arg = arg;
    q->n = s->cfg.n;
    memcpy(q->order, s->cfg.addr, q->n * sizeof(q->order[0]));
    q->next = s->queries;
    s->queries = q;
    sentinel_arm(q->timer, 0); /* never calls back before returning */
    return q;
}

void ap_sentinel_query_cancel(struct ap_sentinel_query *q)
{
    if (q != NULL)
        query_free(q);
}

/* ==== the +switch-master watch ==== */

static void watch_lost(void *owner, const char *why)
{
    struct ap_sentinel *s = owner;
    link_close(&s->w);
    ap_warn(NULL, "sentinel: watch on %s: %s; watching the next sentinel in %d ms", s->w_at, why, s->w_backoff_ms);
    evtimer_del(s->w_timer);
    sentinel_arm(s->w_timer, s->w_backoff_ms);
    s->w_backoff_ms = s->w_backoff_ms * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : s->w_backoff_ms * 2;
}

static void watch_on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_sentinel *s = priv;
    redisReply *rep = reply;
    char host[256];
    int port;
    (void)ac;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        s->w_backoff_ms = WATCH_BACKOFF_MIN_MS;
        evtimer_del(s->w_timer);
        ap_info(NULL, "sentinel: watching %s on %s for master %s", SWITCH_CHANNEL, s->w_at, s->cfg.master);
        /* A switch may have passed while nobody listened: have the caller ask. */
        s->on_switch(s->arg, NULL, 0);
        return;
    }
    const redisReply *msg = rep->element[2];
    if (strcmp(kind, "message") != 0 || msg->type != REDIS_REPLY_STRING)
        return;
    int rc = ap_sentinel_switch_msg(msg->str, msg->len, s->cfg.master, host, sizeof(host), &port);
    if (rc < 0)
        ap_warn(NULL, "sentinel: ignoring a malformed %s message (%zu bytes)", SWITCH_CHANNEL, msg->len);
    else if (rc == 1)
        s->on_switch(s->arg, host, port);
}

static void watch_ready(void *owner)
{
    struct ap_sentinel *s = owner;
    /* A sentinel that vanishes without a word (a partition) is noticed by TCP keepalive. */
    redisEnableKeepAlive(&s->w.ac->c);
    redisAsyncCommand(s->w.ac, watch_on_message, s, "SUBSCRIBE %s", SWITCH_CHANNEL);
}

/* Timer: reconnect after a backoff, or give up on a connect that takes too long. */
static void watch_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ap_sentinel *s = arg;
    (void)fd;
    (void)what;
    if (link_busy(&s->w)) {
        watch_lost(s, "no subscription in time");
        return;
    }
    const struct ap_hostport *to = &s->cfg.addr[s->w_next % s->cfg.n];
    s->w_next = (s->w_next + 1) % s->cfg.n;
    ap_hostport_format(to->host, to->port, s->w_at, sizeof(s->w_at));
    sentinel_arm(s->w_timer, WATCH_CONNECT_TIMEOUT_MS);
    link_open(&s->w, to);
}

/* ==== the object ==== */

struct ap_sentinel *ap_sentinel_new(struct event_base *base,
                                    const struct ap_sentinel_cfg *cfg, ap_sentinel_switch_fn on_switch, void *arg)
{
    struct ap_sentinel *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->base = base;
    s->cfg = *cfg;
    s->on_switch = on_switch;
    s->arg = arg;
    s->w.s = s;
    s->w.lost = watch_lost;
    s->w.ready = watch_ready;
    s->w.owner = s;
    s->w_backoff_ms = WATCH_BACKOFF_MIN_MS;
    s->w_timer = evtimer_new(base, watch_on_timer, s);
    if (s->w_timer == NULL || cfg->n == 0) {
        ap_sentinel_free(s);
        return NULL;
    }
    return s;
}

void ap_sentinel_start(struct ap_sentinel *s)
{
    if (s->started)
        return;
    s->started = 1;
    sentinel_arm(s->w_timer, 0);
}

void ap_sentinel_free(struct ap_sentinel *s)
{
    if (s == NULL)
        return;
    while (s->queries != NULL)
        query_free(s->queries);
    link_close(&s->w);
    if (s->w_timer != NULL)
        event_free(s->w_timer);
    free(s);
}
