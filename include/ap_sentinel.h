/*
 * ap_sentinel: finding the Redis master through Redis Sentinel, and hearing
 * when it moves. hiredis 0.14.1 has no Sentinel support; this is ours.
 *
 *   ap_redis ──query──▶ sentinel[0], then [1], ...  SENTINEL get-master-addr-by-name
 *            ◀─host:port─┘ (the one that answered moves to the front)
 *   ap_redis ◀─switch─── watch: SUBSCRIBE +switch-master on one sentinel
 *                        (another one when it goes; after a resubscribe the
 *                        caller is asked to check: a switch may have passed)
 *
 * The pure part (configuration, reply parsing, the order of sentinels) takes
 * no event loop and is unit-tested alone; the connections (ap_sentinel_conn.c)
 * run on the caller's libevent loop, with their own timeouts.
 */
#ifndef AP_SENTINEL_H
#define AP_SENTINEL_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#define AP_SENTINELS_MAX 16
#define AP_SENTINEL_DEFAULT_PORT 26379

struct event_base;
struct evdns_base;

struct ap_hostport {
    char host[256];
    int port;
};

struct ap_sentinel_cfg {
    struct ap_hostport addr[AP_SENTINELS_MAX]; /* in the order to ask them */
    size_t n;                                   /* 0: no Sentinel (connect to REDIS_URL's host) */
    char master[128];                           /* REDIS_SENTINEL_MASTER */
    char password[256];                         /* REDIS_SENTINEL_PASSWORD; empty: no AUTH */
};

/* ---- pure part (ap_sentinel.c) ---- */

/*
 * Parses "host:port,host:port,..." (a port may be left out: 26379; IPv6 as
 * [addr]:port; blanks around commas ignored) into cfg->addr / cfg->n.
 * 0, or -1 with a reason in err (duplicates, bad ports, too many, empty).
 */
int ap_sentinel_parse_list(const char *list, struct ap_sentinel_cfg *cfg, char *err, size_t errn);

/*
 * Reads REDIS_SENTINELS, REDIS_SENTINEL_MASTER (default mymaster) and
 * REDIS_SENTINEL_PASSWORD into cfg (n = 0 when REDIS_SENTINELS is unset).
 * 0, or -1 after logging what is wrong.
 */
int ap_sentinel_cfg_env(struct ap_sentinel_cfg *cfg);

/*
 * The reply to SENTINEL get-master-addr-by-name: 1 with host and port filled,
 * 0 when the sentinel does not know that master (nil), -1 when the reply is
 * an error or malformed.
 */
int ap_sentinel_master_reply(const redisReply *rep, char *host, size_t hostn, int *port);

enum ap_redis_role { AP_ROLE_UNKNOWN, AP_ROLE_MASTER, AP_ROLE_REPLICA, AP_ROLE_SENTINEL };

/* The role a ROLE reply states (UNKNOWN for NULL, errors and anything else). */
enum ap_redis_role ap_sentinel_role(const redisReply *rep);
const char *ap_sentinel_role_name(enum ap_redis_role role);

/*
 * A +switch-master message ("<name> <old-ip> <old-port> <new-ip> <new-port>"):
 * 1 with the new address when it is about `master`, 0 when it is about
 * another master, -1 when malformed.
 */
int ap_sentinel_switch_msg(const char *payload, size_t len, const char *master, char *host, size_t hostn,
                           int *port);

/* Moves sentinel i to the front, the others keeping their order (the one that answered is asked first). */
void ap_sentinel_promote(struct ap_sentinel_cfg *cfg, size_t i);

/* "host:port", or "[host]:port" for an IPv6 literal, into out (always terminated). */
void ap_hostport_format(const char *host, int port, char *out, size_t n);

/* ---- connections (ap_sentinel_conn.c) ---- */

struct ap_sentinel;
struct ap_sentinel_query;

/*
 * The watch heard that the master moved to host:port, or, with host NULL,
 * that it was not listening for a while (after a resubscribe): the caller
 * should ask again where the master is.
 */
typedef void (*ap_sentinel_switch_fn)(void *arg, const char *host, int port);

/* A query's answer: the master's address, or host NULL (with why) when no sentinel could tell. */
typedef void (*ap_sentinel_found_fn)(void *arg, const char *host, int port, const char *why);

/* NULL on allocation failure. The configuration is copied. `dns` may be NULL (IP literals only). */
struct ap_sentinel *ap_sentinel_new(struct event_base *base,
                                    const struct ap_sentinel_cfg *cfg, ap_sentinel_switch_fn on_switch,
                                    void *arg);

/* Starts the +switch-master watch (reconnecting by itself from then on). */
void ap_sentinel_start(struct ap_sentinel *s);

/*
 * Asks the sentinels in turn where the master is. `fn` is called exactly once
 * (never before this returns), unless the query is cancelled first; the
 * handle is invalid from the moment fn is called. NULL on allocation failure.
 */
struct ap_sentinel_query *ap_sentinel_query(struct ap_sentinel *s, ap_sentinel_found_fn fn, void *arg);
void ap_sentinel_query_cancel(struct ap_sentinel_query *q);

/* Frees the watch and every query still running (their callbacks are not called). NULL allowed. */
void ap_sentinel_free(struct ap_sentinel *s);

#endif
