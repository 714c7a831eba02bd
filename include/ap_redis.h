/*
 * ap_redis: one logical Redis connection on a libevent loop, with what
 * hiredis 0.14.1 lacks: connect and liveness timeouts, non-blocking DNS,
 * AUTH/SELECT from REDIS_URL, automatic reconnect with backoff, an optional
 * pub/sub connection that lives and dies with the command one, and finding
 * and following the master through Redis Sentinel (ap_sentinel).
 *
 *   user ──cmd──▶ [lane 0] ──▶ redis               (commands)
 *   user ──cmd──▶ [lane 1] ──▶ redis               (optional: commands that block, e.g. WAIT)
 *   user ◀─msg─── [subscribe ctx] ◀─ redis         (optional)
 *                     ▲ where: REDIS_URL's host, or the master the sentinels name
 *
 * "Up" means every lane answered its handshake and, when a channel is set,
 * the subscription is confirmed. Going down tears every context down (each
 * pending callback gets a NULL reply) and arms a reconnect; coming back up
 * calls on_up, where users reload whatever pub/sub may have dropped meanwhile.
 *
 * With Sentinel, connecting first asks the sentinels for the master, and the
 * handshake checks with ROLE that it is one (and keeps checking, instead of
 * PING, while up). A +switch-master, a lost connection or a demotion moves
 * every context to the new master at once, with on_down/on_up around it.
 */
#ifndef AP_REDIS_H
#define AP_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>

#include "ap_sentinel.h"

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
    uint64_t connects;   /* successful handshakes (also a generation number: each is a new connection) */
    uint64_t failures;   /* failed connects and lost connections */
    uint64_t timeouts;   /* liveness or connect timeouts */
    uint64_t failovers;  /* times the connection came up on another master than the one before */
};

#define AP_REDIS_LANES_MAX 2

struct ap_redis_opts {
    const char *channel;                    /* pub/sub channel, or NULL */
    const char *client_name;                /* CLIENT SETNAME on every connection (sanitized), or NULL */
    const struct ap_sentinel_cfg *sentinel; /* copied; NULL or no addresses: REDIS_URL's host */
    int lanes;                              /* command connections, 1 (0 means 1) or 2 */
};

/*
 * Creates the connection object (nothing is connected until ap_redis_start).
 * `opts` may be NULL (one lane, no subscription, no Sentinel). `dns` may be
 * NULL when every host is an IP literal. Returns NULL on allocation failure.
 */
struct ap_redis *ap_redis_new(struct event_base *base,
                              const struct ap_redis_url *url, const struct ap_redis_opts *opts,
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
/* The same on a given lane (a lane the object does not have means lane 0). */
int ap_redis_argv_lane(struct ap_redis *r, int lane, redisCallbackFn *fn, void *priv, int argc,
                       const char **argv, const size_t *lens);

/* "host:port" of the server in use, or last used (before the first connection: the configured one, or ""). */
const char *ap_redis_master(const struct ap_redis *r);
/* 1 when the master is found through Sentinel. */
int ap_redis_sentinel(const struct ap_redis *r);

const struct ap_redis_stats *ap_redis_stats(const struct ap_redis *r);

/* Frees everything; pending callbacks get NULL replies first. NULL allowed. */
void ap_redis_free(struct ap_redis *r);

/*
 * Low level, shared with ap_sentinel: an async context to a numeric address,
 * attached to `base`, with ac->data = data and the two callbacks; NULL (after
 * logging) when it cannot even start.
 */
redisAsyncContext *ap_redis_dial(struct event_base *base, const char *addr, int port, void *data,
                                 redisConnectCallback *on_connect, redisDisconnectCallback *on_disconnect);
/* Closes *ac (if any) without calling back into its owner (ac->data is cleared first); sets *ac = NULL. */
void ap_redis_close(redisAsyncContext **ac);

/* Helpers for reading replies. */
int ap_reply_ok(const redisReply *rep);          /* non-NULL and not an error */
long long ap_reply_int(const redisReply *rep);   /* integer, or numeric string, else 0 */

#endif
