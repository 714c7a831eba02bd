/*
 * ap_redis: one logical Redis connection on a libevent loop, with what
 * hiredis 0.14.1 lacks: connect and liveness timeouts, DNS off the loop,
 * AUTH/SELECT from REDIS_URL, automatic reconnect with backoff, and an
 * optional pub/sub connection that lives and dies with the command one.
 *
 *   user ──cmd──▶ [command ctx] ──▶ redis
 *   user ◀─msg─── [subscribe ctx] ◀─ redis        (optional)
 *
 * "Up" means the command connection answered its handshake and, when a
 * channel is set, the subscription is confirmed. Going down tears both
 * contexts down (every pending callback gets a NULL reply) and arms a
 * reconnect; coming back up calls on_up, where users reload whatever
 * pub/sub may have dropped meanwhile.
 */
#ifndef AP_REDIS_H
#define AP_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>

struct event_base;

struct ap_redis_url {
    char host[256];
    int port;
    char user[128];     /* empty: AUTH with the password only */
    char password[256]; /* empty: no AUTH */
    int db;
};

/* Parses redis://[[user]:password@]host[:port][/db]; 0, or -1 if malformed. */
int ap_redis_url_parse(const char *url, struct ap_redis_url *out);

struct ap_redis;

struct ap_redis_cbs {
    void (*on_up)(struct ap_redis *r, void *arg);
    void (*on_down)(struct ap_redis *r, void *arg);
    /* A pub/sub message on the channel (payload borrowed for the call). */
    void (*on_message)(struct ap_redis *r, const char *payload, size_t len, void *arg);
    void *arg;
};

struct ap_redis_stats {
    uint64_t connects;   /* successful handshakes */
    uint64_t failures;   /* failed connects and lost connections */
    uint64_t timeouts;   /* liveness or connect timeouts */
};

/*
 * Creates the connection object (nothing is connected until ap_redis_start).
 * `channel` may be NULL (no subscription). A host name is resolved by the
 * system's resolver (ap_resolve) on every connect. Returns NULL on allocation failure.
 */
struct ap_redis *ap_redis_new(struct event_base *base, const struct ap_redis_url *url, const char *channel,
                              const struct ap_redis_cbs *cbs);

void ap_redis_start(struct ap_redis *r);

/* 1 when commands can be sent. */
int ap_redis_up(const struct ap_redis *r);

/*
 * Sends a command. `fn` is always called exactly once later, with a NULL reply
 * if the connection is lost first; a reply is valid only during the call.
 * Returns -1 (and `fn` is NOT called) when the connection is not up.
 * `lens` may be NULL when every argument is a NUL-terminated string.
 */
int ap_redis_argv(struct ap_redis *r, redisCallbackFn *fn, void *priv, int argc,
                  const char **argv, const size_t *lens);
int ap_redis_cmd(struct ap_redis *r, redisCallbackFn *fn, void *priv, const char *fmt, ...);

const struct ap_redis_stats *ap_redis_stats(const struct ap_redis *r);

/* Frees everything; pending callbacks get NULL replies first. NULL allowed. */
void ap_redis_free(struct ap_redis *r);

/* Helpers for reading replies. */
int ap_reply_ok(const redisReply *rep);          /* non-NULL and not an error */
long long ap_reply_int(const redisReply *rep);   /* integer, or numeric string, else 0 */

#endif
