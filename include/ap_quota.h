/*
 * ap_quota: per-model quota, from the upstream's /health to a tier choice.
 *
 *   poller:  /health JSON ─ap_health_parse─▶ quota (max over ALL accounts)
 *            ─ap_quota_settle─▶ availability with hysteresis ─▶ Redis + event
 *   replica: event / Redis ─ap_quota_from_json─▶ quota (in memory)
 *            + exhausted marks (reactive) ─ap_fallback_plan─▶ tiers to try, in order
 *
 * The rules are the original's (docs/contract.md section 5): fallback disabled or a
 * model outside the chain passes through; the requested tier is used while
 * it is available, else the first other available tier in chain order.
 * A tier is available when its model is not marked exhausted and its quota is
 * unknown (no account reports it, or the data is stale) or at least
 * min_remaining_fraction; a tier that went below comes back only at
 * min_remaining_fraction + recovery_margin. External tiers have no quota.
 * Pure logic, no I/O.
 */
#ifndef AP_QUOTA_H
#define AP_QUOTA_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;
struct ap_fallback;
struct ap_tier;

struct ap_quota_model {
    char model[128];
    double fraction;        /* max remainingFraction over accounts (null counted as 0) */
    int64_t reset_ms;       /* soonest resetTime of the accounts reporting it; 0: none */
    unsigned available:1;   /* after hysteresis (set by ap_quota_settle) */
};

struct ap_quota {
    struct ap_quota_model *m;   /* owned */
    size_t n;
    int64_t poll_ms;            /* wall time of the last successful poll; 0: never */
    double interval_s;          /* the poller's interval (staleness is 3 of them) */
    int poll_ok;                /* the last poll succeeded */
    char error[160];            /* why the last poll failed */
};

/* Exhausted marks set by reactive fallback: model -> until (wall ms). */
struct ap_marks {
    struct { char model[128]; int64_t until_ms; } *m; /* owned */
    size_t n;
};

void ap_quota_free(struct ap_quota *q);
void ap_marks_free(struct ap_marks *k);

/*
 * Parses the upstream's /health (docs/contract.md section 6) into q (models only;
 * poll fields untouched). Accounts of any status count; models of accounts
 * with status invalid/error are ignored. 0, or -1 with err when it is not a
 * health document.
 */
int ap_health_parse(const char *json, size_t len, struct ap_quota *q, char *err, size_t errlen);

/* The entry for a model, or NULL when no account reports it. */
const struct ap_quota_model *ap_quota_find(const struct ap_quota *q, const char *model);

/*
 * Sets each model's availability: at least `min`, or, for a model that was
 * unavailable in `prev`, at least min + margin. prev may be NULL.
 */
void ap_quota_settle(struct ap_quota *q, const struct ap_quota *prev, double min, double margin);

/* 1 when q and prev differ in anything replicas act on (models, fractions, availability). */
int ap_quota_changed(const struct ap_quota *q, const struct ap_quota *prev);

/* 1 when the data is too old to act on (never polled, or 3 intervals without a successful poll). */
int ap_quota_stale(const struct ap_quota *q, int64_t now_ms);

/* JSON form (Redis value and event payload): {"poll_ms","ok","interval","error","models":{M:{"f","reset","avail"}}}. */
struct cJSON *ap_quota_to_json(const struct ap_quota *q);
int ap_quota_from_json(const struct cJSON *j, struct ap_quota *q);

/* Sets (or extends) a mark. */
int ap_marks_set(struct ap_marks *k, const char *model, int64_t until_ms);
/* The mark of a model still in force at now_ms, or 0. */
int64_t ap_marks_until(const struct ap_marks *k, const char *model, int64_t now_ms);

/* Whether a tier can be used now. */
int ap_tier_available(const struct ap_tier *t, const struct ap_quota *q, const struct ap_marks *k, int64_t now_ms);

/*
 * The tiers to try for `model`, best first, into out (up to max). Returns the
 * count; 0 means pass the request through unchanged (fallback disabled or the
 * model is not in the chain). When no tier is available, the requested one
 * alone is tried.
 */
size_t ap_fallback_plan(const struct ap_fallback *f, const struct ap_quota *q, const struct ap_marks *k,
                        const char *model, int64_t now_ms, const struct ap_tier **out, size_t max);

#endif
