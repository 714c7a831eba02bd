/*
 * ap_policy: a key's policy (README "Per-key policy"): what it may use, how
 * fast, how much. Parsing and validation with clear errors, the canonical
 * JSON kept in the key record, and the pure decisions around admission:
 * model allow-list, expiry, the reservation estimate, the refusal each
 * verdict becomes in each endpoint format, the x-ratelimit-* headers.
 *
 *   {"models": ["claude-sonnet-4-5", "gemini-*"], "expires_at": "2026-07-01T00:00:00Z",
 *    "rpm": 100, "tpm": 200000, "max_concurrent": 5,
 *    "daily_tokens": 1000000, "monthly_tokens": 20000000, "daily_usd": 5, "monthly_usd": 100}
 *
 * Every field is optional; absent or null means no limit. The counting itself
 * is one atomic Redis step (ap_policy_redis.h); no I/O here.
 */
#ifndef AP_POLICY_H
#define AP_POLICY_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;

#define AP_POLICY_NONE (-1)

/* Immutable once parsed; shared by reference (the key cache and requests in flight). */
struct ap_policy {
    int refs;
    char **models;              /* owned; NULL: any model */
    size_t nmodels;
    int64_t expires_at_ms;      /* AP_POLICY_NONE: never */
    int64_t rpm;                /* each AP_POLICY_NONE when unset */
    int64_t tpm;
    int64_t max_concurrent;
    int64_t daily_tokens;
    int64_t monthly_tokens;
    int64_t daily_nano;         /* daily_usd in nano-dollars */
    int64_t monthly_nano;
};

/*
 * Validates a policy object (NULL or JSON null: the empty policy). Returns a
 * new policy (one reference), or NULL with a message for a 400 in err, e.g.
 * "rpm: must be an integer from 0 to 1000000000".
 */
struct ap_policy *ap_policy_parse(const struct cJSON *obj, char *err, size_t errlen);
/* The same from JSON text (the "policy" field of a key record). */
struct ap_policy *ap_policy_parse_text(const char *json, size_t len, char *err, size_t errlen);

struct ap_policy *ap_policy_ref(struct ap_policy *p);   /* NULL allowed */
void ap_policy_free(struct ap_policy *p);               /* drops one reference; NULL allowed */

/* 1 when nothing is set (such a policy is stored as none). NULL counts as empty. */
int ap_policy_empty(const struct ap_policy *p);

/* The policy as a new JSON object (only the fields set; {} for none). USD amounts are exact decimals. */
struct cJSON *ap_policy_to_json(const struct ap_policy *p);
/* Canonical compact text of ap_policy_to_json ("{}" for none); free with free(). NULL without memory. */
char *ap_policy_print(const struct ap_policy *p);

/* 1 when `model` is allowed: no list, an exact name, or a "prefix*" it starts with. */
int ap_policy_model_allowed(const struct ap_policy *p, const char *model);
int ap_policy_expired(const struct ap_policy *p, int64_t now_ms);

/* 1 when admission needs Redis: rpm, tpm, max_concurrent or a budget is set. */
int ap_policy_counted(const struct ap_policy *p);
int ap_policy_token_budget(const struct ap_policy *p);  /* daily_tokens or monthly_tokens */
int ap_policy_usd_budget(const struct ap_policy *p);    /* daily_usd or monthly_usd */
/* 1 when an admission holds a lease (a concurrency slot or a budget reservation). */
int ap_policy_leased(const struct ap_policy *p);

/*
 * Tokens a request may use: an input estimate from the body size (a token
 * per 4 bytes, rounded up) plus max_tokens (max_tokens < 0: absent, then
 * default_max). What admission reserves and tpm counts until the real usage
 * replaces it.
 */
int64_t ap_policy_estimate(size_t body_len, int64_t max_tokens, int64_t default_max);

/* Why a request was refused. */
enum ap_refusal {
    AP_REFUSE_NONE,
    AP_REFUSE_MODEL,            /* model not in the allow-list */
    AP_REFUSE_EXPIRED,
    AP_REFUSE_UNPRICED,         /* a spend budget, and a model PRICES_CONFIG does not price */
    AP_REFUSE_RPM,
    AP_REFUSE_TPM,
    AP_REFUSE_CONCURRENCY,
    AP_REFUSE_DAILY_TOKENS,
    AP_REFUSE_MONTHLY_TOKENS,
    AP_REFUSE_DAILY_USD,
    AP_REFUSE_MONTHLY_USD,
    AP_REFUSE_UNAVAILABLE,      /* Redis unreachable and POLICY_FAIL_MODE=closed */
    AP_REFUSE_COUNT
};

/* How a refusal is answered: status, error type and code in the endpoint's format. */
struct ap_refusal_fmt {
    int status;
    const char *type;           /* Anthropic or OpenAI error type */
    const char *code;           /* OpenAI "code" (NULL: null) */
    const char *reason;         /* short name (metrics label, logs): "rpm", "daily_usd"... */
};
void ap_policy_refusal(enum ap_refusal r, int openai, struct ap_refusal_fmt *out);

/* What Redis answered to an admission (ap_script_policy_admit's reply, decoded). */
struct ap_admit_result {
    enum ap_refusal refusal;    /* AP_REFUSE_NONE: admitted */
    int64_t retry_ms;           /* when a retry may succeed (0: see ap_policy_retry_ms) */
    int64_t rpm_remaining;      /* after this request; -1: unknown or no rpm */
    int64_t tpm_remaining;
    int64_t used;               /* refusals: what the window, the slots or the budget holds */
    int64_t reserved;           /* budget refusals: reservations of requests in flight */
};

/* Decodes the script's integer reply; 0, or -1 when it does not have the script's shape. */
int ap_policy_admit_reply(const long long *v, size_t n, struct ap_admit_result *out);

/*
 * Seconds for retry-after: the window's own answer for rpm/tpm, 1 for a
 * concurrency slot, and for a budget the next day or month (tz offset) when
 * the request cannot fit even once the reservations in flight settle, else 1.
 */
long ap_policy_retry_after(const struct ap_policy *p, const struct ap_admit_result *res, int64_t need,
                           int64_t now_ms, long tz_offset);

/* The refusal's message for the client (no secrets: limits and figures only). */
void ap_policy_message(const struct ap_policy *p, const struct ap_admit_result *res, const char *model,
                       int64_t need, char *out, size_t n);

/* x-ratelimit-* headers of a successful answer. */
struct ap_header {
    const char *name;           /* static */
    char value[24];
};
/* Fills up to 4 headers for the limits the policy has; returns how many. Remaining < 0: left out. */
size_t ap_policy_headers(const struct ap_policy *p, int64_t rpm_remaining, int64_t tpm_remaining,
                         struct ap_header out[4]);

#endif
