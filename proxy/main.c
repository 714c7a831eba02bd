/*
 * api-proxy: one stateless replica. Wires configuration, the event loop,
 * Redis, curl and the HTTP server together, and shuts down gracefully:
 * SIGTERM/SIGINT stop the listener, let in-flight requests and streams
 * finish (up to SHUTDOWN_GRACE_SECONDS), flush usage, exit 0.
 */
#include "px.h"
#include "px_policy.h"

#include "ap_curl.h"
#include "ap_fallback.h"
#include "ap_log.h"
#include "ap_prices.h"
#include "ap_store.h"

#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_POLL_MS 50
#define LEAVE_WAIT_MS 1000  /* how long the exit waits for Redis to take the fleet record away */

struct main_state {
    struct px_ctx ctx;
    struct event *sigterm;
    struct event *sigint;
    struct event *drain;        /* polls until in-flight work is done */
    int64_t drain_deadline_ms;  /* monotonic */
    int64_t leave_deadline_ms;  /* monotonic; 0 until the replica leaves the fleet */
};

static void main_on_left(void *arg)
{
    struct main_state *m = arg;
    event_base_loopexit(m->ctx.base, NULL);
}

static int64_t main_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void main_on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *m = arg;
    struct px_ctx *ctx = &m->ctx;
    (void)fd;
    (void)what;
    if (m->leave_deadline_ms != 0) {
        if (main_mono_ms() >= m->leave_deadline_ms)
            event_base_loopexit(ctx->base, NULL);
        return;
    }
    /* Answered is not delivered: a reply still in a connection's output buffer is waited for too. */
    int busy = ctx->stats.active > 0 || px_http_unsent(ctx) > 0;
    int unflushed = px_usage_pending(ctx->usage) > 0 && ap_redis_up(ctx->redis);
    if ((busy || unflushed) && main_mono_ms() < m->drain_deadline_ms) {
        px_usage_kick(ctx->usage);
        return;
    }
    if (busy)
        ap_warn(NULL, "shutdown: grace period over with %d requests in flight, %zu replies not all written",
                ctx->stats.active, px_http_unsent(ctx));
    m->leave_deadline_ms = main_mono_ms() + LEAVE_WAIT_MS;
    px_fleet_leave(ctx->fleet, main_on_left, m);
}

static void main_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct main_state *m = arg;
    struct px_ctx *ctx = &m->ctx;
    (void)what;
    if (ctx->draining) {
        ap_warn(NULL, "second signal: exiting now");
        event_base_loopexit(ctx->base, NULL);
        return;
    }
    ap_info(NULL, "signal %d: draining (%d requests in flight)", (int)sig, ctx->stats.active);
    ctx->draining = 1;
    px_http_stop_accepting(ctx);
    px_fleet_beat(ctx->fleet); /* the fleet sees it draining at once */
    m->drain_deadline_ms = main_mono_ms() + ctx->cfg.shutdown_grace_s * 1000;
    m->drain = event_new(ctx->base, -1, EV_PERSIST, main_on_drain, m);
    struct timeval tv = {0, DRAIN_POLL_MS * 1000};
    event_add(m->drain, &tv);
    main_on_drain(-1, 0, m);
}

static int main_setup(struct main_state *m)
{
    struct px_ctx *ctx = &m->ctx;
    char err[512];

    if (px_config_load(&ctx->cfg) < 0)
        return -1;
    ap_store_set_prefix(ctx->cfg.redis_prefix);
    ctx->fallback = ap_fallback_load(ctx->cfg.fallback_path, err, sizeof(err));
    if (ctx->fallback == NULL) {
        ap_error(NULL, "FALLBACK_CONFIG: %s", err);
        return -1;
    }
    if (ctx->cfg.prices_path[0] != '\0') {
        ctx->prices = ap_prices_load(ctx->cfg.prices_path, err, sizeof(err));
        if (ctx->prices == NULL) {
            ap_error(NULL, "PRICES_CONFIG: %s", err);
            return -1;
        }
    }
    if (ctx->cfg.keys_file[0] != '\0') {
        int failed;
        ctx->import = px_import_new(ctx, ctx->cfg.keys_file, &failed);
        if (failed)
            return -1;
    }
    ctx->admin_key = ctx->cfg.admin_key ? ctx->cfg.admin_key : (char *)px_import_admin_key(ctx->import);
    if (ctx->admin_key == NULL)
        ap_warn(NULL, "ADMIN_KEY is not set: the admin API will answer 503");

    /*
     * The changelist merges the del/add pairs that curl and bufferevents make on
     * the same descriptor within one loop turn into one epoll_ctl (or none).
     */
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return -1;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    ctx->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (ctx->base == NULL || px_metrics_init() < 0)
        return -1;
    ctx->curl = ap_curl_new(ctx->base);
    ctx->keys = px_keys_new(ctx);
    ctx->usage = px_usage_new(ctx);
    ctx->fb = px_fallback_new(ctx);
    ctx->lark = px_lark_new(ctx);
    ctx->fleet = px_fleet_new(ctx);
    ctx->policy = px_policy_new(ctx);
    char channel[128];
    ap_store_key(channel, sizeof(channel), "events");
    char name[96];
    snprintf(name, sizeof(name), "api-proxy:%s", ctx->cfg.instance_id);
    struct ap_redis_cbs cbs = {px_events_on_up, px_events_on_down, px_events_on_message, ctx};
    /* Usage batches and their WAIT get a lane of their own: WAIT blocks the connection it is sent on. */
    struct ap_redis_opts ro = {channel, name, &ctx->cfg.sentinel, ctx->cfg.redis_min_acks > 0 ? 2 : 1};
    ctx->redis = ap_redis_new(ctx->base, &ctx->cfg.redis, &ro, &cbs);
    if (ctx->curl == NULL || ctx->keys == NULL || ctx->usage == NULL || ctx->fb == NULL ||
        ctx->lark == NULL || ctx->fleet == NULL || ctx->policy == NULL || ctx->redis == NULL)
        return -1;
    ctx->dispatch = px_router_dispatch;
    if (px_http_start(ctx) < 0)
        return -1;
    ap_redis_start(ctx->redis);

    m->sigterm = evsignal_new(ctx->base, SIGTERM, main_on_signal, m);
    m->sigint = evsignal_new(ctx->base, SIGINT, main_on_signal, m);
    if (m->sigterm == NULL || m->sigint == NULL)
        return -1;
    event_add(m->sigterm, NULL);
    event_add(m->sigint, NULL);
    ap_info(NULL, "api-proxy %s up: upstream %s, redis %s%s (usage batches need %ld replica acks), %zu tiers "
            "(fallback %s), %zu prices, POLICY_FAIL_MODE=%s", ctx->cfg.instance_id, ctx->cfg.upstream_shown,
            ctx->cfg.sentinel.n ? "through Sentinel, master " : "",
            ctx->cfg.sentinel.n ? ctx->cfg.sentinel.master : ap_redis_master(ctx->redis), ctx->cfg.redis_min_acks,
            ctx->fallback->ntiers, ctx->fallback->enabled ? "on" : "off", ap_prices_count(ctx->prices),
            ctx->cfg.policy_fail_open ? "open" : "closed");
    return 0;
}

static void main_teardown(struct main_state *m)
{
    struct px_ctx *ctx = &m->ctx;
    if (m->drain)
        event_free(m->drain);
    if (m->sigterm)
        event_free(m->sigterm);
    if (m->sigint)
        event_free(m->sigint);
    /*
     * Redis first: its pending callbacks run now (with no reply) and answer
     * their requests, so the HTTP server and every callback's owner (usage,
     * keys, fallback, Lark) must still be alive.
     */
    ap_redis_free(ctx->redis);
    px_http_free(ctx);
    px_usage_free(ctx->usage);
    px_keys_free(ctx->keys);
    px_fallback_free(ctx->fb);
    px_lark_free(ctx->lark);
    px_fleet_free(ctx->fleet);
    px_policy_free(ctx->policy);
    ap_prices_free(ctx->prices);
    px_attempt_pool_free(ctx);
    ap_curl_free(ctx->curl);
    px_import_free(ctx->import);
    ap_fallback_free(ctx->fallback);
    if (ctx->base)
        event_base_free(ctx->base);
    px_config_free(&ctx->cfg);
    px_metrics_free();
}

int main(int argc, char **argv)
{
    static struct main_state m;
    (void)argv;
    ap_log_init("proxy");
    if (argc > 1) {
        fprintf(stderr, "usage: api-proxy (configured by environment variables, see README.md)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Every client stream holds two descriptors (client, upstream): take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /*
     * Request bodies of a few hundred KB are made contiguous once each; keep such
     * blocks in the heap for reuse instead of an mmap/munmap (and page faults) per request.
     */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ap_error(NULL, "curl_global_init failed");
        return 1;
    }
    int rc = 0;
    if (main_setup(&m) < 0) {
        ap_error(NULL, "startup failed; exiting");
        rc = 1;
    } else {
        event_base_dispatch(m.ctx.base);
        ap_info(NULL, "stopped");
    }
    main_teardown(&m);
    curl_global_cleanup();
    return rc;
}
