/*
 * ap_store: the Redis data model (docs/redis.md) — key names and
 * the Lua scripts that read and write them. Everything about where data lives
 * in Redis is in this file and common/ap_store.c; nothing else spells a key.
 *
 *   {p}key:<sha256>           HASH  id name enabled created masked ver [policy] (one per API key;
 *                                   policy: canonical JSON of ap_policy)
 *   {p}keyid:<id>             STR   sha256 of the key with that id
 *   {p}keys                   ZSET  ids by creation time (ms * 1000 + sequence)
 *   {p}keyseq                 STR   tie-breaking sequence for keys created in the same ms
 *   {p}keynames               HASH  id -> name (kept after deletion, for history)
 *   {p}imported               SET   sha256 of keys imported from keys.json
 *   {p}u:all                  HASH  input output cache_creation cache_read cost requests errors refused
 *                                   (cost: nano-dollars of PRICES_CONFIG, wherever it appears)
 *   {p}u:k:<id>               HASH  same, plus last_used_ms
 *   {p}u:kd:<id>:<day>        HASH  totals + m:<model>:{total,requests,cost,input,output}
 *   {p}u:kh:<id>:<hour>       HASH  totals + m:<model>:...
 *   {p}u:km:<id>              HASH  m:<model>:...   (total_by_model)
 *   {p}u:kdays:<id> / u:khours:<id>   SET of buckets with usage for that key
 *   {p}u:d:<day>              HASH  totals + m:<model>:... + k:<id>:{input,output,requests,cost}
 *                                   + k:<id>:m:<model>:{total,requests,cost}
 *   {p}u:h:<hour>             HASH  totals + m:<model>:... + k:<id>:m:<model>:...
 *   {p}u:days / u:hours       SET   buckets with usage
 *   {p}flush:<batch id>       STR   idempotency mark of an applied usage batch
 *   {p}pl:<id>:...            per-key limits in flight (ap_policy_redis.h)
 *   {p}fallback:config        STR   the tier chain (FALLBACK_CONFIG as loaded by the active poller)
 *   {p}quota                  STR   JSON of ap_quota: per model fraction, resetTime, availability; poll time
 *   {p}exhausted              HASH  model -> until (ms): reactive fallback marks
 *   {p}poller:leader          STR   instance id of the active poller (a lease with a TTL)
 *   {p}fleet:<instance>       STR   a replica's heartbeat (JSON: id, version, started, in-flight...), TTL 30 s
 *   {p}fleet                  ZSET  instance ids by last heartbeat (ms, Redis's clock)
 *   {p}lark:event:<event_id>  STR   a Lark card action already acted on (1 day)
 *   {p}lark:cards             STREAM every card action (event_id, event_type, action, body), capped
 *   {p}lark:state:<state>     STR   an OAuth state minted by /admin/lark/authorize (10 minutes, used once)
 *   {p}lark:user_token        STR   JSON of the user token (+ obtained_at_ms, expires_at_ms)
 *   {p}events                 pub/sub channel (JSON messages):
 *        {"type":"key","hash","id","name","enabled","ver"[,"policy"][,"deleted"]}
 *        {"type":"quota","quota":{...}}   {"type":"config"}   {"type":"exhausted","model","until"}
 *        {"type":"lark_token"} (a user token was stored by the OAuth callback)
 * <day> is "YYYY-MM-DD" and <hour> "YYYY-MM-DD HH:00", both in USAGE_TZ.
 */
#ifndef AP_STORE_H
#define AP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ap_usage.h"

struct ap_delta;

#define AP_STORE_KEY_MAX 512
#define AP_MODEL_MAX 128

/* Sets the key prefix (default "ap:"); the string is copied. */
void ap_store_set_prefix(const char *prefix);
const char *ap_store_prefix(void);

/* snprintf-style: prefix + formatted suffix into out. Returns out. */
char *ap_store_key(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Outcomes of a request (ap_usage_rec.ok). */
#define AP_REC_ERROR 0      /* an error answer: counted in errors */
#define AP_REC_OK 1         /* 2xx: counted as a request */
#define AP_REC_REFUSED 2    /* refused by the key's policy: counted in refused, never in requests */

/* One finished request, as accounting sees it. */
struct ap_usage_rec {
    const char *key_id;
    const char *model;     /* served model; NULL or "" -> "unknown" */
    struct ap_usage usage;
    int64_t cost_nano;     /* its price (PRICES_CONFIG), nano-dollars */
    int64_t when_ms;       /* completion time */
    long tz_offset;        /* USAGE_TZ, seconds east of UTC */
    int ok;                /* AP_REC_OK, AP_REC_ERROR or AP_REC_REFUSED */
    int64_t count;         /* requests this record stands for (0 means 1); usage is their sum */
};

/* Expands finished requests (one, or `count` of one key/model/hour) into their counter updates. 0 or -1. */
int ap_store_record(struct ap_delta *d, const struct ap_usage_rec *r);

/* Makes a model name safe to use inside field names: bounded, no control characters. */
void ap_store_model_name(const char *model, char *out, size_t n);

/* A key about to be created: everything ap_script_key_create needs. */
struct ap_new_key {
    char secret[64];        /* the full key, shown once; wipe after use */
    char id[17];
    char hash[65];
    char masked[32];
    char created[40];       /* ISO 8601 in the usage offset */
    char created_ms[24];
    char name[256];
};

/* Generates a key named `name` (NULL/"" -> "unnamed"). 0, or -1 without randomness. */
int ap_store_new_key(struct ap_new_key *k, const char *name, long tz_offset);

/* ARGV (after the prefix) of ap_script_key_create for k: 6 strings. */
void ap_store_new_key_args(const struct ap_new_key *k, const char *args[6]);

/*
 * Admin paths and commands name a key by its id or by the key itself: the
 * scripts take both candidates (id, or "" when it cannot be one; sha256).
 */
void ap_store_key_ref(const char *key_or_id, char id[17], char hash[65]);

/* Lua scripts (EVAL with 0 keys; ARGV described in ap_store.c). */
extern const char ap_script_flush[];
extern const char ap_script_key_create[];
extern const char ap_script_key_set_enabled[];
extern const char ap_script_key_delete[];
extern const char ap_script_key_set_policy[];
extern const char ap_script_key_get[];
extern const char ap_script_keys_list[];
extern const char ap_script_export[];
extern const char ap_script_key_usage[];
extern const char ap_script_usage_total[];
extern const char ap_script_usage_daily[];
extern const char ap_script_usage_hourly[];
extern const char ap_script_usage_buckets[];
extern const char ap_script_import_key[];
extern const char ap_script_lease_renew[];
extern const char ap_script_lease_acquire[];
extern const char ap_script_lease_release[];
extern const char ap_script_set_publish[];
extern const char ap_script_set_if_changed[];
extern const char ap_script_mark_exhausted[];
extern const char ap_script_fallback_state[];
extern const char ap_script_lark_record[];
extern const char ap_script_fleet_beat[];
extern const char ap_script_fleet_leave[];
extern const char ap_script_fleet_list[];

#endif
