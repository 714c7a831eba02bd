/*
 * Leadership: one active poller at a time, through a lease in Redis. Every tick, leader
 * or not, runs the same take-if-free-or-ours script. A leader whose lease lapsed (Redis
 * or this process stalled past the TTL) and that nobody else took therefore keeps leading
 * without a step down and a second start; it steps down only when another poller holds
 * the lease. A poller that cannot reach Redis is not the leader: it cannot publish anyway,
 * and its lease will lapse for a standby to take.
 */
#include "pl.h"

#include "ap_log.h"
#include "ap_store.h"

#include <stdio.h>

static long lease_ttl_ms(const struct pl_ctx *ctx)
{
    return (long)(ctx->cfg.interval_s * 1500);
}

static void lease_became(struct pl_ctx *ctx, int leader)
{
    if (ctx->leader == (unsigned)leader)
        return;
    ctx->leader = (unsigned)leader;
    ctx->stats.leader_changes++;
    if (leader) {
        ap_info(NULL, "poller %s: now the active poller", ctx->cfg.instance_id);
        pl_push_config(ctx);
        pl_poll_load_previous(ctx);
        ctx->next_poll_ms = 0; /* poll right away */
        pl_lark_kick(ctx->lark);
    } else {
        ap_warn(NULL, "poller %s: no longer the active poller", ctx->cfg.instance_id);
    }
}

static void lease_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct pl_ctx *ctx = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        lease_became(ctx, 0);
        return;
    }
    /* The script answers 1 (ours) or 0 (another poller's). */
    int ok = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    lease_became(ctx, ok);
    if (ok && !ctx->draining)
        pl_poll_start(ctx);
}

void pl_lease_tick(struct pl_ctx *ctx)
{
    char key[128], ttl[24];
    if (!ap_redis_up(ctx->redis)) {
        lease_became(ctx, 0);
        return;
    }
    ap_store_key(key, sizeof(key), "poller:leader");
    snprintf(ttl, sizeof(ttl), "%ld", lease_ttl_ms(ctx));
    const char *argv[] = {"EVAL", ap_script_lease_acquire, "0", key, ctx->cfg.instance_id, ttl};
    ap_redis_argv(ctx->redis, lease_on_reply, ctx, 6, argv, NULL);
}

void pl_lease_release(struct pl_ctx *ctx)
{
    char key[128];
    if (!ctx->leader)
        return;
    ap_store_key(key, sizeof(key), "poller:leader");
    const char *argv[] = {"EVAL", ap_script_lease_release, "0", key, ctx->cfg.instance_id};
    ap_redis_argv(ctx->redis, NULL, NULL, 5, argv, NULL);
    ctx->leader = 0;
}

void pl_push_config(struct pl_ctx *ctx)
{
    char key[128], channel[128];
    if (!ctx->leader || ctx->fallback_text == NULL)
        return;
    ap_store_key(key, sizeof(key), "fallback:config");
    ap_store_key(channel, sizeof(channel), "events");
    const char *argv[] = {"EVAL", ap_script_set_if_changed, "0", key, ctx->fallback_text, channel,
                          "{\"type\":\"config\"}"};
    ap_redis_argv(ctx->redis, NULL, NULL, 7, argv, NULL);
}
