/*
 * GET /admin/fallback: the replica's view of the tier chain, its quota and
 * the exhausted marks (the state itself is px_fallback.c). No tier secrets.
 */
#include "px.h"

#include "ap_fallback.h"
#include "ap_quota.h"
#include "ap_time.h"

#include <cJSON.h>
#include <stdio.h>

static void fallback_add_time(cJSON *o, const char *name, int64_t ms, long tz)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    char iso[40];
    ap_time_iso((time_t)(ms / 1000), tz, iso, sizeof(iso));
    cJSON_AddStringToObject(o, name, iso);
}

void px_fallback_admin(struct px_ctx *ctx, struct px_hreq *req)
{
    const struct ap_quota *q0 = px_fallback_quota(ctx->fb);
    const struct ap_marks *marks = px_fallback_marks(ctx->fb);
    const struct ap_fallback *f = ctx->fallback;
    long tz = ctx->cfg.tz_offset;
    int64_t now = ap_now_ms();
    int stale = ap_quota_stale(q0, now);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddBoolToObject(doc, "enabled", f->enabled);
    cJSON *tiers = cJSON_AddArrayToObject(doc, "tiers");
    for (size_t i = 0; i < f->ntiers; i++) {
        const struct ap_tier *t = &f->tiers[i];
        const struct ap_quota_model *q = stale ? NULL : ap_quota_find(q0, t->health_key);
        cJSON *o = cJSON_CreateObject();
        char pct[16];
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "model", t->model);
        cJSON_AddStringToObject(o, "type", ap_tier_type_name(t->type));
        if (t->type == AP_TIER_EXTERNAL) {
            cJSON_AddStringToObject(o, "remaining", "unlimited");
        } else if (q == NULL) {
            cJSON_AddStringToObject(o, "remaining", "unknown");
        } else {
            snprintf(pct, sizeof(pct), "%.0f%%", q->fraction * 100);
            cJSON_AddStringToObject(o, "remaining", pct);
        }
        cJSON_AddBoolToObject(o, "available", ap_tier_available(t, q0, marks, now));
        if (q != NULL)
            cJSON_AddNumberToObject(o, "fraction", q->fraction);
        else
            cJSON_AddNullToObject(o, "fraction");
        fallback_add_time(o, "reset_time", q ? q->reset_ms : 0, tz);
        fallback_add_time(o, "exhausted_until", ap_marks_until(marks, t->model, now), tz);
        if (t->type != AP_TIER_EXTERNAL && q0->poll_ms > 0)
            cJSON_AddNumberToObject(o, "data_age_seconds", (double)(now - q0->poll_ms) / 1000.0);
        else
            cJSON_AddNullToObject(o, "data_age_seconds");
        cJSON_AddBoolToObject(o, "stale", t->type != AP_TIER_EXTERNAL && stale);
        cJSON_AddItemToArray(tiers, o);
    }
    fallback_add_time(doc, "last_health_poll", q0->poll_ms, tz);
    if (q0->poll_ms > 0)
        cJSON_AddNumberToObject(doc, "data_age_seconds", (double)(now - q0->poll_ms) / 1000.0);
    else
        cJSON_AddNullToObject(doc, "data_age_seconds");
    cJSON_AddBoolToObject(doc, "stale", stale || !q0->poll_ok);
    if (q0->error[0] != '\0')
        cJSON_AddStringToObject(doc, "last_poll_error", q0->error);
    cJSON_AddNumberToObject(doc, "min_remaining_fraction", f->min_remaining);
    cJSON_AddNumberToObject(doc, "recovery_margin", f->recovery_margin);
    cJSON_AddNumberToObject(doc, "reactive_cooldown_seconds", f->cooldown);
    px_reply_json(req, 200, doc);
}
