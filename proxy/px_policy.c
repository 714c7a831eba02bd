/*
 * Per-key limits on the replica; see px_policy.h. One px_admission per
 * request of a key with a policy, owned by the request (freed by
 * px_policy_end). A Redis call in flight has its own small struct so that a
 * late reply, after a timeout or the end of the request, finds nothing to touch.
 */
#include "px_policy.h"

#include "ap_errfmt.h"

#include "ap_fallback.h"
#include "ap_jscan.h"
#include "ap_keys.h"
#include "ap_log.h"
#include "ap_policy_redis.h"
#include "ap_prices.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Leases renewed per EVALSHA. */
#define POLICY_RENEW_BATCH 256

enum adm_state {
    ADM_NONE,       /* nothing recorded in Redis (local verdict, refusal, or never sent) */
    ADM_RECORDED,   /* Redis admitted it */
    ADM_UNKNOWN,    /* sent, but the answer was lost or late: maybe recorded */
};

struct admit_call;

struct px_admission {
    struct px_policy *pol;          /* borrowed */
    struct ap_policy *policy;       /* owned reference */
    char key_id[AP_KEY_ID_LEN];
    char base[AP_POLICY_BASE_MAX];  /* "<prefix>pl:<id>:" */
    char id[40];                    /* admission id: unique per replica start and request */
    char rid[33];
    int openai;
    char model[AP_MODEL_MAX];
    int64_t need_tokens;            /* reserved against the token budgets */
    int64_t need_nano;              /* reserved against the spend budgets */
    int64_t rpm_left, tpm_left;     /* for the headers; -1: unknown */
    enum adm_state state;
    struct admit_call *call;        /* the Redis call in flight; NULL once answered */
    struct event timer;             /* POLICY_TIMEOUT_MS while the call is in flight */
    px_policy_cb cb;
    void *arg;
    struct px_admission *prev, *next; /* in pol->live while its lease is renewed */
    unsigned settle:1;              /* the end must settle it (tpm window, slot, reservation) */
    unsigned leased:1;              /* holds a lease */
    unsigned in_live:1;
    unsigned undo:1;                /* refused after all: take the admission back */
    unsigned timer_set:1;
};

struct admit_call {
    struct px_admission *a;         /* NULL once the admission gave up on this call */
    unsigned by_text:1;             /* sent as EVAL (after NOSCRIPT) */
};

struct px_policy {
    struct px_ctx *ctx;             /* borrowed */
    char admit_sha[41];
    char boot[13];                  /* random per process start: admission ids never repeat */
    uint64_t seq;
    struct px_admission *live;      /* admissions whose leases we renew */
    struct event *renew;            /* owned: the renewal timer */
    struct px_policy_stats stats;
    uint64_t outage;                /* unchecked or refused for want of Redis, since it was last up */
};

/* ---- leases ---- */

static void policy_live_add(struct px_admission *a)
{
    struct px_policy *pol = a->pol;
    if (a->in_live || !a->leased)
        return;
    a->prev = NULL;
    a->next = pol->live;
    if (pol->live != NULL)
        pol->live->prev = a;
    pol->live = a;
    a->in_live = 1;
    pol->stats.leases++;
}

static void policy_live_remove(struct px_admission *a)
{
    struct px_policy *pol = a->pol;
    if (!a->in_live)
        return;
    if (a->prev != NULL)
        a->prev->next = a->next;
    else
        pol->live = a->next;
    if (a->next != NULL)
        a->next->prev = a->prev;
    a->in_live = 0;
    pol->stats.leases--;
}

static void policy_on_renewed(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *rep = reply;
    (void)ac;
    (void)priv;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
        ap_error(NULL, "policy: lease renewal refused by Redis: %s", rep->str);
}

/* Extends every lease this replica holds (a few EVALs; nothing waits for them). */
static void policy_renew_now(struct px_policy *pol)
{
    const char *argv[4 + 2 * POLICY_RENEW_BATCH];
    char lease[24];
    struct px_admission *a = pol->live;
    if (a == NULL || !ap_redis_up(pol->ctx->redis))
        return;
    snprintf(lease, sizeof(lease), "%ld", pol->ctx->cfg.policy_lease_ms);
    while (a != NULL) {
        int n = 0;
        /* The script's text: renewals are rare, and a NOSCRIPT here would cost a lease. */
        argv[n++] = "EVAL";
        argv[n++] = ap_script_policy_renew;
        argv[n++] = "0";
        argv[n++] = lease;
        for (int k = 0; a != NULL && k < POLICY_RENEW_BATCH; k++, a = a->next) {
            argv[n++] = a->base;
            argv[n++] = a->id;
        }
        if (ap_redis_argv(pol->ctx->redis, policy_on_renewed, pol, n, argv, NULL) < 0)
            return;
    }
}

static void policy_on_renew_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    policy_renew_now(arg);
}

void px_policy_on_up(struct px_policy *pol)
{
    policy_renew_now(pol);
    if (pol->outage > 0) {
        ap_warn(NULL, "policy: Redis is back; %llu requests of limited keys were %s while it was unreachable "
                "(POLICY_FAIL_MODE=%s)", (unsigned long long)pol->outage,
                pol->ctx->cfg.policy_fail_open ? "served unchecked (their usage is counted now)" : "refused with 503",
                pol->ctx->cfg.policy_fail_open ? "open" : "closed");
        pol->outage = 0;
    }
}

/* ---- lifecycle ---- */

struct px_policy *px_policy_new(struct px_ctx *ctx)
{
    struct px_policy *pol = calloc(1, sizeof(*pol));
    if (pol == NULL)
        return NULL;
    pol->ctx = ctx;
    ap_sha1_hex(ap_script_policy_admit, pol->admit_sha);
    pol->renew = event_new(ctx->base, -1, EV_PERSIST, policy_on_renew_timer, pol);
    if (ap_random_hex(pol->boot, 6) < 0 || pol->renew == NULL) {
        px_policy_free(pol);
        return NULL;
    }
    long every = ctx->cfg.policy_lease_ms / 4;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    event_add(pol->renew, &tv);
    return pol;
}

void px_policy_free(struct px_policy *pol)
{
    if (pol == NULL)
        return;
    /* Requests still alive at exit own their admissions; only detach them. */
    while (pol->live != NULL)
        policy_live_remove(pol->live);
    if (pol->renew != NULL)
        event_free(pol->renew);
    free(pol);
}

const struct px_policy_stats *px_policy_stats(const struct px_policy *pol)
{
    return &pol->stats;
}

/* ---- verdicts ---- */

static void policy_refuse(struct px_admission *a, const struct ap_admit_result *res, int64_t need,
                          struct px_admit_verdict *v)
{
    struct px_ctx *ctx = a->pol->ctx;
    struct ap_refusal_fmt f;
    ap_policy_refusal(res->refusal, a->openai, &f);
    v->status = f.status;
    v->type = f.type;
    v->code = f.code;
    v->retry_after = res->refusal == AP_REFUSE_MODEL || res->refusal == AP_REFUSE_EXPIRED ||
                             res->refusal == AP_REFUSE_UNPRICED
                         ? 0
                         : ap_policy_retry_after(a->policy, res, need, ap_now_ms(), ctx->cfg.tz_offset);
    ap_policy_message(a->policy, res, a->model, need, v->message, sizeof(v->message));
    a->pol->stats.refused[res->refusal]++;
    static const struct ap_usage none;
    px_usage_record(ctx->usage, a->key_id, a->model[0] ? a->model : NULL, &none, AP_REC_REFUSED);
    /* Debug: a flood of refusals would double the log; the access log has the status, metrics the reason. */
    ap_debug(a->rid, "policy: key %s refused (%s): %s", a->key_id, f.reason, v->message);
}

/* Redis is out of reach (down, silent or erring): POLICY_FAIL_MODE decides. */
static void policy_fail(struct px_admission *a, struct px_admit_verdict *v)
{
    struct px_policy *pol = a->pol;
    if (pol->outage++ == 0)
        ap_warn(a->rid, "policy: Redis unreachable: %s limited keys until it returns (POLICY_FAIL_MODE=%s)",
                pol->ctx->cfg.policy_fail_open ? "serving (unchecked)" : "refusing (503)",
                pol->ctx->cfg.policy_fail_open ? "open" : "closed");
    if (pol->ctx->cfg.policy_fail_open) {
        pol->stats.unchecked++;
        if (a->state == ADM_UNKNOWN && a->settle)
            policy_live_add(a); /* it may have been recorded: keep its lease alive until it is settled */
        return;
    }
    struct ap_admit_result res = {.refusal = AP_REFUSE_UNAVAILABLE};
    policy_refuse(a, &res, 0, v);
    v->retry_after = 1;
    a->undo = 1;
}

static void policy_admitted(struct px_admission *a, const struct ap_admit_result *res)
{
    a->state = ADM_RECORDED;
    a->rpm_left = res->rpm_remaining;
    a->tpm_left = res->tpm_remaining;
    a->pol->stats.checked++;
    if (a->settle)
        policy_live_add(a);
}

/* Gives the verdict; `a` may be gone afterwards. */
static void policy_finish(struct px_admission *a, const struct px_admit_verdict *v)
{
    px_policy_cb cb = a->cb;
    void *arg = a->arg;
    a->cb = NULL;
    cb(arg, v);
}

static void policy_drop_call(struct px_admission *a)
{
    if (a->call != NULL) {
        a->call->a = NULL; /* its reply, if any, is ignored */
        a->call = NULL;
    }
    if (a->timer_set) {
        evtimer_del(&a->timer);
        a->timer_set = 0;
    }
}

static int policy_send(struct px_admission *a, struct admit_call *call);

static void policy_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct admit_call *call = priv;
    struct px_admission *a = call->a;
    redisReply *rep = reply;
    struct px_admit_verdict v = {0};
    (void)ac;
    if (a == NULL) {
        free(call);
        return;
    }
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !call->by_text) {
        /* Redis lost its script cache (restart, SCRIPT FLUSH): the text loads it again. */
        call->by_text = 1;
        if (policy_send(a, call) == 0)
            return;
    }
    a->call = NULL;
    free(call);
    if (a->timer_set) {
        evtimer_del(&a->timer);
        a->timer_set = 0;
    }
    long long nums[6];
    struct ap_admit_result res;
    int ok = rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 6;
    for (size_t i = 0; ok && i < 6; i++) {
        ok = rep->element[i]->type == REDIS_REPLY_INTEGER;
        nums[i] = ok ? rep->element[i]->integer : 0;
    }
    if (ok && ap_policy_admit_reply(nums, 6, &res) == 0) {
        if (res.refusal == AP_REFUSE_NONE) {
            policy_admitted(a, &res);
        } else {
            int usd = res.refusal == AP_REFUSE_DAILY_USD || res.refusal == AP_REFUSE_MONTHLY_USD;
            a->state = ADM_NONE; /* a refusal records nothing */
            a->pol->stats.checked++;
                    policy_refuse(a, &res, usd ? a->need_nano : a->need_tokens, &v);
        }
    } else {
        if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
            ap_error(a->rid, "policy: admission refused by Redis: %s", rep->str);
        else if (rep != NULL)
            ap_error(a->rid, "policy: unexpected admission reply (type %d)", rep->type);
        a->state = ADM_UNKNOWN;
        policy_fail(a, &v);
    }
    policy_finish(a, &v);
}

static void policy_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_admission *a = arg;
    struct px_admit_verdict v = {0};
    (void)fd;
    (void)what;
    a->timer_set = 0;
    ap_warn(a->rid, "policy: no admission answer from Redis within %ld ms", a->pol->ctx->cfg.policy_timeout_ms);
    policy_drop_call(a);
    a->state = ADM_UNKNOWN;
    policy_fail(a, &v);
    policy_finish(a, &v);
}

/* ---- admission ---- */

/* The priciest of the models the request may be served by (the requested one, and its allowed fallback tiers). */
static int policy_price(const struct px_ctx *ctx, const struct ap_policy *p, const char *model, struct ap_price *out)
{
    const struct ap_price *pr = ap_prices_find(ctx->prices, model);
    if (pr == NULL)
        return -1;
    *out = *pr;
    const struct ap_fallback *f = ctx->fallback;
    if (f == NULL || !f->enabled || ap_fallback_find(f, model) == NULL)
        return 0;
    for (size_t i = 0; i < f->ntiers; i++) {
        const struct ap_price *t = ap_prices_find(ctx->prices, f->tiers[i].model);
        if (t == NULL || !ap_policy_model_allowed(p, f->tiers[i].model))
            continue;
        out->input = t->input > out->input ? t->input : out->input;
        out->output = t->output > out->output ? t->output : out->output;
        out->cache_read = t->cache_read > out->cache_read ? t->cache_read : out->cache_read;
        out->cache_write = t->cache_write > out->cache_write ? t->cache_write : out->cache_write;
    }
    return 0;
}

static int policy_send(struct px_admission *a, struct admit_call *call)
{
    struct px_ctx *ctx = a->pol->ctx;
    const struct ap_policy *p = a->policy;
    struct ap_admit_req q = {
        .key_id = a->key_id,
        .admission_id = a->id,
        .lease_ms = a->leased ? ctx->cfg.policy_lease_ms : 0,
        .window_tokens = p->tpm != AP_POLICY_NONE ? a->need_tokens : 0,
        .reserve_tokens = ap_policy_token_budget(p) ? a->need_tokens : 0,
        .reserve_nano = ap_policy_usd_budget(p) ? a->need_nano : 0,
    };
    int64_t now = ap_now_ms();
    ap_time_day((time_t)(now / 1000), ctx->cfg.tz_offset, q.day);
    struct ap_admit_args args = {0};
    ap_policy_admit_args(p, &q, call->by_text ? ap_script_policy_admit : a->pol->admit_sha, !call->by_text, &args);
    return ap_redis_argv(ctx->redis, policy_on_reply, call, AP_ADMIT_ARGC, args.argv, NULL);
}

/* The reservation: the body's estimate plus max_tokens, priced at the dearest model that may serve it. */
static void policy_estimate(struct px_ctx *ctx, struct px_admission *a, const struct px_policy_req *q,
                            const struct ap_price *price)
{
    long long max = q->max_tokens;
    int64_t input = ap_policy_estimate(q->body_len, 0, 0);
    int64_t output = max >= 0 ? max : ctx->cfg.policy_default_max_tokens;
    a->need_tokens = input + output;
    if (price != NULL) {
        int64_t in_price = price->input;
        in_price = price->cache_write > in_price ? price->cache_write : in_price;
        in_price = price->cache_read > in_price ? price->cache_read : in_price;
        a->need_nano = input * in_price + output * price->output;
    }
}

void px_policy_admit(struct px_ctx *ctx, const struct px_policy_req *q, struct px_admission **slot,
                     px_policy_cb cb, void *arg)
{
    struct px_admit_verdict v = {0};
    struct ap_policy *p = px_keys_policy(ctx->keys, q->key_hash);
    *slot = NULL;
    if (p == NULL) {
        cb(arg, &v);
        return;
    }
    struct px_admission *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        ap_policy_free(p);
        v.status = 500;
        v.type = q->openai ? "server_error" : "api_error";
        snprintf(v.message, sizeof(v.message), "out of memory");
        cb(arg, &v);
        return;
    }
    struct px_policy *pol = ctx->policy;
    a->pol = pol;
    a->policy = p;
    a->openai = q->openai;
    a->cb = cb;
    a->arg = arg;
    a->rpm_left = a->tpm_left = -1;
    snprintf(a->key_id, sizeof(a->key_id), "%s", q->key_id);
    snprintf(a->rid, sizeof(a->rid), "%s", q->rid ? q->rid : "");
    snprintf(a->model, sizeof(a->model), "%s", q->model ? q->model : "");
    *slot = a;

    struct ap_admit_result res = {AP_REFUSE_NONE, 0, -1, -1, 0, 0};
    struct ap_price price;
    int usd = ap_policy_usd_budget(p);
    if (ap_policy_expired(p, ap_now_ms()))
        res.refusal = AP_REFUSE_EXPIRED;
    else if (q->model != NULL && !ap_policy_model_allowed(p, q->model))
        res.refusal = AP_REFUSE_MODEL;
    else if (q->model != NULL && usd && policy_price(ctx, p, q->model, &price) < 0)
        res.refusal = AP_REFUSE_UNPRICED;
    if (res.refusal != AP_REFUSE_NONE) {
        policy_refuse(a, &res, 0, &v);
        policy_finish(a, &v);
        return;
    }
    if (q->model == NULL || !ap_policy_counted(p)) {
        policy_finish(a, &v); /* decided from memory: no Redis */
        return;
    }
    a->leased = ap_policy_leased(p);
    a->settle = a->leased || p->tpm != AP_POLICY_NONE;
    if (p->tpm != AP_POLICY_NONE || ap_policy_token_budget(p) || usd)
        policy_estimate(ctx, a, q, usd ? &price : NULL);
    ap_policy_base(a->key_id, a->base, sizeof(a->base));
    snprintf(a->id, sizeof(a->id), "%s.%llx", pol->boot, (unsigned long long)++pol->seq);

    struct admit_call *call = ap_redis_up(ctx->redis) ? calloc(1, sizeof(*call)) : NULL;
    if (call != NULL)
        call->a = a;
    if (call == NULL || policy_send(a, call) < 0) {
        free(call);
        policy_fail(a, &v);
        policy_finish(a, &v);
        return;
    }
    a->call = call;
    a->state = ADM_UNKNOWN; /* until the answer says otherwise */
    struct timeval tv = {ctx->cfg.policy_timeout_ms / 1000, (ctx->cfg.policy_timeout_ms % 1000) * 1000};
    evtimer_assign(&a->timer, ctx->base, policy_on_timeout, a);
    evtimer_add(&a->timer, &tv);
    a->timer_set = 1;
}

size_t px_policy_filter(const struct px_admission *a, const struct ap_tier **plan, size_t n)
{
    if (a == NULL)
        return n;
    const struct px_ctx *ctx = a->pol->ctx;
    int usd = ap_policy_usd_budget(a->policy);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        const char *m = plan[i]->model;
        if (!ap_policy_model_allowed(a->policy, m) || (usd && ap_prices_find(ctx->prices, m) == NULL)) {
            ap_debug(a->rid, "policy: tier %s skipped: key %s may not use %s", plan[i]->name, a->key_id, m);
            continue;
        }
        plan[out++] = plan[i];
    }
    return out;
}

size_t px_policy_headers(const struct px_admission *a, struct ap_header out[4])
{
    return a == NULL ? 0 : ap_policy_headers(a->policy, a->rpm_left, a->tpm_left, out);
}

void px_policy_end(struct px_admission **slot, const struct ap_usage *u)
{
    struct px_admission *a = *slot;
    if (a == NULL)
        return;
    *slot = NULL;
    if (a->call != NULL) {
        /* Ended before the answer: whatever Redis decides is taken back. */
        policy_drop_call(a);
        a->undo = 1;
    }
    if (a->settle && a->state != ADM_NONE) {
        int64_t tokens = a->undo ? -1 : u != NULL ? u->input + u->output : 0;
        px_usage_settle(a->pol->ctx->usage, a->base, a->id, tokens);
    }
    policy_live_remove(a);
    ap_policy_free(a->policy);
    free(a);
}

void px_policy_reply(struct px_hreq *req, int openai, const struct px_admit_verdict *v)
{
    /* The same layout as every error of the endpoint, with the policy's own type and code. */
    cJSON *doc = ap_err_doc(openai ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC, v->status, v->type, v->code, v->message);
    if (v->retry_after > 0) {
        char ra[24];
        snprintf(ra, sizeof(ra), "%ld", v->retry_after);
        px_hreq_add_header(req, "retry-after", ra);
    }
    px_reply_json(req, v->status, doc);
}
