/*
 * Usage accounting: finished requests become counter deltas in memory
 * (ap_delta) and a timer writes them to Redis in batches, one EVAL per
 * batch, one batch in flight at a time.
 *
 *   record ─▶ pending ──take──▶ inflight ──EVAL──▶ Redis
 *                                   ▲                 │ reply lost / error
 *                                   └──── resend ─────┘ (same batch id)
 *
 * A batch keeps its id until Redis acknowledges it, and the flush script
 * applies a given id at most once, so a reply lost to a disconnect can be
 * resent without counting twice. While Redis is down deltas keep merging
 * in `pending`; nothing counted is dropped.
 */
#include "px.h"

#include "ap_delta.h"
#include "ap_log.h"
#include "ap_store.h"
#include "ap_time.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_BATCH_MAX_OPS 4000
#define USAGE_DEDUPE_TTL_S 86400

struct px_usage {
    struct px_ctx *ctx;         /* borrowed */
    struct ap_delta *pending;   /* owned */
    struct ap_batch *inflight;  /* owned; sent or waiting to be resent */
    char inflight_id[128];
    uint64_t seq;
    struct event *timer;        /* owned */
    unsigned sending:1;         /* an EVAL is awaiting its reply */
};

static void usage_on_reply(redisAsyncContext *ac, void *reply, void *priv);

static void usage_send(struct px_usage *u)
{
    if (u->sending || !ap_redis_up(u->ctx->redis))
        return;
    if (u->inflight == NULL) {
        ap_store_key(u->inflight_id, sizeof(u->inflight_id), "flush:%s:%llu", u->ctx->cfg.instance_id,
                     (unsigned long long)++u->seq);
        u->inflight = ap_delta_take_flush(u->pending, USAGE_BATCH_MAX_OPS, u->inflight_id, USAGE_DEDUPE_TTL_S);
        if (u->inflight == NULL)
            return;
    }
    struct ap_batch *b = u->inflight;
    if (ap_redis_argv(u->ctx->redis, usage_on_reply, u, b->argc, (const char **)b->argv, b->lens) == 0)
        u->sending = 1;
}

static void usage_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_usage *u = priv;
    redisReply *rep = reply;
    (void)ac;
    u->sending = 0;
    if (rep == NULL) {
        /* Lost with the connection: maybe applied, maybe not. The same id is resent. */
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        ap_error(NULL, "usage: flush refused by Redis (will retry): %s", rep->str);
        return;
    }
    ap_debug(NULL, "usage: batch %s %s (%zu counters)", u->inflight_id,
             rep->integer == 1 ? "applied" : "was already applied", u->inflight->nops);
    ap_batch_free(u->inflight);
    u->inflight = NULL;
    /* A backlog (after an outage) or shutdown: keep going without waiting for the timer. */
    size_t left = ap_delta_count(u->pending);
    if (left >= USAGE_BATCH_MAX_OPS || (left > 0 && u->ctx->draining))
        usage_send(u);
}

static void usage_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    usage_send(arg);
}

struct px_usage *px_usage_new(struct px_ctx *ctx)
{
    struct px_usage *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->ctx = ctx;
    u->pending = ap_delta_new();
    u->timer = event_new(ctx->base, -1, EV_PERSIST, usage_on_timer, u);
    if (u->pending == NULL || u->timer == NULL) {
        px_usage_free(u);
        return NULL;
    }
    struct timeval tv = {ctx->cfg.usage_flush_ms / 1000, (ctx->cfg.usage_flush_ms % 1000) * 1000};
    event_add(u->timer, &tv);
    return u;
}

void px_usage_free(struct px_usage *u)
{
    if (u == NULL)
        return;
    size_t lost = px_usage_pending(u);
    if (lost > 0)
        ap_error(NULL, "usage: %zu counter updates could not be written to Redis before exit", lost);
    if (u->timer != NULL)
        event_free(u->timer);
    ap_batch_free(u->inflight);
    ap_delta_free(u->pending);
    free(u);
}

void px_usage_record(struct px_usage *u, const char *key_id, const char *model,
                     const struct ap_usage *usage, int ok)
{
    struct ap_usage_rec r = {
        .key_id = key_id,
        .model = model,
        .usage = *usage,
        .when_ms = ap_now_ms(),
        .tz_offset = u->ctx->cfg.tz_offset,
        .ok = ok,
    };
    if (ap_store_record(u->pending, &r) < 0)
        ap_error(NULL, "usage: out of memory recording a request of key %s", key_id);
}

size_t px_usage_pending(const struct px_usage *u)
{
    return ap_delta_count(u->pending) + (u->inflight ? u->inflight->nops : 0);
}

void px_usage_kick(struct px_usage *u)
{
    usage_send(u);
}
