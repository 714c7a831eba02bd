/*
 * Cluster events from Redis pub/sub ({prefix}events), and what a replica
 * does when its Redis connection comes up or goes down. Pub/sub drops
 * messages while disconnected, so coming up re-reads everything an event
 * could have changed.
 */
#include "px_policy.h"

#include "ap_log.h"

#include <cJSON.h>
#include <string.h>

void px_events_on_message(struct ap_redis *r, const char *payload, size_t len, void *arg)
{
    struct px_ctx *ctx = arg;
    (void)r;
    cJSON *ev = cJSON_ParseWithLength(payload, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    if (!cJSON_IsString(type)) {
        ap_warn(NULL, "events: ignoring a malformed message (%zu bytes)", len);
    } else if (strcmp(type->valuestring, "key") == 0) {
        px_keys_on_event(ctx->keys, ev);
    } else {
        px_fallback_on_event(ctx->fb, type->valuestring, ev);
    }
    cJSON_Delete(ev);
}

void px_events_on_up(struct ap_redis *r, void *arg)
{
    struct px_ctx *ctx = arg;
    (void)r;
    px_keys_revalidate(ctx->keys);
    px_fallback_reload(ctx->fb);
    if (ctx->import != NULL)
        px_import_run(ctx->import);
    px_usage_kick(ctx->usage);
    px_fleet_beat(ctx->fleet);
    px_policy_on_up(ctx->policy);
}

void px_events_on_down(struct ap_redis *r, void *arg)
{
    struct px_ctx *ctx = arg;
    (void)r;
    ap_warn(NULL, "redis down: serving cached keys, holding %zu usage updates in memory",
            px_usage_pending(ctx->usage));
    px_usage_redis_down(ctx->usage);
}
