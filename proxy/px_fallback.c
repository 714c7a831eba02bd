/*
 * The replica's copy of the cluster's fallback state: the tier chain, the
 * poller's quota report and the reactive "exhausted" marks. Requests decide
 * from memory (ap_fallback_plan); the copy is kept current by pub/sub
 * events, which carry the new state itself (no round trip), and re-read in
 * full on every (re)subscribe, since pub/sub loses what is published while
 * we are disconnected. The poller publishes only changes, so the poll time
 * (which tells fresh data from stale) is re-read once per poll interval.
 */
#include "px.h"

#include "ap_fallback.h"
#include "ap_log.h"
#include "ap_quota.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct px_fallback {
    struct px_ctx *ctx;         /* borrowed */
    struct ap_quota quota;      /* owned */
    struct ap_marks marks;      /* owned */
    char *chain_text;           /* owned: the chain as last taken from Redis */
    struct event *refresh;      /* owned: re-reads the quota's poll time */
    uint64_t switches;          /* reactive marks this replica set */
};

static void fallback_arm(struct px_fallback *fb)
{
    double s = fb->quota.interval_s > 0 ? fb->quota.interval_s : fb->ctx->fallback->poll_interval;
    long ms = s < 0.1 ? 100 : s > 30 ? 30000 : (long)(s * 1000);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(fb->refresh, &tv);
}

static void fallback_on_quota(redisAsyncContext *ac, void *reply, void *priv);

static void fallback_on_refresh(evutil_socket_t fd, short what, void *arg)
{
    struct px_fallback *fb = arg;
    char key[128];
    (void)fd;
    (void)what;
    ap_store_key(key, sizeof(key), "quota");
    ap_redis_cmd(fb->ctx->redis, fallback_on_quota, fb, "GET %s", key);
    fallback_arm(fb);
}

struct px_fallback *px_fallback_new(struct px_ctx *ctx)
{
    struct px_fallback *fb = calloc(1, sizeof(*fb));
    if (fb == NULL)
        return NULL;
    fb->ctx = ctx;
    fb->refresh = evtimer_new(ctx->base, fallback_on_refresh, fb);
    if (fb->refresh == NULL) {
        free(fb);
        return NULL;
    }
    fallback_arm(fb);
    return fb;
}

void px_fallback_free(struct px_fallback *fb)
{
    if (fb == NULL)
        return;
    event_free(fb->refresh);
    ap_quota_free(&fb->quota);
    ap_marks_free(&fb->marks);
    free(fb->chain_text);
    free(fb);
}

/* Replaces the chain with the one in Redis, unless it is the same text or does not parse. */
static void fallback_take_chain(struct px_fallback *fb, const char *text, size_t len)
{
    char err[512];
    if (fb->chain_text != NULL && strlen(fb->chain_text) == len && memcmp(fb->chain_text, text, len) == 0)
        return;
    struct ap_fallback *f = ap_fallback_parse(text, len, err, sizeof(err));
    if (f == NULL) {
        ap_error(NULL, "fallback: the chain in Redis is unusable here (%s); keeping the current one", err);
        return;
    }
    char *copy = strndup(text, len);
    if (copy == NULL) {
        ap_fallback_free(f);
        return;
    }
    free(fb->chain_text);
    fb->chain_text = copy;
    /* Requests in flight keep their reference to the old chain. */
    ap_fallback_free(fb->ctx->fallback);
    fb->ctx->fallback = f;
    ap_info(NULL, "fallback: chain updated from Redis (%zu tiers, fallback %s)", f->ntiers, f->enabled ? "on" : "off");
}

static void fallback_take_quota(struct px_fallback *fb, const cJSON *j)
{
    struct ap_quota q = {0};
    if (ap_quota_from_json(j, &q) < 0) {
        ap_quota_free(&q);
        return;
    }
    ap_quota_free(&fb->quota);
    fb->quota = q;
}

static void fallback_on_quota(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_fallback *fb = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || rep->type != REDIS_REPLY_STRING)
        return;
    cJSON *j = cJSON_ParseWithLength(rep->str, rep->len);
    fallback_take_quota(fb, j);
    cJSON_Delete(j);
}

static void fallback_on_state(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_fallback *fb = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
        return;
    if (rep->element[0]->type == REDIS_REPLY_STRING)
        fallback_take_chain(fb, rep->element[0]->str, rep->element[0]->len);
    if (rep->element[1]->type == REDIS_REPLY_STRING) {
        cJSON *j = cJSON_ParseWithLength(rep->element[1]->str, rep->element[1]->len);
        fallback_take_quota(fb, j);
        cJSON_Delete(j);
    }
    const redisReply *m = rep->element[2];
    ap_marks_free(&fb->marks);
    for (size_t i = 0; m->type == REDIS_REPLY_ARRAY && i + 1 < m->elements; i += 2)
        if (m->element[i]->type == REDIS_REPLY_STRING)
            ap_marks_set(&fb->marks, m->element[i]->str, ap_reply_int(m->element[i + 1]));
}

void px_fallback_reload(struct px_fallback *fb)
{
    const char *argv[] = {"EVAL", ap_script_fallback_state, "0", ap_store_prefix()};
    ap_redis_argv(fb->ctx->redis, fallback_on_state, fb, 4, argv, NULL);
}

void px_fallback_on_event(struct px_fallback *fb, const char *type, const cJSON *ev)
{
    if (strcmp(type, "quota") == 0) {
        fallback_take_quota(fb, cJSON_GetObjectItemCaseSensitive(ev, "quota"));
    } else if (strcmp(type, "exhausted") == 0) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(ev, "model");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(ev, "until");
        if (cJSON_IsString(m) && cJSON_IsNumber(u)) {
            ap_marks_set(&fb->marks, m->valuestring, (int64_t)u->valuedouble);
            ap_info(NULL, "fallback: %s marked exhausted by another replica", m->valuestring);
        }
    } else if (strcmp(type, "config") == 0) {
        px_fallback_reload(fb);
    }
}

size_t px_fallback_plan(struct px_fallback *fb, const char *model, const struct ap_tier **out, size_t max)
{
    return ap_fallback_plan(fb->ctx->fallback, &fb->quota, &fb->marks, model, ap_now_ms(), out, max);
}

int px_fallback_usable(struct px_fallback *fb, const struct ap_tier *t)
{
    return ap_marks_until(&fb->marks, t->model, ap_now_ms()) == 0;
}

void px_fallback_mark(struct px_fallback *fb, const struct ap_tier *t, const char *why)
{
    const struct ap_fallback *f = fb->ctx->fallback;
    int64_t now = ap_now_ms();
    const struct ap_quota_model *q = ap_quota_find(&fb->quota, t->health_key);
    int64_t until = q != NULL && q->reset_ms > now ? q->reset_ms : now + (int64_t)(f->cooldown * 1000);
    if (until <= now)
        return; /* reactive_cooldown_seconds 0: the original's behaviour, no mark */
    ap_marks_set(&fb->marks, t->model, until);
    fb->switches++;
    ap_warn(NULL, "fallback: %s exhausted (%s); avoided for %llds on every replica", t->model, why,
            (long long)((until - now + 999) / 1000));

    char key[128], channel[128], until_s[24], now_s[24], msg[512], model[256];
    ap_log_json_str(model, sizeof(model), t->model);
    snprintf(msg, sizeof(msg), "{\"type\":\"exhausted\",\"model\":\"%s\",\"until\":%lld,\"by\":\"%s\"}", model,
             (long long)until, fb->ctx->cfg.instance_id);
    snprintf(until_s, sizeof(until_s), "%lld", (long long)until);
    snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
    ap_store_key(key, sizeof(key), "exhausted");
    ap_store_key(channel, sizeof(channel), "events");
    const char *argv[] = {"EVAL", ap_script_mark_exhausted, "0", key, t->model, until_s, channel, msg, now_s};
    ap_redis_argv(fb->ctx->redis, NULL, NULL, 9, argv, NULL);
}

uint64_t px_fallback_switches(const struct px_fallback *fb)
{
    return fb->switches;
}

const struct ap_quota *px_fallback_quota(const struct px_fallback *fb)
{
    return &fb->quota;
}

const struct ap_marks *px_fallback_marks(const struct px_fallback *fb)
{
    return &fb->marks;
}
