/*
 * Redis connection management on libevent; see ap_redis.h.
 *
 * States:
 *   DOWN ──start/backoff──▶ DISCOVERING ──▶ RESOLVING ──▶ CONNECTING ──handshake──▶ UP
 *     ▲                    (Sentinel only)                                          │
 *     └──────────── lost / timeout / error / demoted / failover (teardown) ◀───────┘
 * A +switch-master skips the backoff and DISCOVERING: the sentinels named the
 * new master, so the next connection goes straight there.
 *
 * Teardown never runs inside a hiredis callback that owns the context: hiredis
 * defers redisAsyncFree there (REDIS_IN_CALLBACK) and calls us back, so the
 * `closing` flag makes the second entry a no-op. Reply callbacks ignore NULL
 * replies (hiredis sends those to every pending callback when a context goes);
 * losses are handled in the connect and disconnect callbacks.
 */
#include "ap_redis.h"

#include "ap_log.h"
#include "ap_redis_ev.h"
#include "ap_resolve.h"

#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_CONNECT_TIMEOUT_MS 2000
#define REDIS_PING_INTERVAL_MS 1000
#define REDIS_PING_TIMEOUT_MS 3000
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 2000

enum redis_state { REDIS_DOWN, REDIS_DISCOVERING, REDIS_RESOLVING, REDIS_CONNECTING, REDIS_UP };

struct ap_redis {
    struct event_base *base;            /* borrowed */
    struct ap_redis_url url;
    char *channel;                      /* owned; NULL: no pub/sub */
    char *client_name;                  /* owned; NULL: none */
    struct ap_redis_cbs cbs;
    struct ap_sentinel *sentinel;       /* owned; NULL: always url.host */
    struct ap_sentinel_query *squery;   /* owned until its callback runs */
    struct ap_resolve *resolve;         /* owned until its callback runs */
    enum redis_state state;
    char host[256];                     /* where to connect: url.host, or the master the sentinels named */
    int port;
    char addr[64];                      /* host, resolved */
    char master[300];                   /* host:port in use (or last tried) */
    char up_master[300];                /* host:port of the last connection that came up */
    int nlanes;
    redisAsyncContext *lane[AP_REDIS_LANES_MAX]; /* owned by hiredis once connected */
    redisAsyncContext *sub;
    struct event *timer;                /* connect timeout, backoff, ping */
    int backoff_ms;
    int64_t ping_sent_ms;               /* 0: no PING outstanding */
    unsigned lanes_ready;               /* bit per lane: handshake answered */
    unsigned sub_ready:1;               /* subscription confirmed */
    unsigned direct:1;                  /* next connect: host:port as is (a +switch-master named it) */
    unsigned closing:1;                 /* teardown in progress */
    unsigned freeing:1;
    struct ap_redis_stats stats;
};

static void redis_connect(struct ap_redis *r);
static void redis_teardown(struct ap_redis *r, const char *why);

static int64_t redis_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void redis_arm(struct ap_redis *r, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(r->timer, &tv);
}

int ap_reply_ok(const redisReply *rep)
{
    return rep != NULL && rep->type != REDIS_REPLY_ERROR;
}

long long ap_reply_int(const redisReply *rep)
{
    if (rep == NULL)
        return 0;
    if (rep->type == REDIS_REPLY_INTEGER)
        return rep->integer;
    if (rep->type == REDIS_REPLY_STRING)
        return strtoll(rep->str, NULL, 10);
    return 0;
}

int ap_redis_url_parse(const char *url, struct ap_redis_url *out)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL)
            return -1;
        size_t ul = (size_t)(colon - p), pl = (size_t)(at - colon - 1);
        if (ul >= sizeof(out->user) || pl >= sizeof(out->password))
            return -1;
        memcpy(out->user, p, ul);
        memcpy(out->password, colon + 1, pl);
        p = at + 1;
    }
    const char *hend;
    if (*p == '[') { /* IPv6 literal */
        hend = strchr(p, ']');
        if (hend == NULL)
            return -1;
        p++;
    } else {
        hend = p + strcspn(p, ":/");
    }
    size_t hl = (size_t)(hend - p);
    if (hl == 0 || hl >= sizeof(out->host))
        return -1;
    memcpy(out->host, p, hl);
    p = hend + (*hend == ']');
    if (*p == ':') {
        char *e;
        long port = strtol(p + 1, &e, 10);
        if (e == p + 1 || port < 1 || port > 65535)
            return -1;
        out->port = (int)port;
        p = e;
    }
    if (*p == '/') {
        if (p[1] != '\0') {
            char *e;
            long db = strtol(p + 1, &e, 10);
            if (e == p + 1 || *e != '\0' || db < 0 || db > 1000000)
                return -1;
            out->db = (int)db;
        }
    } else if (*p != '\0') {
        return -1;
    }
    return 0;
}

/* ---- low level ---- */

redisAsyncContext *ap_redis_dial(struct event_base *base, const char *addr, int port, void *data,
                                 redisConnectCallback *on_connect, redisDisconnectCallback *on_disconnect)
{
    redisAsyncContext *ac = redisAsyncConnect(addr, port);
    if (ac == NULL)
        return NULL;
    if (ac->err) {
        ap_warn(NULL, "redis: cannot connect to %s:%d: %s", addr, port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = data;
    if (ap_redis_ev_attach(ac, base) < 0) {
        ap_warn(NULL, "redis: out of memory connecting to %s:%d", addr, port);
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

void ap_redis_close(redisAsyncContext **ac)
{
    redisAsyncContext *c = *ac;
    *ac = NULL;
    if (c != NULL) {
        c->data = NULL;
        redisAsyncFree(c);
    }
}

/* ---- state changes ---- */

static unsigned redis_all_lanes(const struct ap_redis *r)
{
    return (1u << r->nlanes) - 1;
}

static void redis_maybe_up(struct ap_redis *r)
{
    if (r->state != REDIS_CONNECTING || r->lanes_ready != redis_all_lanes(r) || (r->channel != NULL && !r->sub_ready))
        return;
    r->state = REDIS_UP;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->ping_sent_ms = 0;
    r->stats.connects++;
    if (r->up_master[0] != '\0' && strcmp(r->up_master, r->master) != 0) {
        r->stats.failovers++;
        ap_warn(NULL, "redis: now on master %s (was %s): failover %llu seen", r->master, r->up_master,
                (unsigned long long)r->stats.failovers);
    }
    snprintf(r->up_master, sizeof(r->up_master), "%s", r->master);
    ap_info(NULL, "redis: connected to %s db %d%s%s", r->master, r->url.db, r->sentinel ? ", master " : "",
            r->sentinel ? "verified with ROLE" : "");
    redis_arm(r, REDIS_PING_INTERVAL_MS);
    if (r->cbs.on_up)
        r->cbs.on_up(r, r->cbs.arg);
}

/* Drops every context and schedules a reconnect. Safe to call repeatedly. */
static void redis_teardown(struct ap_redis *r, const char *why)
{
    if (r->closing)
        return;
    r->closing = 1;
    int was_up = r->state == REDIS_UP;
    r->state = REDIS_DOWN;
    r->lanes_ready = 0;
    r->sub_ready = 0;
    evtimer_del(r->timer);
    if (r->squery != NULL) {
        ap_sentinel_query_cancel(r->squery);
        r->squery = NULL;
    }
    if (r->resolve != NULL) {
        ap_resolve_cancel(r->resolve);
        r->resolve = NULL;
    }
    for (int i = 0; i < r->nlanes; i++)
        ap_redis_close(&r->lane[i]);
    ap_redis_close(&r->sub);
    r->closing = 0;
    if (r->freeing)
        return;
    r->stats.failures++;
    ap_warn(NULL, "redis: %s; reconnecting in %d ms", why, r->backoff_ms);
    redis_arm(r, r->backoff_ms);
    r->backoff_ms = r->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : r->backoff_ms * 2;
    if (was_up && r->cbs.on_down)
        r->cbs.on_down(r, r->cbs.arg);
}

static void redis_set_target(struct ap_redis *r, const char *host, int port)
{
    if (host != r->host)
        snprintf(r->host, sizeof(r->host), "%s", host);
    r->port = port;
    ap_hostport_format(r->host, r->port, r->master, sizeof(r->master));
}

/* The master moved to host:port: go there now, whatever the state. */
static void redis_move(struct ap_redis *r, const char *host, int port, const char *why)
{
    char to[300];
    ap_hostport_format(host, port, to, sizeof(to));
    ap_warn(NULL, "redis: %s: the master is now %s", why, to);
    if (r->state != REDIS_DOWN)
        redis_teardown(r, "moving to the new master");
    redis_set_target(r, host, port);
    evtimer_del(r->timer);
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->direct = 1;
    redis_arm(r, 0);
}

/* ---- hiredis callbacks ---- */

static int redis_lane_of(const struct ap_redis *r, const redisAsyncContext *ac)
{
    for (int i = 0; i < r->nlanes; i++)
        if (r->lane[i] == ac)
            return i;
    return -1;
}

/* Forgets a context hiredis is about to free itself. */
static void redis_forget(struct ap_redis *r, const redisAsyncContext *ac)
{
    int i = redis_lane_of(r, ac);
    if (i >= 0)
        r->lane[i] = NULL;
    else if (ac == r->sub)
        r->sub = NULL;
}

static void redis_on_connect(const redisAsyncContext *ac, int status)
{
    struct ap_redis *r = ac->data;
    if (r == NULL || status == REDIS_OK)
        return;
    /* hiredis frees a context whose connect failed right after this callback. */
    redis_forget(r, ac);
    char why[400];
    snprintf(why, sizeof(why), "connect to %s failed: %s", r->master, ac->errstr);
    redis_teardown(r, why);
}

static void redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct ap_redis *r = ac->data;
    (void)status;
    if (r == NULL)
        return;
    redis_forget(r, ac);
    redis_teardown(r, ac->err ? ac->errstr : "connection closed");
}

/* A master is checked with ROLE (Sentinel), any other lane with PING. */
static int redis_check_role(struct ap_redis *r, const redisReply *rep, const char *when)
{
    if (r->sentinel == NULL)
        return 0;
    enum ap_redis_role role = ap_sentinel_role(rep);
    if (role == AP_ROLE_MASTER)
        return 0;
    char why[400];
    snprintf(why, sizeof(why), "%s %s a master (ROLE says %s)", r->master, when, ap_sentinel_role_name(role));
    redis_teardown(r, why);
    return -1;
}

static void redis_on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_redis *r = priv;
    redisReply *rep = reply;
    if (rep == NULL || r->closing)
        return;
    int lane = redis_lane_of(r, ac);
    if (lane < 0)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof(why), "handshake refused: %s", rep->str);
        redis_teardown(r, why);
        return;
    }
    if (lane == 0 && redis_check_role(r, rep, "is not") < 0)
        return;
    r->lanes_ready |= 1u << lane;
    redis_maybe_up(r);
}

static void redis_on_auth_select(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_redis *r = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && !r->closing) {
        char why[300];
        snprintf(why, sizeof(why), "AUTH/SELECT refused: %s", rep->str);
        redis_teardown(r, why);
    }
}

static void redis_on_sub(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_redis *r = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || r->closing || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
        return;
    const redisReply *kind = rep->element[0];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(kind->str, "subscribe") == 0) {
        r->sub_ready = 1;
        redis_maybe_up(r);
    } else if (strcmp(kind->str, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
        if (r->cbs.on_message)
            r->cbs.on_message(r, rep->element[2]->str, rep->element[2]->len, r->cbs.arg);
    }
}

static void redis_on_pong(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_redis *r = priv;
    (void)ac;
    if (reply == NULL || r->closing)
        return;
    r->ping_sent_ms = 0;
    redis_check_role(r, reply, "is no longer");
}

/* ---- Sentinel ---- */

static void redis_on_found(void *arg, const char *host, int port, const char *why)
{
    struct ap_redis *r = arg;
    r->squery = NULL;
    if (host == NULL) {
        redis_teardown(r, why);
        return;
    }
    redis_set_target(r, host, port);
    r->direct = 1;
    redis_connect(r);
}

/* The answer to a check (the watch was deaf for a while): move if the master is elsewhere. */
static void redis_on_checked(void *arg, const char *host, int port, const char *why)
{
    struct ap_redis *r = arg;
    char at[300];
    (void)why;
    r->squery = NULL;
    if (host == NULL || r->state != REDIS_UP)
        return;
    ap_hostport_format(host, port, at, sizeof(at));
    if (strcmp(at, r->master) != 0)
        redis_move(r, host, port, "Sentinel names another master");
}

static void redis_on_switch(void *arg, const char *host, int port)
{
    struct ap_redis *r = arg;
    if (host == NULL) {
        if (r->state == REDIS_UP && r->squery == NULL)
            r->squery = ap_sentinel_query(r->sentinel, redis_on_checked, r);
        return;
    }
    char to[300];
    ap_hostport_format(host, port, to, sizeof(to));
    if (r->state != REDIS_DOWN && r->state != REDIS_DISCOVERING && strcmp(to, r->master) == 0)
        return; /* already there, or on the way */
    redis_move(r, host, port, "Sentinel announced a failover (+switch-master)");
}

/* ---- connecting ---- */

static redisAsyncContext *redis_open(struct ap_redis *r)
{
    redisAsyncContext *ac = ap_redis_dial(r->base, r->addr, r->port, r, redis_on_connect, redis_on_disconnect);
    if (ac == NULL)
        return NULL;
    if (r->url.password[0] != '\0') {
        if (r->url.user[0] != '\0')
            redisAsyncCommand(ac, redis_on_auth_select, r, "AUTH %s %s", r->url.user, r->url.password);
        else
            redisAsyncCommand(ac, redis_on_auth_select, r, "AUTH %s", r->url.password);
    }
    /* Lets an operator tell our connections apart in CLIENT LIST; a refusal (ACL) does not matter. */
    if (r->client_name != NULL)
        redisAsyncCommand(ac, NULL, NULL, "CLIENT SETNAME %s", r->client_name);
    return ac;
}

static void redis_connect_addr(struct ap_redis *r)
{
    r->state = REDIS_CONNECTING;
    for (int i = 0; i < r->nlanes; i++) {
        redisAsyncContext *ac = r->lane[i] = redis_open(r);
        if (ac == NULL) {
            redis_teardown(r, "connect failed");
            return;
        }
        if (r->url.db != 0)
            redisAsyncCommand(ac, redis_on_auth_select, r, "SELECT %d", r->url.db);
        /* The handshake marker answers only after AUTH and SELECT did. */
        redisAsyncCommand(ac, redis_on_handshake, r, i == 0 && r->sentinel ? "ROLE" : "PING");
    }
    if (r->channel != NULL) {
        r->sub = redis_open(r);
        if (r->sub == NULL) {
            redis_teardown(r, "connect failed");
            return;
        }
        redisAsyncCommand(r->sub, redis_on_sub, r, "SUBSCRIBE %s", r->channel);
    }
    redis_arm(r, REDIS_CONNECT_TIMEOUT_MS);
}

static void redis_on_resolved(void *arg, const char *addr, const char *why)
{
    struct ap_redis *r = arg;
    r->resolve = NULL;
    if (addr == NULL) {
        redis_teardown(r, why);
        return;
    }
    snprintf(r->addr, sizeof(r->addr), "%s", addr);
    redis_connect_addr(r);
}

static void redis_connect(struct ap_redis *r)
{
    if (r->sentinel != NULL && !r->direct) {
        r->state = REDIS_DISCOVERING;
        r->squery = ap_sentinel_query(r->sentinel, redis_on_found, r);
        if (r->squery == NULL)
            redis_teardown(r, "out of memory asking the sentinels");
        return;
    }
    r->direct = 0;
    r->state = REDIS_RESOLVING;
    redis_arm(r, REDIS_CONNECT_TIMEOUT_MS);
    /* The callback may run before this returns (literals, cached or /etc/hosts answers). */
    struct ap_resolve *q = ap_resolve(r->base, r->host, redis_on_resolved, r);
    if (q != NULL)
        r->resolve = q;
}

static void redis_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ap_redis *r = arg;
    (void)fd;
    (void)what;
    switch (r->state) {
    case REDIS_DOWN:
        redis_connect(r);
        break;
    case REDIS_DISCOVERING: /* the query has its own time limits */
        break;
    case REDIS_RESOLVING:
    case REDIS_CONNECTING: {
        char why[600];
        if (r->state == REDIS_RESOLVING)
            snprintf(why, sizeof(why), "resolving %s timed out", r->url.host);
        else
            snprintf(why, sizeof(why), "connect to %s:%d (%s) timed out", r->url.host, r->url.port, r->addr);
        r->stats.timeouts++;
        redis_teardown(r, why);
        break;
    }
    case REDIS_UP:
        if (r->ping_sent_ms != 0 && redis_mono_ms() - r->ping_sent_ms > REDIS_PING_TIMEOUT_MS) {
            /*
             * A starved event loop (a CPU-bound burst, a stopped process) is not a
             * dead Redis: the answer may be waiting in the socket. Read it first.
             */
            redisAsyncHandleRead(r->lane[0]);
            if (r->state != REDIS_UP)
                return; /* the read found the connection lost: that path took over */
        }
        if (r->ping_sent_ms != 0 && redis_mono_ms() - r->ping_sent_ms > REDIS_PING_TIMEOUT_MS) {
            r->stats.timeouts++;
            redis_teardown(r, "no answer to PING");
            return;
        }
        if (r->ping_sent_ms == 0 &&
            redisAsyncCommand(r->lane[0], redis_on_pong, r, r->sentinel ? "ROLE" : "PING") == REDIS_OK)
            r->ping_sent_ms = redis_mono_ms();
        redis_arm(r, REDIS_PING_INTERVAL_MS);
        break;
    }
}

/* ---- public ---- */

/* Redis refuses client names with spaces or control characters. */
static char *redis_client_name(const char *name)
{
    char *s = strndup(name, 120);
    for (char *p = s; p != NULL && *p != '\0'; p++)
        if (*p < '!' || *p > '~')
            *p = '_';
    return s;
}

struct ap_redis *ap_redis_new(struct event_base *base,
                              const struct ap_redis_url *url, const struct ap_redis_opts *opts,
                              const struct ap_redis_cbs *cbs)
{
    struct ap_redis_opts none = {0};
    struct ap_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    if (opts == NULL)
        opts = &none;
    r->base = base;
    r->url = *url;
    if (cbs != NULL)
        r->cbs = *cbs;
    r->nlanes = opts->lanes >= 2 ? 2 : 1;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->timer = evtimer_new(base, redis_on_timer, r);
    int bad = r->timer == NULL;
    if (opts->channel != NULL)
        bad |= (r->channel = strdup(opts->channel)) == NULL;
    if (opts->client_name != NULL)
        bad |= (r->client_name = redis_client_name(opts->client_name)) == NULL;
    if (opts->sentinel != NULL && opts->sentinel->n > 0) {
        bad |= (r->sentinel = ap_sentinel_new(base, opts->sentinel, redis_on_switch, r)) == NULL;
        r->master[0] = '\0'; /* unknown until the sentinels tell */
    } else {
        redis_set_target(r, url->host, url->port);
    }
    if (bad) {
        ap_redis_free(r);
        return NULL;
    }
    return r;
}

void ap_redis_start(struct ap_redis *r)
{
    if (r->sentinel != NULL)
        ap_sentinel_start(r->sentinel);
    if (r->state == REDIS_DOWN)
        redis_connect(r);
}

int ap_redis_up(const struct ap_redis *r)
{
    return r->state == REDIS_UP;
}

int ap_redis_argv_lane(struct ap_redis *r, int lane, redisCallbackFn *fn, void *priv, int argc,
                       const char **argv, const size_t *lens)
{
    if (r->state != REDIS_UP)
        return -1;
    if (lane < 0 || lane >= r->nlanes)
        lane = 0;
    return redisAsyncCommandArgv(r->lane[lane], fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

int ap_redis_argv(struct ap_redis *r, redisCallbackFn *fn, void *priv, int argc,
                  const char **argv, const size_t *lens)
{
    return ap_redis_argv_lane(r, 0, fn, priv, argc, argv, lens);
}

int ap_redis_cmd(struct ap_redis *r, redisCallbackFn *fn, void *priv, const char *fmt, ...)
{
    if (r->state != REDIS_UP)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(r->lane[0], fn, priv, fmt, ap);
    va_end(ap);
    return rc == REDIS_OK ? 0 : -1;
}

const char *ap_redis_master(const struct ap_redis *r)
{
    return r->master;
}

int ap_redis_sentinel(const struct ap_redis *r)
{
    return r->sentinel != NULL;
}

const struct ap_redis_stats *ap_redis_stats(const struct ap_redis *r)
{
    return &r->stats;
}

void ap_redis_free(struct ap_redis *r)
{
    if (r == NULL)
        return;
    r->freeing = 1;
    redis_teardown(r, "shutting down");
    ap_sentinel_free(r->sentinel);
    if (r->timer != NULL)
        event_free(r->timer);
    free(r->channel);
    free(r->client_name);
    free(r);
}
