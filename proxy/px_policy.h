/*
 * px_policy: per-key limits on a replica (README "Per-key policy"). The
 * request path calls it at three points:
 *
 *   authenticated ─▶ px_policy_admit ─┬─ no policy: admitted at once (no Redis, no allocation)
 *                                     ├─ models / expires_at / prices: decided from memory
 *                                     └─ rpm, tpm, max_concurrent, budgets: one EVALSHA
 *                                        (ap_script_policy_admit) ─▶ verdict
 *   routing ─▶ px_policy_filter (fallback tiers the key may not use are dropped)
 *   counted ─▶ px_policy_end ─▶ settlement in the same usage batch as the
 *                               request's usage (px_usage_settle)
 *
 * An admission that holds a concurrency slot or a budget reservation has a
 * lease in Redis, renewed here every POLICY_LEASE_SECONDS / 4 while the
 * request lives: a replica killed with SIGKILL stops renewing, and its slots
 * and reservations free themselves when the lease lapses.
 * While Redis is unreachable (or slower than POLICY_TIMEOUT_MS) limited keys
 * follow POLICY_FAIL_MODE: open serves them unchecked (their usage is counted
 * when Redis returns), closed answers 503.
 */
#ifndef PX_POLICY_H
#define PX_POLICY_H

#include "px.h"

#include "ap_policy.h"

struct px_admission;

/* What admission decided. */
struct px_admit_verdict {
    int status;                 /* 0: admitted; else the status of the refusal (403, 429, 503) */
    const char *type;           /* error type in the endpoint's format (static) */
    const char *code;           /* OpenAI error code (static), or NULL */
    long retry_after;           /* seconds for retry-after; 0: no header */
    char message[400];
};

/* One request, as admission sees it. Everything is read during the call only. */
struct px_policy_req {
    const char *key_hash;
    const char *key_id;
    const char *model;          /* requested model; NULL: not a Messages / Chat call (only expiry applies) */
    int openai;                 /* the endpoint speaks OpenAI (error types and codes) */
    size_t body_len;            /* for the reservation estimate: the input, roughly */
    long long max_tokens;       /* the output limit asked for (max_completion_tokens, else max_tokens); -1: none */
    const char *rid;            /* for logs */
};

/* Called once with the verdict; a refusal is already counted (as refused, never as a request or an error). */
typedef void (*px_policy_cb)(void *arg, const struct px_admit_verdict *v);

struct px_policy *px_policy_new(struct px_ctx *ctx);
void px_policy_free(struct px_policy *pol);

/*
 * Admits (or refuses) a request of an authenticated, enabled key. *slot gets
 * the admission (NULL when the key has no policy) before cb runs; cb may run
 * before this returns, and may end the request. The owner ends it with
 * px_policy_end whatever the verdict.
 */
void px_policy_admit(struct px_ctx *ctx, const struct px_policy_req *q, struct px_admission **slot,
                     px_policy_cb cb, void *arg);

/* Drops from a fallback plan the tiers the key may not use; returns the new length. a may be NULL. */
size_t px_policy_filter(const struct px_admission *a, const struct ap_tier **plan, size_t n);

/* The x-ratelimit-* headers of a successful answer; returns how many (0 for NULL). */
size_t px_policy_headers(const struct px_admission *a, struct ap_header out[4]);

/*
 * The request is over (or counted): settles the admission with the usage
 * (NULL: none) of the served model, frees it and clears *slot. Idempotent.
 */
void px_policy_end(struct px_admission **slot, const struct ap_usage *u);

/* Answers a refusal in the endpoint's format, with retry-after when it has one. */
void px_policy_reply(struct px_hreq *req, int openai, const struct px_admit_verdict *v);

/* Redis came back: renew leases now, report what was served unchecked meanwhile. */
void px_policy_on_up(struct px_policy *pol);

/* For /health and /metrics. */
struct px_policy_stats {
    uint64_t checked;           /* admissions decided by Redis */
    uint64_t unchecked;         /* admitted without Redis (POLICY_FAIL_MODE=open) */
    uint64_t refused[AP_REFUSE_COUNT];
    size_t leases;              /* admissions whose leases this replica renews */
};
const struct px_policy_stats *px_policy_stats(const struct px_policy *pol);

#endif
