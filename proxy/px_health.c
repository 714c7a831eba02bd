/* GET /health: liveness plus what an operator needs to see at a glance. */
#include "px_policy.h"

#include "ap_fallback.h"
#include "ap_version.h"
#include "ap_prices.h"

#include <cJSON.h>

void px_health_handle(struct px_ctx *ctx, struct px_hreq *req)
{
    int up = ap_redis_up(ctx->redis);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "status", up ? "ok" : "degraded");
    cJSON_AddStringToObject(doc, "upstream", ctx->cfg.upstream_shown);
    cJSON_AddBoolToObject(doc, "fallback_enabled", ctx->fallback->enabled);
    cJSON_AddNumberToObject(doc, "tiers", (double)ctx->fallback->ntiers);
    cJSON_AddStringToObject(doc, "redis", up ? "up" : "down");
    /* Where the master is (never the password), and how often it moved since this process started. */
    cJSON_AddStringToObject(doc, "redis_master", ap_redis_master(ctx->redis));
    cJSON_AddNumberToObject(doc, "redis_failovers", (double)ap_redis_stats(ctx->redis)->failovers);
    cJSON_AddStringToObject(doc, "instance", ctx->cfg.instance_id);
    cJSON_AddStringToObject(doc, "version", ap_version);
    cJSON_AddNumberToObject(doc, "usage_pending", (double)px_usage_pending(ctx->usage));
    cJSON_AddNumberToObject(doc, "usage_unreplicated", (double)px_usage_unreplicated(ctx->usage));
    cJSON_AddNumberToObject(doc, "active_requests", ctx->stats.active);
    cJSON_AddNumberToObject(doc, "connections", (double)px_http_connections(ctx));
    cJSON_AddNumberToObject(doc, "cached_keys", (double)px_keys_count(ctx->keys));
    const struct px_policy_stats *ps = px_policy_stats(ctx->policy);
    cJSON *pol = cJSON_AddObjectToObject(doc, "policy");
    cJSON_AddStringToObject(pol, "fail_mode", ctx->cfg.policy_fail_open ? "open" : "closed");
    cJSON_AddNumberToObject(pol, "checked", (double)ps->checked);
    cJSON_AddNumberToObject(pol, "unchecked", (double)ps->unchecked);
    cJSON_AddNumberToObject(pol, "refused_unavailable", (double)ps->refused[AP_REFUSE_UNAVAILABLE]);
    cJSON_AddNumberToObject(pol, "leases", (double)ps->leases);
    cJSON_AddNumberToObject(pol, "prices", (double)ap_prices_count(ctx->prices));
    if (ctx->draining)
        cJSON_AddBoolToObject(doc, "draining", 1);
    px_reply_json(req, up && !ctx->draining ? 200 : 503, doc);
}
