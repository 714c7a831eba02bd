/*
 * Proxied requests: intake, authentication, the choice of target, and the
 * end of the request (usage, access log, free). The transfer itself is
 * px_attempt.c.
 *
 *   px_relay_handle ─▶ validate body ─▶ auth (cache, else Redis) ─▶ relay_route
 *        ─▶ px_attempt_start ─▶ ... ─▶ px_relay_finish (exactly once)
 *
 * Routing (DESIGN.md sections 3 and 5): a model of the tier chain goes to
 * its tier in the tier's format (antigravity/upstream: Anthropic at
 * UPSTREAM_URL; external: OpenAI at its base_url); any other model goes to
 * UPSTREAM_URL in UPSTREAM_FORMAT. Other paths under /v1/ pass through as they are.
 */
#include "px_req.h"

#include "px_policy.h"

#include "ap_fallback.h"
#include "ap_jscan.h"
#include "ap_log.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void px_relay_reply_error(struct px_req *r, int status, const char *msg)
{
    r->reply_status = status;
    evhttp_add_header(evhttp_request_get_output_headers(r->ereq), "x-request-id", r->rid);
    px_reply_error(r->ereq, r->err_fmt, status, msg);
    r->ereq = NULL;
}

static const char *relay_method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OPTIONS";
    }
}

/* ---- where the request goes ---- */

static int relay_url(struct px_target *t, const char *base, const char *path, const char *query)
{
    int n = snprintf(t->url, sizeof(t->url), "%s%s%s%s", base, path, query ? "?" : "", query ? query : "");
    return n < 0 || (size_t)n >= sizeof(t->url) ? -1 : 0;
}

/* Fills r->target for `tier` (NULL: the configured upstream). -1 if the URL does not fit. */
static int relay_target(struct px_req *r, const struct ap_tier *tier)
{
    const struct px_config *c = &r->ctx->cfg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(r->ereq);
    struct px_target *t = &r->target;

    memset(t, 0, sizeof(*t));
    t->tier = tier;
    if (tier != NULL && tier->type == AP_TIER_EXTERNAL) {
        t->fmt = AP_FMT_OPENAI;
        t->auth = tier->api_key;
        t->model = tier->model;
        t->max_tokens_limit = tier->max_tokens_limit;
        t->external = 1;
        return relay_url(t, tier->base_url, "/chat/completions", NULL);
    }
    t->auth = c->upstream_api_key;
    if (tier != NULL) {
        t->fmt = AP_FMT_ANTHROPIC;
        t->model = tier->model;
    } else {
        t->fmt = c->upstream_openai ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC;
    }
    if (r->route == PX_ROUTE_PASS || t->fmt == r->client_fmt) {
        /* The client's own path and query (e.g. /v1/messages?beta=true). */
        t->raw_path = 1;
        return relay_url(t, c->upstream_url, evhttp_uri_get_path(u), evhttp_uri_get_query(u));
    }
    return relay_url(t, c->upstream_url, t->fmt == AP_FMT_OPENAI ? "/v1/chat/completions" : "/v1/messages", NULL);
}

static void relay_start_tier(struct px_req *r, const struct ap_tier *tier)
{
    if (relay_target(r, tier) < 0) {
        px_relay_reply_error(r, 414, "request target too long");
        px_relay_finish(r);
        return;
    }
    r->hold = px_relay_has_next(r);
    px_attempt_start(r);
}

/*
 * Proactive fallback: the plan is decided here, from memory. A model outside
 * the chain (or fallback disabled) still goes to its tier when the chain
 * names it, or to UPSTREAM_URL, unchanged.
 */
static void relay_route(struct px_req *r)
{
    r->chain = ap_fallback_ref(r->ctx->fallback);
    r->nplan = r->api ? px_fallback_plan(r->ctx->fb, r->model, r->plan, PX_MAX_TIERS) : 0;
    r->nplan = px_policy_filter(r->adm, r->plan, r->nplan); /* policy: tiers the key may not use */
    r->iplan = 0;
    if (r->nplan > 0 && strcmp(r->plan[0]->model, r->model) != 0) {
        ap_info(r->rid, "fallback: %s is unavailable, using %s", r->model, r->plan[0]->model);
        px_metrics_switch("proactive");
    }
    const struct ap_tier *tier = r->nplan > 0 ? r->plan[0] : r->api ? ap_fallback_find(r->chain, r->model) : NULL;
    relay_start_tier(r, tier);
}

int px_relay_has_next(const struct px_req *r)
{
    return r->iplan + 1 < r->nplan;
}

int px_relay_next(struct px_req *r, const char *why)
{
    while (r->iplan + 1 < r->nplan) {
        const struct ap_tier *t = r->plan[++r->iplan];
        if (!px_fallback_usable(r->ctx->fb, t))
            continue;
        ap_warn(r->rid, "fallback: %s failed (%s); retrying on %s", r->served_model, why, t->model);
        px_metrics_switch("reactive");
        px_attempt_reset(r);
        relay_start_tier(r, t);
        return 1;
    }
    return 0;
}

/* ---- intake ---- */

/*
 * Validates a Messages / Chat Completions body with a scan that builds no
 * tree (most bodies go upstream untouched); replies 400 and returns -1 when bad.
 */
static int relay_check_body(struct px_req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ereq);
    size_t len = evbuffer_get_length(in);
    struct ap_jscan js;
    if (evhttp_request_get_command(r->ereq) != EVHTTP_REQ_POST) {
        px_relay_reply_error(r, 405, "use POST");
        return -1;
    }
    const char *err = NULL;
    if (ap_jscan((const char *)evbuffer_pullup(in, -1), len, &js) < 0)
        err = "request body is not valid JSON";
    else if (js.root != AP_J_OBJECT)
        err = "request body must be a JSON object";
    else if (js.model == AP_J_ABSENT)
        err = "model: field required";
    else if (js.model != AP_J_STRING || js.model_len == 0)
        err = "model: must be a non-empty string";
    else if (js.model_len >= AP_MODEL_MAX)
        err = "model: too long";
    else if (js.stream != AP_J_ABSENT && js.stream != AP_J_TRUE && js.stream != AP_J_FALSE && js.stream != AP_J_NULL)
        err = "stream: must be a boolean";
    else if (js.stream_options != AP_J_ABSENT && js.stream_options != AP_J_OBJECT && js.stream_options != AP_J_NULL)
        err = "stream_options: must be an object";
    if (err != NULL) {
        px_relay_reply_error(r, 400, err);
        return -1;
    }
    r->api = 1;
    r->stream = js.stream == AP_J_TRUE;
    r->client_usage = js.include_usage == AP_J_TRUE;
    if (!js.model_escaped) {
        memcpy(r->model, js.model_raw, js.model_len);
        r->model[js.model_len] = '\0';
    } else {
        /* Rare: let cJSON decode the escapes of that one string. */
        cJSON *m = cJSON_ParseWithLength(js.model_raw - 1, js.model_len + 2);
        snprintf(r->model, sizeof(r->model), "%s", cJSON_IsString(m) ? m->valuestring : "");
        cJSON_Delete(m);
        if (r->model[0] == '\0') {
            px_relay_reply_error(r, 400, "model: must be a non-empty string");
            return -1;
        }
    }
    return 0;
}

cJSON *px_req_json(struct px_req *r)
{
    if (r->json == NULL && r->api && r->ereq != NULL) {
        struct evbuffer *in = evhttp_request_get_input_buffer(r->ereq);
        r->json = cJSON_ParseWithLength((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in));
    }
    return r->json;
}

/* policy: the key's verdict (px_policy.h); a refusal is already counted as refused. */
static void relay_on_admit(void *arg, const struct px_verdict *v)
{
    struct px_req *r = arg;
    if (v->status == 0) {
        relay_route(r);
        return;
    }
    r->counted = 1;
    r->reply_status = v->status;
    evhttp_add_header(evhttp_request_get_output_headers(r->ereq), "x-request-id", r->rid);
    px_policy_reply(r->ereq, r->err_fmt == PX_FMT_OPENAI, v);
    r->ereq = NULL;
    px_relay_finish(r);
}

static void relay_authorized(struct px_req *r)
{
    if (r->key.state == PX_KEY_DISABLED) {
        px_relay_reply_error(r, 403, "API key disabled");
        px_relay_finish(r);
    } else if (r->key.state != PX_KEY_ENABLED) {
        px_relay_reply_error(r, 401, "Invalid API key");
        px_relay_finish(r);
    } else {
        /* policy: admission (limits, allow-list, expiry) before routing */
        struct evbuffer *in = evhttp_request_get_input_buffer(r->ereq);
        struct px_policy_req q = {r->key_hash, r->key.id, r->api ? r->model : NULL, r->err_fmt == PX_FMT_OPENAI,
                                  r->api ? (const char *)evbuffer_pullup(in, -1) : NULL, evbuffer_get_length(in),
                                  r->rid};
        px_policy_admit(r->ctx, &q, &r->adm, relay_on_admit, r);
    }
}

static void relay_on_key(void *arg, int ok, const struct px_key_info *info)
{
    struct px_req *r = arg;
    if (!ok) {
        px_relay_reply_error(r, 503, "cannot verify the API key right now; try again shortly");
        px_relay_finish(r);
        return;
    }
    r->key = *info;
    relay_authorized(r);
}

void px_relay_handle(struct px_ctx *ctx, struct evhttp_request *req, enum px_route route)
{
    struct px_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        px_reply_error(req, PX_FMT_ANTHROPIC, 500, "out of memory");
        return;
    }
    r->ctx = ctx;
    r->ereq = req;
    r->evcon = evhttp_request_get_connection(req);
    r->route = route;
    r->client_fmt = route == PX_ROUTE_CHAT ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC;
    r->err_fmt = route == PX_ROUTE_CHAT ? PX_FMT_OPENAI : PX_FMT_ANTHROPIC;
    r->t0 = ap_mono_ms();
    r->key.state = PX_KEY_UNKNOWN;
    r->resp_headers.tqh_first = NULL;
    r->resp_headers.tqh_last = &r->resp_headers.tqh_first;
    px_request_id(req, r->rid);
    if (ap_log_enabled(AP_LOG_INFO)) /* the path is kept for the access log only */
        px_log_path(evhttp_request_get_uri(req), r->path, sizeof(r->path));
    r->method = relay_method_name(evhttp_request_get_command(req));
    r->body = evbuffer_new();
    r->chunk = evbuffer_new();
    ctx->stats.active++;
    if (r->body == NULL || r->chunk == NULL) {
        px_relay_reply_error(r, 500, "out of memory");
        px_relay_finish(r);
        return;
    }

    const char *key = px_request_key(req);
    if (key == NULL) {
        px_relay_reply_error(r, 401, "Missing API key");
        px_relay_finish(r);
        return;
    }
    ap_sha256_hex(key, strlen(key), r->key_hash);
    if ((route == PX_ROUTE_MESSAGES || route == PX_ROUTE_CHAT) && relay_check_body(r) < 0) {
        px_relay_finish(r);
        return;
    }
    if (px_keys_lookup(ctx->keys, r->key_hash, &r->key) == 0) {
        relay_authorized(r);
        return;
    }
    if (px_keys_fetch(ctx->keys, r->key_hash, relay_on_key, r) < 0) {
        px_relay_reply_error(r, 503, "cannot verify the API key right now; try again shortly");
        px_relay_finish(r);
    }
}

/* ---- the end ---- */

static void relay_log(struct px_req *r)
{
    if (!ap_log_enabled(AP_LOG_INFO))
        return;
    char fields[1024], model[AP_MODEL_MAX * 2], served[AP_MODEL_MAX * 2];
    ap_log_json_str(model, sizeof(model), r->model);
    ap_log_json_str(served, sizeof(served), r->served_model);
    snprintf(fields, sizeof(fields),
             "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"upstream_status\":%d,\"key\":\"%s\","
             "\"model\":\"%s\",\"served_model\":\"%s\",\"in\":%lld,\"out\":%lld,\"stream\":%s,"
             "\"client_gone\":%s,\"ms\":%lld",
             r->method, r->path, r->reply_status, r->status, r->key.id, model, served,
             (long long)r->usage.input, (long long)r->usage.output, r->started ? "true" : "false",
             r->client_gone ? "true" : "false", (long long)(ap_mono_ms() - r->t0));
    ap_log_fields(AP_LOG_INFO, r->rid, "request", fields);
}

/* Records the request's usage, once. */
static void relay_count(struct px_req *r)
{
    if (r->counted || r->key.state != PX_KEY_ENABLED || r->reply_status == 0)
        return;
    r->counted = 1;
    int ok = r->reply_status >= 200 && r->reply_status < 300;
    px_usage_record(r->ctx->usage, r->key.id, r->served_model[0] ? r->served_model : r->model, &r->usage, ok);
    px_policy_end(&r->adm, &r->usage); /* policy: settled in the same usage batch */
    if (ok)
        px_metrics_tokens(&r->usage);
}

static void relay_on_durable(void *arg)
{
    struct px_req *r = arg;
    r->waiting = 0;
    if (r->ereq != NULL)
        r->deliver(r);
    px_relay_finish(r);
}

void px_relay_complete(struct px_req *r, void (*deliver)(struct px_req *r))
{
    relay_count(r);
    r->deliver = deliver;
    if (r->counted && r->reply_status >= 200 && r->reply_status < 300 && r->ctx->cfg.usage_durable) {
        r->waiting = 1;
        px_usage_wait(r->ctx->usage, relay_on_durable, r); /* may run it at once */
        return;
    }
    deliver(r);
    px_relay_finish(r);
}

void px_relay_finish(struct px_req *r)
{
    if (r->finished)
        return;
    r->finished = 1;
    if (r->waiting)
        px_usage_cancel(r->ctx->usage, r);
    px_attempt_abort(r);
    const char *model = r->served_model[0] ? r->served_model : r->model;
    const char *tier = r->target.tier ? r->target.tier->name : r->t_sent ? "upstream" : "";
    relay_count(r);
    px_policy_end(&r->adm, &r->usage); /* policy: requests never counted */
    static const char *const routes[] = {"messages", "chat_completions", "passthrough"};
    px_metrics_request(routes[r->route], r->reply_status, tier, model);
    if (r->t_sent != 0) {
        int64_t now = ap_mono_ms();
        px_metrics_upstream(tier, (double)(now - r->t_sent) / 1000.0,
                            r->t_headers ? (double)(r->t_headers - r->t_sent) / 1000.0 : -1);
    }
    relay_log(r);
    r->ctx->stats.active--;
    px_attempt_reset(r);
    if (r->idle != NULL)
        event_free(r->idle);
    ap_fallback_free(r->chain);
    cJSON_Delete(r->json);
    if (r->body != NULL)
        evbuffer_free(r->body);
    if (r->chunk != NULL)
        evbuffer_free(r->chunk);
    free(r);
}
