/*
 * Tier chain as seen by this replica. For now the chain is the one loaded
 * from FALLBACK_CONFIG at startup; quota state arrives with the poller.
 */
#include "px.h"

#include "ap_fallback.h"

#include <cJSON.h>

void px_fallback_admin(struct px_ctx *ctx, struct evhttp_request *req)
{
    const struct ap_fallback *f = ctx->fallback;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddBoolToObject(doc, "enabled", f->enabled);
    cJSON *tiers = cJSON_AddArrayToObject(doc, "tiers");
    for (size_t i = 0; i < f->ntiers; i++) {
        const struct ap_tier *t = &f->tiers[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "model", t->model);
        cJSON_AddStringToObject(o, "type", ap_tier_type_name(t->type));
        cJSON_AddStringToObject(o, "remaining", t->type == AP_TIER_EXTERNAL ? "unlimited" : "unknown");
        cJSON_AddBoolToObject(o, "available", 1);
        cJSON_AddItemToArray(tiers, o);
    }
    cJSON_AddNullToObject(doc, "last_health_poll");
    px_reply_json(req, 200, doc);
}
