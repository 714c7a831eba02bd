/*
 * GET /metrics: Prometheus text for this replica. Request-level counters and
 * histograms are fed as requests finish; gauges are read at scrape time.
 */
#include "px_policy.h"

#include "ap_metrics.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

static struct ap_metrics *metrics;

/*
 * The series each request feeds, remembered for the labels they had last: a
 * replica answers the same route, status, tier and model most of the time,
 * so the label string is built and looked up only when one of them changes.
 */
struct metrics_memo_req {
    const char *route;              /* a literal of the caller's */
    int status;
    char tier[160], model[256];
    struct ap_metrics_series *s;    /* NULL: nothing remembered */
};

static struct metrics_memo_req memo_req;

static struct {
    char tier[160];
    struct ap_metrics_series *total, *ttfb; /* total NULL: nothing remembered */
} memo_up;

static struct ap_metrics_series *memo_tokens[4];

int px_metrics_init(void)
{
    metrics = ap_metrics_new();
    if (metrics == NULL)
        return -1;
    int rc = 0;
    rc |= ap_metrics_define(metrics, "ap_requests_total", AP_COUNTER,
                            "Requests answered, by route, status, tier and model.");
    rc |= ap_metrics_define(metrics, "ap_upstream_seconds", AP_HISTOGRAM,
                            "Upstream request duration, from sending to the last byte.");
    rc |= ap_metrics_define(metrics, "ap_upstream_ttfb_seconds", AP_HISTOGRAM,
                            "Time from sending the upstream request to its response headers.");
    rc |= ap_metrics_define(metrics, "ap_tokens_total", AP_COUNTER, "Tokens counted, by kind.");
    rc |= ap_metrics_define(metrics, "ap_fallback_switches_total", AP_COUNTER,
                            "Requests served by another tier than the one asked for, by kind.");
    rc |= ap_metrics_define(metrics, "ap_active_requests", AP_GAUGE, "Proxied requests in flight.");
    rc |= ap_metrics_define(metrics, "ap_active_streams", AP_GAUGE, "Streamed replies in flight.");
    rc |= ap_metrics_define(metrics, "ap_usage_pending", AP_GAUGE, "Usage counter updates waiting for Redis.");
    rc |= ap_metrics_define(metrics, "ap_redis_up", AP_GAUGE, "1 when Redis is reachable.");
    rc |= ap_metrics_define(metrics, "ap_redis_connects_total", AP_COUNTER, "Successful Redis (re)connections.");
    rc |= ap_metrics_define(metrics, "ap_redis_errors_total", AP_COUNTER,
                            "Failed Redis connects and lost connections.");
    rc |= ap_metrics_define(metrics, "ap_redis_failovers_total", AP_COUNTER,
                            "Times the Redis connection came up on another master (Sentinel failovers seen).");
    rc |= ap_metrics_define(metrics, "ap_usage_unreplicated", AP_GAUGE,
                            "Usage counter updates written to the master that no replica acknowledged yet.");
    rc |= ap_metrics_define(metrics, "ap_cached_keys", AP_GAUGE, "API keys verified and cached here.");
    rc |= ap_metrics_define(metrics, "ap_upstream_errors_total", AP_COUNTER,
                            "Upstream transfers that failed (refused, reset, timeout).");
    rc |= ap_metrics_define(metrics, "ap_client_connections", AP_GAUGE, "Client connections open now.");
    rc |= ap_metrics_define(metrics, "ap_connections_refused_total", AP_COUNTER,
                            "Client connections turned away (MAX_CONNECTIONS, or out of descriptors).");
    rc |= ap_metrics_define(metrics, "ap_policy_refused_total", AP_COUNTER,
                            "Requests refused by their key's policy, by reason.");
    rc |= ap_metrics_define(metrics, "ap_policy_admissions_total", AP_COUNTER,
                            "Admissions of keys with counted limits: checked by Redis, or unchecked while it "
                            "was unreachable (POLICY_FAIL_MODE=open).");
    rc |= ap_metrics_define(metrics, "ap_policy_leases", AP_GAUGE,
                            "Admissions in flight whose leases (concurrency slots, reservations) this replica renews.");
    rc |= ap_metrics_define(metrics, "ap_policy_fail_mode", AP_GAUGE,
                            "POLICY_FAIL_MODE in force (1 for the mode named by the label).");
    return rc < 0 ? -1 : 0;
}

void px_metrics_free(void)
{
    ap_metrics_free(metrics);
    metrics = NULL;
    /* The handles went with the registry. */
    memset(&memo_req, 0, sizeof(memo_req));
    memset(&memo_up, 0, sizeof(memo_up));
    memset(memo_tokens, 0, sizeof(memo_tokens));
}

/* Copies `v` into a memo field of size n; 0 when it did not fit (then it is not remembered). */
static int metrics_memo_copy(char *dst, size_t n, const char *v)
{
    size_t l = strlen(v);
    if (l >= n)
        return 0;
    memcpy(dst, v, l + 1);
    return 1;
}

void px_metrics_request(const char *route, int status, const char *tier, const char *model)
{
    struct metrics_memo_req *c = &memo_req;
    int keep = 1;
    tier = tier ? tier : "";
    model = model ? model : "";
    if (c->s == NULL || c->route != route || c->status != status || strcmp(c->tier, tier) != 0 ||
        strcmp(c->model, model) != 0) {
        char labels[512], t[160], m[256];
        snprintf(labels, sizeof(labels), "route=\"%s\",status=\"%d\",tier=\"%s\",model=\"%s\"", route, status,
                 ap_metrics_label(t, sizeof(t), tier), ap_metrics_label(m, sizeof(m), model));
        c->s = ap_metrics_series(metrics, "ap_requests_total", labels);
        c->route = route;
        c->status = status;
        keep = metrics_memo_copy(c->tier, sizeof(c->tier), tier) && metrics_memo_copy(c->model, sizeof(c->model), model);
    }
    ap_metrics_series_add(c->s, 1);
    if (!keep)
        c->s = NULL; /* too long to remember: looked up again next time */
}

void px_metrics_upstream(const char *tier, double total_s, double ttfb_s)
{
    int keep = 1;
    tier = tier ? tier : "";
    if (memo_up.total == NULL || strcmp(memo_up.tier, tier) != 0) {
        char labels[200], t[160];
        snprintf(labels, sizeof(labels), "tier=\"%s\"", ap_metrics_label(t, sizeof(t), tier));
        memo_up.total = ap_metrics_series(metrics, "ap_upstream_seconds", labels);
        memo_up.ttfb = ap_metrics_series(metrics, "ap_upstream_ttfb_seconds", labels);
        keep = metrics_memo_copy(memo_up.tier, sizeof(memo_up.tier), tier);
    }
    ap_metrics_series_observe(memo_up.total, total_s);
    if (ttfb_s >= 0)
        ap_metrics_series_observe(memo_up.ttfb, ttfb_s);
    if (!keep)
        memo_up.total = NULL; /* too long to remember: looked up again next time */
}

void px_metrics_tokens(const struct ap_usage *u)
{
    static const char *const kinds[4] = {"kind=\"input\"", "kind=\"output\"", "kind=\"cache_read\"",
                                         "kind=\"cache_creation\""};
    const double v[4] = {(double)u->input, (double)u->output, (double)u->cache_read, (double)u->cache_creation};
    for (int i = 0; i < 4; i++) {
        if (memo_tokens[i] == NULL)
            memo_tokens[i] = ap_metrics_series(metrics, "ap_tokens_total", kinds[i]);
        ap_metrics_series_add(memo_tokens[i], v[i]);
    }
}

void px_metrics_switch(const char *kind)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "kind=\"%s\"", kind);
    ap_metrics_add(metrics, "ap_fallback_switches_total", labels, 1);
}

/* Policy counters live in px_policy (it must not depend on us); rendered from its stats here. */
static void metrics_policy(const struct px_policy_stats *ps)
{
    char labels[64];
    for (int r = AP_REFUSE_NONE + 1; r < AP_REFUSE_COUNT; r++) {
        struct ap_refusal_fmt f;
        ap_policy_refusal((enum ap_refusal)r, 0, &f);
        if (ps->refused[r] == 0)
            continue; /* only reasons that happened, as before */
        snprintf(labels, sizeof(labels), "reason=\"%s\"", f.reason);
        ap_metrics_set(metrics, "ap_policy_refused_total", labels, (double)ps->refused[r]);
    }
    ap_metrics_set(metrics, "ap_policy_admissions_total", "result=\"checked\"", (double)ps->checked);
    if (ps->unchecked)
        ap_metrics_set(metrics, "ap_policy_admissions_total", "result=\"unchecked\"", (double)ps->unchecked);
    ap_metrics_set(metrics, "ap_policy_leases", "", (double)ps->leases);
}

void px_metrics_handle(struct px_ctx *ctx, struct px_hreq *req)
{
    const struct ap_redis_stats *rs = ap_redis_stats(ctx->redis);
    ap_metrics_set(metrics, "ap_active_requests", "", ctx->stats.active);
    ap_metrics_set(metrics, "ap_active_streams", "", ctx->stats.streams);
    ap_metrics_set(metrics, "ap_usage_pending", "", (double)px_usage_pending(ctx->usage));
    ap_metrics_set(metrics, "ap_redis_up", "", ap_redis_up(ctx->redis));
    ap_metrics_set(metrics, "ap_redis_connects_total", "", (double)rs->connects);
    ap_metrics_set(metrics, "ap_redis_errors_total", "", (double)(rs->failures + rs->timeouts));
    ap_metrics_set(metrics, "ap_redis_failovers_total", "", (double)rs->failovers);
    ap_metrics_set(metrics, "ap_usage_unreplicated", "", (double)px_usage_unreplicated(ctx->usage));
    ap_metrics_set(metrics, "ap_cached_keys", "", (double)px_keys_count(ctx->keys));
    ap_metrics_set(metrics, "ap_upstream_errors_total", "", (double)ctx->stats.upstream_errors);
    ap_metrics_set(metrics, "ap_client_connections", "", (double)px_http_connections(ctx));
    ap_metrics_set(metrics, "ap_connections_refused_total", "", (double)px_http_refused(ctx));
    metrics_policy(px_policy_stats(ctx->policy));
    ap_metrics_set(metrics, "ap_policy_fail_mode", "mode=\"open\"", ctx->cfg.policy_fail_open);
    ap_metrics_set(metrics, "ap_policy_fail_mode", "mode=\"closed\"", !ctx->cfg.policy_fail_open);
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        return;
    }
    ap_metrics_render(metrics, b);
    px_hreq_add_header(req, "Content-Type", "text/plain; version=0.0.4");
    px_hreq_send_buf(req, 200, b);
    evbuffer_free(b);
}
