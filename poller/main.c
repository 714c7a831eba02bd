/*
 * api-poller: polls the upstream's /health, aggregates quota into Redis and
 * publishes changes, so every proxy replica switches tiers together. Run one
 * or more: a lease in Redis makes exactly one active. SIGHUP re-reads
 * FALLBACK_CONFIG; SIGTERM/SIGINT release the lease and exit 0.
 */
#include "pl.h"

#include "ap_curl.h"
#include "ap_env.h"
#include "ap_fallback.h"
#include "ap_file.h"
#include "ap_keys.h"
#include "ap_log.h"
#include "ap_store.h"

#include <cJSON.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pl_config_load(struct pl_config *c)
{
    int bad = 0;
    memset(c, 0, sizeof(*c));
    snprintf(c->upstream_url, sizeof(c->upstream_url), "%s", ap_env_str("UPSTREAM_URL", "http://localhost:8080"));
    size_t ul = strlen(c->upstream_url);
    while (ul > 0 && c->upstream_url[ul - 1] == '/')
        c->upstream_url[--ul] = '\0';
    if (strncmp(c->upstream_url, "http://", 7) != 0 && strncmp(c->upstream_url, "https://", 8) != 0) {
        ap_error(NULL, "config: UPSTREAM_URL must start with http:// or https://");
        bad = 1;
    }
    const char *k = ap_env_str("UPSTREAM_API_KEY", NULL);
    c->upstream_api_key = k ? strdup(k) : NULL;
    if (ap_redis_url_parse(ap_env_str("REDIS_URL", "redis://127.0.0.1:6379/0"), &c->redis) < 0) {
        ap_error(NULL, "config: REDIS_URL is not of the form redis://[[user]:password@]host[:port][/db]");
        bad = 1;
    }
    if (ap_sentinel_cfg_env(&c->sentinel) < 0)
        bad = 1;
    snprintf(c->redis_prefix, sizeof(c->redis_prefix), "%s", ap_env_str("REDIS_PREFIX", "ap:"));
    snprintf(c->fallback_path, sizeof(c->fallback_path), "%s", ap_env_str("FALLBACK_CONFIG", "./fallback.json"));
    c->interval_from_env = ap_env_str("POLL_INTERVAL_SECONDS", NULL) != NULL;
    if (ap_env_double("POLL_INTERVAL_SECONDS", 30, 0.05, 86400, &c->interval_s) < 0)
        bad = 1;
    if (ap_env_long("POLLER_PORT", 0, 0, 65535, &c->http_port) < 0)
        bad = 1;
    snprintf(c->http_bind, sizeof(c->http_bind), "%s", ap_env_str("POLLER_BIND", "0.0.0.0"));
    const char *iid = ap_env_str("INSTANCE_ID", NULL);
    if (iid != NULL) {
        snprintf(c->instance_id, sizeof(c->instance_id), "%s", iid);
    } else {
        char host[32] = "poller", rnd[9];
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        if (ap_random_hex(rnd, 4) < 0)
            bad = 1;
        snprintf(c->instance_id, sizeof(c->instance_id), "poller-%s-%d-%s", host, (int)getpid(), rnd);
    }
    return bad ? -1 : 0;
}

int pl_load_fallback(struct pl_ctx *ctx)
{
    char *text, err[512];
    size_t len;
    if (ap_file_read(ctx->cfg.fallback_path, &text, &len) < 0) {
        ap_error(NULL, "FALLBACK_CONFIG: cannot read %s: %s", ctx->cfg.fallback_path, strerror(errno));
        return -1;
    }
    struct ap_fallback *f = ap_fallback_parse(text, len, err, sizeof(err));
    if (f == NULL) {
        ap_error(NULL, "FALLBACK_CONFIG: %s: %s", ctx->cfg.fallback_path, err);
        free(text);
        return -1;
    }
    ap_fallback_free(ctx->fallback);
    free(ctx->fallback_text);
    ctx->fallback = f;
    ctx->fallback_text = text;
    if (!ctx->cfg.interval_from_env)
        ctx->cfg.interval_s = f->poll_interval;
    /* Past this a poll is late for the next one anyway. */
    ctx->cfg.timeout_ms = (long)(ctx->cfg.interval_s * 1000) < 10000 ? (long)(ctx->cfg.interval_s * 1000) : 10000;
    if (ctx->cfg.timeout_ms < 100)
        ctx->cfg.timeout_ms = 100;
    ap_info(NULL, "fallback chain: %zu tiers, fallback %s, poll every %.3gs", f->ntiers, f->enabled ? "on" : "off",
            ctx->cfg.interval_s);
    return 0;
}

/* Every quarter interval (the first one soon after start, so a fresh fleet gets data at once). */
static void main_arm_tick(struct pl_ctx *ctx, long ms)
{
    if (ms < 0) {
        ms = (long)(ctx->cfg.interval_s * 250);
        if (ms < 20)
            ms = 20;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_del(ctx->tick);
    event_add(ctx->tick, &tv);
}

static void main_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct pl_ctx *ctx = arg;
    (void)fd;
    (void)what;
    main_arm_tick(ctx, -1);
    pl_lease_tick(ctx);
}

/* Cluster events: only a newly stored Lark user token concerns the poller. */
static void main_on_event(struct ap_redis *r, const char *payload, size_t len, void *arg)
{
    struct pl_ctx *ctx = arg;
    (void)r;
    cJSON *ev = cJSON_ParseWithLength(payload, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "lark_token") == 0)
        pl_lark_kick(ctx->lark);
    cJSON_Delete(ev);
}

/* Pub/sub dropped whatever was published while Redis was away. */
static void main_on_redis_up(struct ap_redis *r, void *arg)
{
    struct pl_ctx *ctx = arg;
    (void)r;
    pl_lark_kick(ctx->lark);
}

static void main_on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct pl_ctx *ctx = arg;
    (void)sig;
    (void)what;
    ap_info(NULL, "SIGHUP: reloading %s", ctx->cfg.fallback_path);
    if (pl_load_fallback(ctx) == 0) {
        main_arm_tick(ctx, -1);
        pl_push_config(ctx);
    }
}

static void main_on_term_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopexit(arg, NULL);
}

static void main_on_term(evutil_socket_t sig, short what, void *arg)
{
    struct pl_ctx *ctx = arg;
    (void)what;
    if (ctx->draining) {
        event_base_loopexit(ctx->base, NULL);
        return;
    }
    ap_info(NULL, "signal %d: releasing the lease and exiting", (int)sig);
    ctx->draining = 1;
    event_del(ctx->tick);
    pl_lease_release(ctx);
    /* Give the release a moment to reach Redis. */
    struct timeval tv = {0, 200000};
    event_base_once(ctx->base, -1, EV_TIMEOUT, main_on_term_done, ctx->base, &tv);
}

int main(int argc, char **argv)
{
    static struct pl_ctx ctx;
    static const struct ap_redis_cbs redis_cbs = {
        .on_up = main_on_redis_up, .on_message = main_on_event, .arg = &ctx};
    struct event *sig[3] = {NULL, NULL, NULL};
    char channel[128];
    struct evhttp *http = NULL;
    int rc = 1;
    (void)argv;
    ap_log_init("poller");
    if (argc > 1) {
        fprintf(stderr, "usage: api-poller (configured by environment variables, see README.md)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pl_config_load(&ctx.cfg) < 0 || pl_load_fallback(&ctx) < 0)
        goto out;
    ap_store_set_prefix(ctx.cfg.redis_prefix);
    ctx.base = event_base_new();
    if (ctx.base == NULL)
        goto out;
    ctx.curl = ap_curl_new(ctx.base);
    char name[96];
    snprintf(name, sizeof(name), "api-poller:%s", ctx.cfg.instance_id);
    /* Subscribed to the events channel: the proxy's OAuth callback announces a new Lark token there. */
    ap_store_key(channel, sizeof(channel), "events");
    struct ap_redis_opts ro = {channel, name, &ctx.cfg.sentinel, 1};
    ctx.redis = ap_redis_new(ctx.base, &ctx.cfg.redis, &ro, &redis_cbs);
    ctx.tick = event_new(ctx.base, -1, 0, main_on_tick, &ctx);
    ctx.lark = pl_lark_new(&ctx);
    sig[0] = evsignal_new(ctx.base, SIGTERM, main_on_term, &ctx);
    sig[1] = evsignal_new(ctx.base, SIGINT, main_on_term, &ctx);
    sig[2] = evsignal_new(ctx.base, SIGHUP, main_on_hup, &ctx);
    if (ctx.curl == NULL || ctx.redis == NULL || ctx.tick == NULL || ctx.lark == NULL || !sig[0] ||
        !sig[1] || !sig[2])
        goto out;
    for (int i = 0; i < 3; i++)
        event_add(sig[i], NULL);
    if (pl_http_start(&ctx, &http) < 0)
        goto out;
    ap_redis_start(ctx.redis);
    main_arm_tick(&ctx, 100);
    ap_info(NULL, "api-poller %s up: upstream %s, redis %s%s", ctx.cfg.instance_id, ctx.cfg.upstream_url,
            ctx.cfg.sentinel.n ? "through Sentinel, master " : "",
            ctx.cfg.sentinel.n ? ctx.cfg.sentinel.master : ap_redis_master(ctx.redis));
    event_base_dispatch(ctx.base);
    ap_info(NULL, "stopped");
    rc = 0;
out:
    if (rc != 0)
        ap_error(NULL, "startup failed; exiting");
    pl_poll_abort(&ctx);
    if (http)
        evhttp_free(http);
    for (int i = 0; i < 3; i++)
        if (sig[i])
            event_free(sig[i]);
    if (ctx.tick)
        event_free(ctx.tick);
    ap_redis_free(ctx.redis); /* first: its pending callbacks still use lark */
    pl_lark_free(ctx.lark);
    ap_curl_free(ctx.curl);
    if (ctx.base)
        event_base_free(ctx.base);
    ap_fallback_free(ctx.fallback);
    free(ctx.fallback_text);
    ap_quota_free(&ctx.quota);
    free(ctx.cfg.upstream_api_key);
    curl_global_cleanup();
    return rc;
}
