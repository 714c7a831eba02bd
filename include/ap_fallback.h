/*
 * ap_fallback: the tier chain (the original's fallback.json, docs/contract.md section 5).
 * Parsing and validation only; quota state and tier choice build on it.
 */
#ifndef AP_FALLBACK_H
#define AP_FALLBACK_H

#include <stddef.h>

enum ap_tier_type { AP_TIER_ANTIGRAVITY, AP_TIER_UPSTREAM, AP_TIER_EXTERNAL };

struct ap_tier {
    char *name;             /* owned */
    char *model;            /* owned */
    char *health_key;       /* owned; defaults to model */
    enum ap_tier_type type;
    char *base_url;         /* owned; external only, without trailing '/' */
    char *api_key;          /* owned secret; external only (api_key or $api_key_env) */
    long max_tokens_limit;  /* external only; 0: none */
};

struct ap_fallback {
    int enabled;
    double poll_interval;       /* health_poll_interval_seconds (30) */
    double min_remaining;       /* min_remaining_fraction (0.05) */
    double cooldown;            /* reactive_cooldown_seconds (60) */
    double recovery_margin;     /* recovery_margin (0) */
    struct ap_tier *tiers;      /* owned */
    size_t ntiers;
    int refs;                   /* holders; the chain can be replaced while requests use the old one */
};

/* Parses and validates; NULL with a message in err (e.g. "tiers[2]: external tier needs base_url"). */
struct ap_fallback *ap_fallback_parse(const char *json, size_t len, char *err, size_t errlen);
struct ap_fallback *ap_fallback_load(const char *path, char *err, size_t errlen);
/* Takes a reference (returns f); ap_fallback_free drops one and frees at zero. NULL allowed. */
struct ap_fallback *ap_fallback_ref(struct ap_fallback *f);
void ap_fallback_free(struct ap_fallback *f);

/* The tier serving `model`, or NULL. */
const struct ap_tier *ap_fallback_find(const struct ap_fallback *f, const char *model);

const char *ap_tier_type_name(enum ap_tier_type t);

#endif
