/*
 * Redis connection management on libevent; see ap_redis.h.
 *
 * States: DOWN ──start/backoff──▶ RESOLVING ──▶ CONNECTING ──handshake──▶ UP
 *           ▲                                                            │
 *           └──────────── lost / timeout / error (teardown) ◀────────────┘
 * Teardown never runs inside a hiredis callback that owns the context: hiredis
 * defers redisAsyncFree there (REDIS_IN_CALLBACK) and calls us back, so the
 * `closing` flag makes the second entry a no-op.
 */
#include "ap_redis.h"

#include "ap_log.h"
#include "ap_resolve.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_CONNECT_TIMEOUT_MS 2000
#define REDIS_PING_INTERVAL_MS 1000
#define REDIS_PING_TIMEOUT_MS 3000
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 2000

enum redis_state { REDIS_DOWN, REDIS_RESOLVING, REDIS_CONNECTING, REDIS_UP };

struct ap_redis {
    struct event_base *base;            /* borrowed */
    struct ap_redis_url url;
    char *channel;                      /* owned; NULL: no pub/sub */
    struct ap_redis_cbs cbs;
    enum redis_state state;
    redisAsyncContext *cmd;             /* owned by hiredis once connected */
    redisAsyncContext *sub;
    struct ap_resolve *resolve;         /* the lookup in flight, or NULL */
    char addr[256];                     /* resolved address, or the literal host */
    struct event *timer;                /* connect timeout, backoff, ping */
    int backoff_ms;
    int64_t ping_sent_ms;               /* 0: no PING outstanding */
    unsigned cmd_ready:1;               /* handshake answered */
    unsigned sub_ready:1;               /* subscription confirmed */
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

/* ---- state changes ---- */

static void redis_maybe_up(struct ap_redis *r)
{
    if (r->state != REDIS_CONNECTING || !r->cmd_ready || (r->channel != NULL && !r->sub_ready))
        return;
    r->state = REDIS_UP;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->ping_sent_ms = 0;
    r->stats.connects++;
    ap_info(NULL, "redis: connected to %s:%d db %d", r->url.host, r->url.port, r->url.db);
    redis_arm(r, REDIS_PING_INTERVAL_MS);
    if (r->cbs.on_up)
        r->cbs.on_up(r, r->cbs.arg);
}

static void redis_ctx_free(redisAsyncContext **ac)
{
    redisAsyncContext *c = *ac;
    *ac = NULL;
    if (c != NULL) {
        c->data = NULL;
        redisAsyncFree(c);
    }
}

/* Drops both contexts and schedules a reconnect. Safe to call repeatedly. */
static void redis_teardown(struct ap_redis *r, const char *why)
{
    if (r->closing)
        return;
    r->closing = 1;
    int was_up = r->state == REDIS_UP;
    r->state = REDIS_DOWN;
    r->cmd_ready = r->sub_ready = 0;
    evtimer_del(r->timer);
    ap_resolve_cancel(r->resolve);
    r->resolve = NULL;
    redis_ctx_free(&r->cmd);
    redis_ctx_free(&r->sub);
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

/* ---- hiredis callbacks ---- */

static void redis_on_connect(const redisAsyncContext *ac, int status)
{
    struct ap_redis *r = ac->data;
    if (r == NULL || status == REDIS_OK)
        return;
    /* hiredis frees a context whose connect failed right after this callback. */
    if (ac == r->cmd)
        r->cmd = NULL;
    else if (ac == r->sub)
        r->sub = NULL;
    char why[300];
    snprintf(why, sizeof(why), "connect to %s:%d failed: %s", r->url.host, r->url.port, ac->errstr);
    redis_teardown(r, why);
}

static void redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct ap_redis *r = ac->data;
    (void)status;
    if (r == NULL)
        return;
    if (ac == r->cmd)
        r->cmd = NULL;
    else if (ac == r->sub)
        r->sub = NULL;
    redis_teardown(r, ac->err ? ac->errstr : "connection closed");
}

static void redis_on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    struct ap_redis *r = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || r->closing)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof(why), "handshake refused: %s", rep->str);
        redis_teardown(r, why);
        return;
    }
    r->cmd_ready = 1;
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
    if (reply != NULL)
        r->ping_sent_ms = 0;
}

/* ---- connecting ---- */

static void redis_auth_select(struct ap_redis *r, redisAsyncContext *ac)
{
    if (r->url.password[0] != '\0') {
        if (r->url.user[0] != '\0')
            redisAsyncCommand(ac, redis_on_auth_select, r, "AUTH %s %s", r->url.user, r->url.password);
        else
            redisAsyncCommand(ac, redis_on_auth_select, r, "AUTH %s", r->url.password);
    }
}

static redisAsyncContext *redis_open(struct ap_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->addr, r->url.port);
    if (ac == NULL)
        return NULL;
    if (ac->err) {
        ap_warn(NULL, "redis: cannot connect to %s:%d: %s", r->addr, r->url.port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = r;
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
    redis_auth_select(r, ac);
    return ac;
}

static void redis_connect_addr(struct ap_redis *r)
{
    r->state = REDIS_CONNECTING;
    r->cmd = redis_open(r);
    if (r->cmd == NULL) {
        redis_teardown(r, "connect failed");
        return;
    }
    if (r->url.db != 0)
        redisAsyncCommand(r->cmd, redis_on_auth_select, r, "SELECT %d", r->url.db);
    /* PING answers only after AUTH and SELECT did: it marks the handshake done. */
    redisAsyncCommand(r->cmd, redis_on_handshake, r, "PING");
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

static void redis_on_resolved(int err, const char *addr, void *arg)
{
    struct ap_redis *r = arg;
    r->resolve = NULL;
    if (err != 0) {
        char why[300];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", r->url.host, gai_strerror(err));
        redis_teardown(r, why);
        return;
    }
    snprintf(r->addr, sizeof(r->addr), "%s", addr);
    redis_connect_addr(r);
}

static void redis_connect(struct ap_redis *r)
{
    unsigned char tmp[16];
    if (inet_pton(AF_INET, r->url.host, tmp) == 1 || inet_pton(AF_INET6, r->url.host, tmp) == 1) {
        snprintf(r->addr, sizeof(r->addr), "%s", r->url.host);
        redis_connect_addr(r);
        return;
    }
    r->state = REDIS_RESOLVING;
    redis_arm(r, REDIS_CONNECT_TIMEOUT_MS);
    r->resolve = ap_resolve_start(r->base, r->url.host, redis_on_resolved, r);
    if (r->resolve == NULL)
        redis_teardown(r, "cannot start a DNS lookup");
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
            r->stats.timeouts++;
            redis_teardown(r, "no answer to PING");
            return;
        }
        if (r->ping_sent_ms == 0 && redisAsyncCommand(r->cmd, redis_on_pong, r, "PING") == REDIS_OK)
            r->ping_sent_ms = redis_mono_ms();
        redis_arm(r, REDIS_PING_INTERVAL_MS);
        break;
    }
}

/* ---- public ---- */

struct ap_redis *ap_redis_new(struct event_base *base, const struct ap_redis_url *url, const char *channel,
                              const struct ap_redis_cbs *cbs)
{
    struct ap_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->base = base;
    r->url = *url;
    if (cbs != NULL)
        r->cbs = *cbs;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->timer = evtimer_new(base, redis_on_timer, r);
    if (channel != NULL)
        r->channel = strdup(channel);
    if (r->timer == NULL || (channel != NULL && r->channel == NULL)) {
        ap_redis_free(r);
        return NULL;
    }
    return r;
}

void ap_redis_start(struct ap_redis *r)
{
    if (r->state == REDIS_DOWN)
        redis_connect(r);
}

int ap_redis_up(const struct ap_redis *r)
{
    return r->state == REDIS_UP;
}

int ap_redis_argv(struct ap_redis *r, redisCallbackFn *fn, void *priv, int argc,
                  const char **argv, const size_t *lens)
{
    if (r->state != REDIS_UP)
        return -1;
    return redisAsyncCommandArgv(r->cmd, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

int ap_redis_cmd(struct ap_redis *r, redisCallbackFn *fn, void *priv, const char *fmt, ...)
{
    if (r->state != REDIS_UP)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(r->cmd, fn, priv, fmt, ap);
    va_end(ap);
    return rc == REDIS_OK ? 0 : -1;
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
    if (r->timer != NULL)
        event_free(r->timer);
    free(r->channel);
    free(r);
}
