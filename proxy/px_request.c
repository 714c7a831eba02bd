/*
 * A proxied request's lifecycle: intake, authentication, the plan of tiers,
 * the verdict on each attempt's outcome, completion and the one place it
 * ends (see px_request.h for the ownership rules).
 */
#include "px_request.h"

#include "px_policy.h"

#include "ap_fallback.h"
#include "ap_jscan.h"
#include "ap_json.h"
#include "ap_log.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- references ---- */

void px_request_ref(struct px_request *r)
{
    r->refs++;
}

static void request_free(struct px_request *r)
{
    cJSON_free(r->send_body);
    ap_fallback_free(r->chain);
    cJSON_Delete(r->json);
    if (r->tail != NULL)
        evbuffer_free(r->tail);
    free(r);
}

void px_request_unref(struct px_request *r)
{
    if (--r->refs == 0)
        request_free(r);
}

static void request_complete(struct px_request *r);
static int request_has_next(const struct px_request *r);
static void request_drop_attempt(struct px_request *r);

/* ---- the end ---- */

static void request_log(struct px_request *r)
{
    if (!ap_log_enabled(AP_LOG_INFO))
        return;
    char fields[1536], path[512], model[AP_MODEL_MAX * 2], served[AP_MODEL_MAX * 2];
    /* Everything that came from outside is escaped: a path must not forge fields or break the line. */
    ap_log_json_str(path, sizeof(path), r->path);
    ap_log_json_str(model, sizeof(model), r->model);
    ap_log_json_str(served, sizeof(served), r->served_model);
    snprintf(fields, sizeof(fields),
             "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"upstream_status\":%d,\"key\":\"%s\","
             "\"model\":\"%s\",\"served_model\":\"%s\",\"in\":%lld,\"out\":%lld,\"stream\":%s,"
             "\"client_gone\":%s,\"ms\":%lld",
             r->method, path, r->reply_status, r->upstream_status, r->key.id, model, served,
             (long long)r->usage.input, (long long)r->usage.output, r->streamed ? "true" : "false",
             r->client_gone ? "true" : "false", (long long)(ap_mono_ms() - r->t0));
    ap_log_fields(AP_LOG_INFO, r->rid, "request", fields);
}

/* Records the request's usage, once. */
static void request_count(struct px_request *r)
{
    if (r->counted || r->key.state != PX_KEY_ENABLED || r->reply_status == 0)
        return;
    r->counted = 1;
    int ok = r->reply_status >= 200 && r->reply_status < 300;
    px_usage_record(r->ctx->usage, r->key.id, r->served_model[0] ? r->served_model : r->model, &r->usage, ok);
    px_policy_end(&r->adm, &r->usage); /* settled in the same usage batch */
    if (ok)
        px_metrics_tokens(&r->usage);
}

/* A model label from a bounded set: the chain's models, else "other" (unknown models are client input). */
static const char *request_metric_model(const struct px_request *r, const char *model)
{
    if (r->key.state != PX_KEY_ENABLED || model[0] == '\0')
        return "";
    return r->chain != NULL && ap_fallback_find(r->chain, model) != NULL ? model : "other";
}

void px_request_finish(struct px_request *r)
{
    if (r->finished)
        return;
    r->finished = 1;
    if (r->waiting) {
        px_usage_cancel(r->ctx->usage, r);
        r->waiting = 0;
        px_request_unref(r); /* the wait's reference; the request's own keeps it alive */
    }
    request_drop_attempt(r);
    if (r->hreq != NULL) {
        /* Not answered (a path that forgot to): never leave the client hanging. */
        struct px_hreq *h = r->hreq;
        r->hreq = NULL;
        px_hreq_on_close(h, NULL, NULL);
        px_hreq_on_drain(h, NULL, NULL);
        if (r->streamed) {
            px_hreq_end(h);
        } else {
            r->reply_status = 500;
            px_reply_error(h, r->err_fmt, 500, "internal error");
        }
    }
    request_count(r);
    px_policy_end(&r->adm, &r->usage); /* a request never counted (refused, failed before an answer) */
    static const char *const routes[] = {"messages", "chat_completions", "passthrough"};
    const char *model = request_metric_model(r, r->served_model[0] ? r->served_model : r->model);
    const char *tier = r->served_tier ? r->served_tier->name : r->t_sent ? "upstream" : "";
    px_metrics_request(routes[r->route], r->reply_status, tier, model);
    if (r->t_sent != 0) {
        int64_t now = ap_mono_ms();
        px_metrics_upstream(tier, (double)(now - r->t_sent) / 1000.0,
                            r->t_headers ? (double)(r->t_headers - r->t_sent) / 1000.0 : -1);
    }
    request_log(r);
    r->ctx->stats.active--;
    px_request_unref(r);
}

void px_request_fail(struct px_request *r, int status, const char *msg)
{
    if (r->hreq != NULL) {
        struct px_hreq *h = r->hreq;
        r->hreq = NULL;
        r->reply_status = status;
        px_hreq_on_close(h, NULL, NULL);
        px_hreq_on_drain(h, NULL, NULL);
        px_hreq_add_header(h, "x-request-id", r->rid);
        px_reply_error(h, r->err_fmt, status, msg);
    }
    px_request_finish(r);
}

/* The final bytes go out and the reply ends. */
static void request_deliver_tail(struct px_request *r)
{
    struct px_hreq *h = r->hreq;
    if (h == NULL)
        return;
    r->hreq = NULL;
    px_hreq_on_close(h, NULL, NULL);
    px_hreq_on_drain(h, NULL, NULL);
    if (r->streamed) {
        if (r->tail != NULL)
            px_hreq_chunk_buf(h, r->tail);
        px_hreq_end(h);
    } else {
        px_hreq_send_buf(h, r->reply_status, r->tail);
    }
}

static void request_on_durable(void *arg)
{
    struct px_request *r = arg;
    r->waiting = 0;
    if (!r->finished) {
        request_deliver_tail(r);
        px_request_finish(r);
    }
    px_request_unref(r);
}

static void request_complete(struct px_request *r)
{
    request_count(r);
    int ok = r->reply_status >= 200 && r->reply_status < 300;
    if (r->counted && ok && r->ctx->cfg.usage_durable) {
        r->waiting = 1;
        px_request_ref(r);
        px_usage_wait(r->ctx->usage, request_on_durable, r); /* may run it at once */
        return;
    }
    request_deliver_tail(r);
    px_request_finish(r);
}

/* The client left before the reply ended: stop the transfer now, count what was used. */
static void request_on_client_close(void *arg)
{
    struct px_request *r = arg;
    r->client_gone = 1;
    request_drop_attempt(r); /* keeps the usage seen so far */
    if (!r->streamed)
        r->reply_status = 499; /* nginx's "client closed request": answered with nothing */
    ap_info(r->rid, "client left %s; upstream transfer aborted", r->streamed ? "mid-stream" : "before the answer");
    struct px_hreq *h = r->hreq;
    r->hreq = NULL;
    if (h != NULL) {
        /* Completing a request whose client is gone only frees it. */
        if (r->streamed)
            px_hreq_end(h);
        else
            px_hreq_send(h, 499, "", 0);
    }
    px_request_finish(r);
}

/* ---- the attempt ---- */

static cJSON *request_json(struct px_request *r);

/* The attempt ends; what it measured stays for the log and the metrics. */
static void request_drop_attempt(struct px_request *r)
{
    if (r->att == NULL)
        return;
    struct px_attempt_info info;
    px_attempt_info(r->att, &info);
    r->upstream_status = info.upstream_status;
    r->t_sent = info.t_sent;
    r->t_headers = info.t_headers;
    px_attempt_free(r->att);
    r->att = NULL;
    cJSON_free(r->send_body);
    r->send_body = NULL;
}

static void request_on_stream_start(void *owner, int status)
{
    struct px_request *r = owner;
    r->reply_status = status;
    r->streamed = 1;
}

static void request_on_stream_end(void *owner)
{
    request_complete(owner);
}

static void request_on_outcome(void *owner, struct px_outcome *o);

static const struct px_attempt_ops request_attempt_ops = {
    request_on_outcome, request_on_stream_start, request_on_stream_end,
};

/* Sends the request to `tier` (NULL: UPSTREAM_URL as configured). */
static void request_start_tier(struct px_request *r, const struct ap_tier *tier)
{
    const struct px_config *c = &r->ctx->cfg;
    int api = r->route != PX_ROUTE_PASS;
    struct px_attempt_spec spec = {0};
    struct px_target_in in = {c->upstream_url, c->upstream_openai, c->upstream_api_key, api,
                              r->facts.client_fmt, px_hreq_raw_path(r->hreq), px_hreq_query(r->hreq)};
    if (px_target_for(&in, tier, &spec.target) < 0) {
        px_request_fail(r, 414, "request target too long");
        return;
    }
    r->served_tier = tier;
    if (api)
        snprintf(r->served_model, sizeof(r->served_model), "%s", px_outbound_model(&r->facts, &spec.target));
    spec.body = px_hreq_body(r->hreq, &spec.body_len);
    if (api && px_outbound_needs_tree(&r->facts, &spec.target)) {
        const cJSON *json = request_json(r);
        const char *err = NULL;
        size_t len = 0;
        int rc = json ? px_outbound_body(&r->facts, json, &spec.target, &r->send_body, &len, &err) : -1;
        if (rc == -2) {
            px_request_fail(r, 500, "out of memory");
            return;
        }
        if (rc < 0) {
            px_request_fail(r, 400, err ? err : "request body is not valid JSON");
            return;
        }
        if (r->send_body != NULL) {
            spec.body = r->send_body;
            spec.body_len = len;
            spec.body_rewritten = 1;
        }
    }
    if (r->tail == NULL && (r->tail = evbuffer_new()) == NULL) {
        px_request_fail(r, 500, "out of memory");
        return;
    }
    spec.ctx = r->ctx;
    spec.hreq = r->hreq;
    spec.rid = r->rid;
    spec.client_fmt = r->facts.client_fmt;
    spec.client_usage = r->facts.client_usage;
    spec.stream = r->facts.stream;
    spec.api = api;
    spec.hold = request_has_next(r);
    spec.served_model = r->served_model;
    spec.extra = r->rl;
    spec.nextra = r->nrl;
    spec.tail = r->tail;
    spec.usage = &r->usage;
    spec.ops = &request_attempt_ops;
    spec.owner = r;
    int status = 0;
    const char *msg = NULL;
    r->att = px_attempt_start(&spec, &status, &msg);
    if (r->att == NULL)
        px_request_fail(r, status, msg);
}

/* ---- plan ---- */

static int request_has_next(const struct px_request *r)
{
    for (size_t i = r->iplan + 1; i < r->nplan; i++)
        if (px_fallback_usable(r->ctx->fb, r->plan[i]))
            return 1;
    return 0;
}

/* Starts the next usable tier: 1, or 0 if there is none. */
static int request_next(struct px_request *r, const char *why)
{
    while (r->iplan + 1 < r->nplan) {
        const struct ap_tier *t = r->plan[++r->iplan];
        if (!px_fallback_usable(r->ctx->fb, t))
            continue;
        ap_warn(r->rid, "fallback: %s failed (%s); retrying on %s", r->served_model, why, t->model);
        px_metrics_switch("reactive");
        request_drop_attempt(r);
        r->usage = (struct ap_usage){0};
        request_start_tier(r, t);
        return 1;
    }
    return 0;
}

static void request_on_outcome(void *owner, struct px_outcome *o)
{
    struct px_request *r = owner;
    o->has_next = request_has_next(r);
    struct px_verdict v = px_verdict_decide(o);
    if (v.kind == PX_V_RETRY) {
        if (v.mark && r->served_tier != NULL)
            px_fallback_mark(r->ctx->fb, r->served_tier, v.message);
        if (request_next(r, v.message))
            return;
        /* Every later tier is marked by now: decide as the last tier would. */
        struct px_outcome last = *o;
        last.has_next = 0;
        v = px_verdict_decide(&last);
    }
    if (v.kind == PX_V_DELIVER) {
        int status = 0;
        const char *msg = NULL;
        switch (px_attempt_deliver(r->att, &status, &msg)) {
        case PX_DELIVERED_BODY:
            r->reply_status = status;
            request_complete(r);
            return;
        case PX_DELIVERED_STREAM:
            return; /* on_stream_end completed the request */
        case PX_DELIVERY_FAILED:
            px_request_fail(r, status, msg);
            return;
        }
    }
    ap_warn(r->rid, "upstream request failed: %s", v.message);
    r->ctx->stats.upstream_errors++;
    px_request_fail(r, v.status, v.message);
}

/*
 * Proactive fallback: the plan is decided here, from memory. A model outside
 * the chain (or fallback disabled) still goes to its tier when the chain
 * names it, or to UPSTREAM_URL, unchanged.
 */
static void request_route(struct px_request *r)
{
    int api = r->route != PX_ROUTE_PASS;
    r->chain = ap_fallback_ref(r->ctx->fallback);
    r->nplan = api ? px_fallback_plan(r->ctx->fb, r->model, r->plan, PX_MAX_TIERS) : 0;
    r->nplan = px_policy_filter(r->adm, r->plan, r->nplan); /* tiers of models the key may not use */
    r->iplan = 0;
    r->nrl = px_policy_headers(r->adm, r->rl);
    if (r->nplan > 0 && strcmp(r->plan[0]->model, r->model) != 0) {
        ap_info(r->rid, "fallback: %s is unavailable, using %s", r->model, r->plan[0]->model);
        px_metrics_switch("proactive");
    }
    const struct ap_tier *tier = r->nplan > 0 ? r->plan[0] : api ? ap_fallback_find(r->chain, r->model) : NULL;
    request_start_tier(r, tier);
}

/* The key policy's verdict (px_policy.h); a refusal is counted there, as refused. */
static void request_on_admit(void *arg, const struct px_admit_verdict *v)
{
    struct px_request *r = arg;
    if (!r->finished) {
        if (v->status == 0) {
            request_route(r);
        } else if (r->hreq != NULL) {
            struct px_hreq *h = r->hreq;
            r->hreq = NULL;
            r->counted = 1; /* neither a request nor an error */
            r->reply_status = v->status;
            px_hreq_on_close(h, NULL, NULL);
            px_hreq_add_header(h, "x-request-id", r->rid);
            px_policy_reply(h, r->err_fmt == PX_FMT_OPENAI, v);
            px_request_finish(r);
        }
    }
    px_request_unref(r);
}

static void request_authorized(struct px_request *r)
{
    if (r->key.state == PX_KEY_DISABLED) {
        px_request_fail(r, 403, "API key disabled");
    } else if (r->key.state != PX_KEY_ENABLED) {
        px_request_fail(r, 401, "Invalid API key");
    } else {
        /* Admission (limits, allow-list, expiry) before routing; keys without a policy pass at once. */
        int api = r->route != PX_ROUTE_PASS;
        size_t len;
        px_hreq_body(r->hreq, &len);
        struct px_policy_req q = {r->key_hash, r->key.id, api ? r->model : NULL, r->err_fmt == PX_FMT_OPENAI,
                                  len, api ? r->facts.max_tokens : -1, r->rid};
        px_request_ref(r); /* the admission's */
        px_policy_admit(r->ctx, &q, &r->adm, request_on_admit, r);
    }
}

static void request_on_key(void *arg, int ok, const struct px_key_info *info)
{
    struct px_request *r = arg;
    if (!r->finished) {
        if (!ok) {
            px_request_fail(r, 503, "cannot verify the API key right now; try again shortly");
        } else {
            r->key = *info;
            request_authorized(r);
        }
    }
    px_request_unref(r);
}

/* ---- intake ---- */

/*
 * Validates a Messages / Chat Completions body with a scan that builds no
 * tree (most bodies go upstream untouched). -1 after refusing it.
 */
static int request_check_body(struct px_request *r)
{
    size_t len;
    const char *body = px_hreq_body(r->hreq, &len);
    struct ap_jscan js;
    if (px_hreq_method(r->hreq) != PX_POST) {
        px_request_fail(r, 405, "use POST");
        return -1;
    }
    const char *err = NULL;
    char dup[200];
    int rc = ap_jscan(body, len, &js);
    if (rc == AP_JSCAN_DUPLICATE) {
        /* The name, escaped as the client wrote it, at most 60 bytes of it. */
        snprintf(dup, sizeof(dup), "duplicate member name \"%.*s\": the body must name each member once",
                 (int)(js.dup_len < 60 ? js.dup_len : 60), js.dup_name);
        err = dup;
    } else if (rc != AP_JSCAN_OK) {
        err = rc == AP_JSCAN_INVALID ? "request body is not valid JSON" : ap_jscan_strerror(rc);
    } else if (js.root != AP_J_OBJECT) {
        err = "request body must be a JSON object";
    } else if (js.model == AP_J_ABSENT) {
        err = "model: field required";
    } else if (js.model != AP_J_STRING || js.model_str_len == 0 || js.model_nul) {
        err = "model: must be a non-empty string";
    } else if (js.model_str_len >= AP_MODEL_MAX) {
        err = "model: too long";
    } else if (js.stream != AP_J_ABSENT && js.stream != AP_J_TRUE && js.stream != AP_J_FALSE &&
               js.stream != AP_J_NULL) {
        err = "stream: must be a boolean";
    } else if (js.stream_options != AP_J_ABSENT && js.stream_options != AP_J_OBJECT &&
               js.stream_options != AP_J_NULL) {
        err = "stream_options: must be an object";
    } else if ((js.max_tokens.type == AP_J_NUMBER && !js.max_tokens.in_range) ||
               (js.max_completion_tokens.type == AP_J_NUMBER && !js.max_completion_tokens.in_range)) {
        /* Never cast: 1e300 would be undefined behaviour, and a negative limit a lie upstream. */
        err = "max_tokens / max_completion_tokens: must be an integer from 1 to 2147483647";
    }
    if (err != NULL) {
        px_request_fail(r, 400, err);
        return -1;
    }
    r->facts.stream = js.stream == AP_J_TRUE;
    r->facts.client_usage = js.include_usage == AP_J_TRUE;
    r->facts.max_tokens = js.max_completion_tokens.in_range ? js.max_completion_tokens.value
                          : js.max_tokens.in_range          ? js.max_tokens.value
                                                            : -1;
    memcpy(r->model, js.model_str, js.model_str_len + 1);
    r->facts.model = r->model;
    return 0;
}

static cJSON *request_json(struct px_request *r)
{
    if (r->json == NULL && r->route != PX_ROUTE_PASS && r->hreq != NULL) {
        size_t len;
        const char *body = px_hreq_body(r->hreq, &len);
        /* Scan-approved bytes; U+0000 inside strings is carried, not cut (ap_json.h). */
        r->json = ap_json_parse_keep(body, len);
    }
    return r->json;
}

void px_request_handle(struct px_ctx *ctx, struct px_hreq *h, enum px_route route)
{
    struct px_request *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        px_reply_error(h, route == PX_ROUTE_CHAT ? PX_FMT_OPENAI : PX_FMT_ANTHROPIC, 500, "out of memory");
        return;
    }
    r->refs = 1;
    r->ctx = ctx;
    r->hreq = h;
    r->route = route;
    r->facts.client_fmt = route == PX_ROUTE_CHAT ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC;
    r->err_fmt = route == PX_ROUTE_CHAT ? PX_FMT_OPENAI : PX_FMT_ANTHROPIC;
    r->t0 = ap_mono_ms();
    r->key.state = PX_KEY_UNKNOWN;
    snprintf(r->method, sizeof(r->method), "%s", px_hreq_method_name(h));
    px_hreq_request_id(h, r->rid);
    if (ap_log_enabled(AP_LOG_INFO)) /* the path is kept for the access log only */
        ap_mask_path(px_hreq_raw_path(h), r->path, sizeof(r->path));
    ctx->stats.active++;
    /* Watched from the start: a client that leaves before any answer stops the upstream too. */
    px_hreq_on_close(h, request_on_client_close, r);

    const char *key = px_hreq_key(h);
    if (key == NULL) {
        px_request_fail(r, 401, "Missing API key");
        return;
    }
    ap_sha256_hex(key, strlen(key), r->key_hash);
    if (route != PX_ROUTE_PASS && request_check_body(r) < 0)
        return;
    if (px_keys_lookup(ctx->keys, r->key_hash, &r->key) == 0) {
        request_authorized(r);
        return;
    }
    px_request_ref(r); /* the lookup's */
    if (px_keys_fetch(ctx->keys, r->key_hash, request_on_key, r) < 0) {
        px_request_fail(r, 503, "cannot verify the API key right now; try again shortly");
        px_request_unref(r);
    }
}
