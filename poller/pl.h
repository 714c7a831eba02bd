/*
 * pl: the quota poller. Internal header of the poller sources.
 *
 *   tick (interval/4) ─▶ pl_lease: renew, or try to acquire ({p}poller:leader)
 *                              │ leader
 *   every interval    ─▶ pl_poll: GET UPSTREAM_URL/health (curl multi)
 *                              ─▶ aggregate (ap_health_parse), settle availability
 *                              ─▶ {p}quota + event when something changed
 *   SIGHUP            ─▶ re-read FALLBACK_CONFIG ─▶ {p}fallback:config + event
 *
 * Several pollers may run; exactly one holds the lease and polls. A standby
 * takes over within two intervals when the leader dies (lease TTL 1.5
 * intervals, checked every quarter interval).
 */
#ifndef PL_H
#define PL_H

#include <stddef.h>
#include <stdint.h>

#include "ap_quota.h"
#include "ap_redis.h"

struct event_base;
struct ap_curl;
struct ap_fallback;
struct poll_xfer;
struct pl_lark;

struct pl_config {
    char upstream_url[1024];
    char *upstream_api_key;         /* owned; NULL: none */
    struct ap_redis_url redis;
    struct ap_sentinel_cfg sentinel;  /* REDIS_SENTINELS (n = 0: none) */
    char redis_prefix[64];
    char fallback_path[1024];
    double interval_s;              /* POLL_INTERVAL_SECONDS, else the config's, else 30 */
    int interval_from_env;
    long timeout_ms;                /* per poll */
    char instance_id[64];
    long http_port;                 /* POLLER_PORT: /metrics and /health; 0 (default): none */
    char http_bind[64];             /* POLLER_BIND */
};

struct pl_stats {
    uint64_t polls, failures, events, leader_changes;
};

struct pl_ctx {
    struct pl_config cfg;
    struct event_base *base;        /* owned */
    struct ap_redis *redis;         /* owned */
    struct ap_curl *curl;           /* owned */
    struct ap_fallback *fallback;   /* owned */
    char *fallback_text;            /* owned: the file as read, pushed to Redis */
    struct ap_quota quota;          /* owned: last published state */
    struct event *tick;             /* owned */
    struct poll_xfer *xfer;         /* owned: the /health request in flight, or NULL */
    struct pl_lark *lark;           /* owned: Lark user token refresh */
    int64_t next_poll_ms;           /* monotonic */
    struct pl_stats stats;
    unsigned leader:1;
    unsigned polling:1;             /* a /health request is in flight */
    unsigned have_quota:1;          /* quota holds a previous state (for hysteresis) */
    unsigned loading_previous:1;    /* a new leader's read of that state is in flight */
    unsigned draining:1;
};

int pl_config_load(struct pl_config *c);
/* Reads and validates FALLBACK_CONFIG into ctx (keeps the old one on failure). 0 or -1. */
int pl_load_fallback(struct pl_ctx *ctx);

/* pl_lease.c */
void pl_lease_tick(struct pl_ctx *ctx);
void pl_lease_release(struct pl_ctx *ctx);
/* Pushes the chain to Redis (only when it changed). */
void pl_push_config(struct pl_ctx *ctx);

/* pl_poll.c */
void pl_poll_start(struct pl_ctx *ctx);
/* Reads the quota state the previous leader left, for hysteresis continuity; polls wait for it. */
void pl_poll_load_previous(struct pl_ctx *ctx);
/* Aborts a poll in flight (shutdown). */
void pl_poll_abort(struct pl_ctx *ctx);

/* pl_http.c: starts /metrics and /health (none when the port is 0). 0 or -1. */
struct evhttp;
int pl_http_start(struct pl_ctx *ctx, struct evhttp **out);

/* pl_lark.c: NULL on bad configuration. */
struct pl_lark *pl_lark_new(struct pl_ctx *ctx);
/* Looks at the stored user token soon (when active): it may have changed. NULL allowed. */
void pl_lark_kick(struct pl_lark *lk);
void pl_lark_free(struct pl_lark *lk);

#endif
