/*
 * One poll of the upstream's /health: curl on the loop, aggregation, and
 * publication. The state goes to {p}quota on every poll (with its time, so
 * replicas can tell fresh data from stale), and an event goes out only when
 * something replicas act on changed. A failed poll keeps the last models and
 * says so; replicas treat data three intervals old as unknown.
 */
#include "pl.h"

#include "ap_curl.h"
#include "ap_fallback.h"
#include "ap_log.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct poll_xfer {
    struct pl_ctx *ctx;
    CURL *easy;
    struct curl_slist *hdrs;
    struct evbuffer *body;
};

static void poll_publish(struct pl_ctx *ctx, struct ap_quota *fresh)
{
    char key[128], channel[128];
    int changed = !ctx->have_quota || ap_quota_changed(fresh, &ctx->quota);
    cJSON *j = ap_quota_to_json(fresh);
    char *value = cJSON_PrintUnformatted(j);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", "quota");
    cJSON_AddItemToObject(ev, "quota", j);
    char *msg = changed ? cJSON_PrintUnformatted(ev) : NULL;
    cJSON_Delete(ev);
    if (value != NULL) {
        ap_store_key(key, sizeof(key), "quota");
        ap_store_key(channel, sizeof(channel), "events");
        const char *argv[] = {"EVAL", ap_script_set_publish, "0", key, value, channel, msg ? msg : ""};
        ap_redis_argv(ctx->redis, NULL, NULL, 7, argv, NULL);
        if (changed)
            ctx->stats.events++;
    }
    cJSON_free(value);
    cJSON_free(msg);
    ap_quota_free(&ctx->quota);
    ctx->quota = *fresh;
    ctx->have_quota = 1;
    memset(fresh, 0, sizeof(*fresh));
}

static void poll_xfer_free(struct poll_xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    if (x->body)
        evbuffer_free(x->body);
    curl_slist_free_all(x->hdrs);
    free(x);
}

void pl_poll_abort(struct pl_ctx *ctx)
{
    if (ctx->xfer == NULL)
        return;
    ap_curl_remove(ctx->curl, ctx->xfer->easy);
    poll_xfer_free(ctx->xfer);
    ctx->xfer = NULL;
    ctx->polling = 0;
}

static void poll_on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct poll_xfer *x = arg;
    struct pl_ctx *ctx = x->ctx;
    struct ap_quota fresh = {0};
    long status = 0;
    char err[160] = "";

    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    ctx->polling = 0;
    ctx->xfer = NULL;
    ctx->stats.polls++;
    size_t len = evbuffer_get_length(x->body);
    const char *body = (const char *)evbuffer_pullup(x->body, -1);
    if (rc != CURLE_OK)
        snprintf(err, sizeof(err), "%s", curl_easy_strerror(rc));
    else if (status != 200)
        snprintf(err, sizeof(err), "/health answered %ld", status);
    else if (ap_health_parse(body ? body : "", len, &fresh, err, sizeof(err)) == 0)
        err[0] = '\0';

    if (err[0] == '\0') {
        fresh.poll_ms = ap_now_ms();
        fresh.poll_ok = 1;
        ap_quota_settle(&fresh, ctx->have_quota ? &ctx->quota : NULL, ctx->fallback->min_remaining,
                        ctx->fallback->recovery_margin);
        ap_debug(NULL, "poll: %zu models", fresh.n);
    } else {
        ctx->stats.failures++;
        ap_warn(NULL, "poll of %s/health failed: %s (keeping the last data)", ctx->cfg.upstream_url, err);
        /* Same models and poll time as before: the data ages towards stale. */
        fresh.poll_ms = ctx->quota.poll_ms;
        for (size_t i = 0; ctx->have_quota && i < ctx->quota.n; i++) {
            struct ap_quota_model *m = realloc(fresh.m, (fresh.n + 1) * sizeof(*m));
            if (m == NULL)
                break;
            fresh.m = m;
            fresh.m[fresh.n++] = ctx->quota.m[i];
        }
        snprintf(fresh.error, sizeof(fresh.error), "%s", err);
    }
    fresh.interval_s = ctx->cfg.interval_s;
    if (ctx->leader)
        poll_publish(ctx, &fresh);
    ap_quota_free(&fresh);
    poll_xfer_free(x);
}

static size_t poll_on_write(char *data, size_t size, size_t n, void *arg)
{
    struct poll_xfer *x = arg;
    if (evbuffer_get_length(x->body) + size * n > (8u << 20))
        return 0; /* a /health this large is not one */
    evbuffer_add(x->body, data, size * n);
    return size * n;
}

void pl_poll_start(struct pl_ctx *ctx)
{
    int64_t now = ap_mono_ms();
    if (ctx->polling || ctx->loading_previous || now < ctx->next_poll_ms)
        return;
    ctx->next_poll_ms = now + (int64_t)(ctx->cfg.interval_s * 1000);
    struct poll_xfer *x = calloc(1, sizeof(*x));
    char url[1100], auth[1100];
    if (x == NULL || (x->easy = curl_easy_init()) == NULL || (x->body = evbuffer_new()) == NULL)
        goto fail;
    x->ctx = ctx;
    snprintf(url, sizeof(url), "%s/health", ctx->cfg.upstream_url);
    if (ctx->cfg.upstream_api_key != NULL) {
        snprintf(auth, sizeof(auth), "x-api-key: %s", ctx->cfg.upstream_api_key);
        x->hdrs = curl_slist_append(x->hdrs, auth);
    }
    curl_easy_setopt(x->easy, CURLOPT_URL, url);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, ctx->cfg.timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, ctx->cfg.timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, poll_on_write);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    if (ap_curl_add(ctx->curl, x->easy, poll_on_done, x) < 0)
        goto fail;
    ctx->polling = 1;
    ctx->xfer = x;
    return;
fail:
    ap_error(NULL, "poll: cannot start a request (out of memory?)");
    if (x != NULL)
        poll_xfer_free(x);
}

/* The first poll of a new leader waits for this: settling without the previous state would forget hysteresis. */
static void poll_on_previous(redisAsyncContext *ac, void *reply, void *priv)
{
    struct pl_ctx *ctx = priv;
    redisReply *rep = reply;
    (void)ac;
    ctx->loading_previous = 0;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING && !ctx->have_quota) {
        cJSON *j = cJSON_ParseWithLength(rep->str, rep->len);
        if (j != NULL && ap_quota_from_json(j, &ctx->quota) == 0)
            ctx->have_quota = 1;
        cJSON_Delete(j);
    }
    if (rep != NULL && ctx->leader && !ctx->draining)
        pl_poll_start(ctx);
}

void pl_poll_load_previous(struct pl_ctx *ctx)
{
    char key[128];
    ap_store_key(key, sizeof(key), "quota");
    if (ap_redis_cmd(ctx->redis, poll_on_previous, ctx, "GET %s", key) == 0)
        ctx->loading_previous = 1;
}
