/*
 * The poller's own small HTTP server: GET /metrics (Prometheus text: polls,
 * failures, leader state, quota per model) and GET /health, for the load
 * balancer's and the operator's eyes. It reads state, never blocks.
 */
#include "pl.h"

#include "ap_metrics.h"
#include "ap_log.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

static void http_metrics(struct pl_ctx *ctx, struct evhttp_request *req)
{
    struct ap_metrics *m = ap_metrics_new();
    struct evbuffer *b = evbuffer_new();
    if (m == NULL || b == NULL) {
        ap_metrics_free(m);
        if (b)
            evbuffer_free(b);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    ap_metrics_define(m, "ap_poller_polls_total", AP_COUNTER, "Polls of the upstream's /health.");
    ap_metrics_define(m, "ap_poller_poll_failures_total", AP_COUNTER, "Polls that failed.");
    ap_metrics_define(m, "ap_poller_events_total", AP_COUNTER, "Quota change events published.");
    ap_metrics_define(m, "ap_poller_leader", AP_GAUGE, "1 when this poller is the active one.");
    ap_metrics_define(m, "ap_poller_leader_changes_total", AP_COUNTER, "Times this poller gained or lost the lease.");
    ap_metrics_define(m, "ap_poller_last_poll_timestamp_seconds", AP_GAUGE, "Wall time of the last successful poll.");
    ap_metrics_define(m, "ap_poller_redis_failovers_total", AP_COUNTER,
                      "Times the Redis connection came up on another master (Sentinel failovers seen).");
    ap_metrics_define(m, "ap_quota_remaining_fraction", AP_GAUGE, "Max remainingFraction over accounts, by model.");
    ap_metrics_define(m, "ap_quota_available", AP_GAUGE, "1 when the model is usable (with hysteresis).");
    ap_metrics_set(m, "ap_poller_polls_total", "", (double)ctx->stats.polls);
    ap_metrics_set(m, "ap_poller_poll_failures_total", "", (double)ctx->stats.failures);
    ap_metrics_set(m, "ap_poller_events_total", "", (double)ctx->stats.events);
    ap_metrics_set(m, "ap_poller_leader", "", ctx->leader);
    ap_metrics_set(m, "ap_poller_leader_changes_total", "", (double)ctx->stats.leader_changes);
    ap_metrics_set(m, "ap_poller_last_poll_timestamp_seconds", "", (double)ctx->quota.poll_ms / 1000.0);
    ap_metrics_set(m, "ap_poller_redis_failovers_total", "", (double)ap_redis_stats(ctx->redis)->failovers);
    for (size_t i = 0; ctx->have_quota && i < ctx->quota.n; i++) {
        char labels[300], v[256];
        snprintf(labels, sizeof(labels), "model=\"%s\"", ap_metrics_label(v, sizeof(v), ctx->quota.m[i].model));
        ap_metrics_set(m, "ap_quota_remaining_fraction", labels, ctx->quota.m[i].fraction);
        ap_metrics_set(m, "ap_quota_available", labels, ctx->quota.m[i].available);
    }
    ap_metrics_render(m, b);
    ap_metrics_free(m);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void http_health(struct pl_ctx *ctx, struct evhttp_request *req)
{
    cJSON *doc = cJSON_CreateObject();
    int up = ap_redis_up(ctx->redis);
    cJSON_AddStringToObject(doc, "status", up ? "ok" : "degraded");
    cJSON_AddStringToObject(doc, "instance", ctx->cfg.instance_id);
    cJSON_AddBoolToObject(doc, "leader", ctx->leader);
    cJSON_AddBoolToObject(doc, "redis", up);
    cJSON_AddStringToObject(doc, "redis_master", ap_redis_master(ctx->redis));
    cJSON_AddNumberToObject(doc, "redis_failovers", (double)ap_redis_stats(ctx->redis)->failovers);
    cJSON_AddNumberToObject(doc, "last_poll_ms", (double)ctx->quota.poll_ms);
    cJSON_AddBoolToObject(doc, "last_poll_ok", ctx->quota.poll_ok);
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    struct evbuffer *b = evbuffer_new();
    if (s != NULL && b != NULL)
        evbuffer_add(b, s, strlen(s));
    cJSON_free(s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, up ? 200 : 503, NULL, b);
    if (b)
        evbuffer_free(b);
}

static void http_on_request(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (path != NULL && strcmp(path, "/metrics") == 0)
        http_metrics(arg, req);
    else if (path != NULL && strcmp(path, "/health") == 0)
        http_health(arg, req);
    else
        evhttp_send_error(req, 404, NULL);
}

int pl_http_start(struct pl_ctx *ctx, struct evhttp **out)
{
    *out = NULL;
    if (ctx->cfg.http_port == 0)
        return 0;
    struct evhttp *h = evhttp_new(ctx->base);
    if (h == NULL)
        return -1;
    evhttp_set_gencb(h, http_on_request, ctx);
    evhttp_set_allowed_methods(h, EVHTTP_REQ_GET);
    struct timeval tv = {10, 0};
    evhttp_set_timeout_tv(h, &tv);
    if (evhttp_bind_socket(h, ctx->cfg.http_bind, (ev_uint16_t)ctx->cfg.http_port) < 0) {
        ap_error(NULL, "cannot listen on %s:%ld", ctx->cfg.http_bind, ctx->cfg.http_port);
        evhttp_free(h);
        return -1;
    }
    *out = h;
    return 0;
}
