/*
 * ap_policy_redis: the Redis side of per-key limits. One atomic script per
 * admission, the settlement run inside the usage batch, lease renewal.
 *
 * Per key id, under the prefix (README "Redis data model"):
 *   pl:<id>:win    ZSET  admission id -> admission time (ms): the sliding 60 s window (rpm, tpm)
 *   pl:<id>:tv     HASH  admission id -> tokens it counts in the window; "sum" -> their total (tpm)
 *   pl:<id>:live   ZSET  admission id -> lease expiry (ms): requests in flight (max_concurrent,
 *                        budget reservations), renewed by their replica; a lapsed lease frees itself
 *   pl:<id>:adm    HASH  admission id -> "tokens nano" reserved for it against the budgets
 *   pl:<id>:r      HASH  t, n: the sum of those reservations
 * Budgets compare with the usage counters themselves (u:kd:<id>:<day>: input +
 * output tokens, cost in nano-dollars; a month is its days so far), so a
 * budget means what the usage views show. Times are Redis's own clock (TIME),
 * the same for every replica.
 *
 * Admission, with R the reservations in flight and U what the period used:
 * admitted while U + R + this reservation <= the limit. Settlement releases
 * the reservation in the same script that adds the real usage to U (the
 * usage batch), so U + R never passes the limit at any instant, and U stays
 * within it whenever real usage stays within what was reserved.
 */
#ifndef AP_POLICY_REDIS_H
#define AP_POLICY_REDIS_H

#include <stddef.h>
#include <stdint.h>

struct ap_policy;

/*
 * Lua shared by the admission script and the usage flush script:
 * pl_release(base, id) frees an admission's slot and reservation;
 * pl_settle(base, id, tokens) does that and puts the real tokens in the tpm
 * window in place of the estimate (tokens < 0: takes the admission back from
 * the window too). Both are idempotent: a second call finds nothing to do.
 */
#define AP_LUA_POLICY_SETTLE                                                   \
    "local function pl_release(b, id)\n"                                       \
    "  local rec = redis.call('HGET', b..'adm', id)\n"                         \
    "  if rec then\n"                                                          \
    "    local t, n = string.match(rec, '^(%-?%d+) (%-?%d+)$')\n"              \
    "    t, n = tonumber(t) or 0, tonumber(n) or 0\n"                          \
    "    if t ~= 0 then redis.call('HINCRBY', b..'r', 't', -t) end\n"          \
    "    if n ~= 0 then redis.call('HINCRBY', b..'r', 'n', -n) end\n"          \
    "    redis.call('HDEL', b..'adm', id)\n"                                   \
    "  end\n"                                                                  \
    "  redis.call('ZREM', b..'live', id)\n"                                    \
    /* Nothing in flight: nothing held; no hash of zeros left behind per key. */ \
    "  if redis.call('EXISTS', b..'live') == 0 then redis.call('DEL', b..'r') end\n" \
    "end\n"                                                                    \
    "local function pl_settle(b, id, v)\n"                                     \
    "  pl_release(b, id)\n"                                                    \
    "  v = tonumber(v)\n"                                                      \
    "  local old = redis.call('HGET', b..'tv', id)\n"                          \
    "  if v < 0 then\n"                                                        \
    "    redis.call('ZREM', b..'win', id)\n"                                   \
    "    if old then\n"                                                        \
    "      redis.call('HDEL', b..'tv', id)\n"                                  \
    "      redis.call('HINCRBY', b..'tv', 'sum', -tonumber(old))\n"            \
    "    end\n"                                                                \
    "  elseif old and tonumber(old) ~= v then\n"                               \
    "    redis.call('HSET', b..'tv', id, v)\n"                                 \
    "    redis.call('HINCRBY', b..'tv', 'sum', v - tonumber(old))\n"           \
    "  end\n"                                                                  \
    "end\n"

/* ARGV: see ap_policy_admit_args. Returns {code, retry_ms, rpm_remaining, tpm_remaining, used, reserved}. */
extern const char ap_script_policy_admit[];
/* ARGV: lease ms, then (base, admission id) pairs. Extends the leases still held; returns how many. */
extern const char ap_script_policy_renew[];

/* "<prefix>pl:<id>:" (out >= AP_POLICY_BASE_MAX). */
#define AP_POLICY_BASE_MAX 128
void ap_policy_base(const char *key_id, char *out, size_t n);

/* What one admission asks for. */
struct ap_admit_req {
    const char *key_id;
    const char *admission_id;
    int64_t lease_ms;           /* 0: no lease */
    char day[11];               /* USAGE_TZ day of the usage counters (YYYY-MM-DD) */
    int64_t window_tokens;      /* counted in the tpm window until settled */
    int64_t reserve_tokens;     /* held against the token budgets (0: none) */
    int64_t reserve_nano;       /* held against the spend budgets (0: none) */
};

#define AP_ADMIT_ARGC 18
/*
 * The admission command: EVALSHA/EVAL, script (text or SHA-1), "0", then the
 * ARGV of ap_script_policy_admit. `num` holds the digits (the strings point into it).
 */
struct ap_admit_args {
    const char *argv[AP_ADMIT_ARGC];
    char num[12][24];
};
void ap_policy_admit_args(const struct ap_policy *p, const struct ap_admit_req *q, const char *script_or_sha,
                          int by_sha, struct ap_admit_args *out);

#endif
