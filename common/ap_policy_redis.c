/*
 * Per-key limits in Redis; see ap_policy_redis.h. Every script runs with 0
 * declared keys and builds names from the prefix, like the others (ap_store.c).
 */
#include "ap_policy_redis.h"

#include "ap_policy.h"
#include "ap_store.h"

#include <stdio.h>
#include <string.h>

/*
 * ARGV: 1 prefix, 2 key id, 3 admission id, 4 lease ms (0: none), 5 rpm, 6 tpm,
 * 7 max_concurrent, 8 day (YYYY-MM-DD in USAGE_TZ), 9 daily_tokens,
 * 10 monthly_tokens, 11 daily nano-USD, 12 monthly nano-USD (limits: -1 for
 * none), 13 tokens for the tpm window, 14 tokens and 15 nano-USD to reserve
 * against the budgets.
 * What a period used is read from the usage counters (u:kd:<id>:<day>; the
 * month: its days so far), after folding the usage journal into them, so keys
 * without a budget pay nothing for the fold, nor keys without a monthly budget
 * for the month.
 *
 * Checks in order (the first that fails answers): rpm, tpm, concurrency,
 * daily tokens, monthly tokens, daily USD, monthly USD. Nothing is written
 * for a refusal. An admission id already admitted answers "admitted" again
 * and counts nothing twice.
 * Codes: 0 admitted, 1 rpm, 2 tpm, 3 concurrency, 4 daily tokens,
 * 5 monthly tokens, 6 daily USD, 7 monthly USD.
 */
const char ap_script_policy_admit[] =
    AP_LUA_POLICY_SETTLE
    AP_LUA_USAGE_FOLD
    "local p, kid, id = ARGV[1], ARGV[2], ARGV[3]\n"
    "local b = p..'pl:'..kid..':'\n"
    "local clock = redis.call('TIME')\n"
    "local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)\n"
    "local lease, rpm, tpm, cc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "local wt, rt, rn = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])\n"
    "local win, tv, live, adm = b..'win', b..'tv', b..'live', b..'adm'\n"
    /* Already admitted: where an admission leaves its mark (a lease, else a window entry). */
    "if (lease > 0 and redis.call('HEXISTS', adm, id) == 1) or (lease <= 0 and redis.call('ZSCORE', win, id)) then\n"
    "  return {0, 0, -1, -1, 0, 0}\n"
    "end\n"
    /* Leases nobody renews any more: their replica died. */
    "for _, x in ipairs(redis.call('ZRANGEBYSCORE', live, '-inf', now, 'LIMIT', 0, 100)) do\n"
    "  pl_release(b, x)\n"
    "end\n"
    "local n, sum = 0, 0\n"
    "local from = now - 60000\n"
    "if rpm >= 0 or tpm >= 0 then\n"
    "  local gone = 0\n"
    "  for _, x in ipairs(redis.call('ZRANGEBYSCORE', win, '-inf', from, 'LIMIT', 0, 1000)) do\n"
    "    local v = redis.call('HGET', tv, x)\n"
    "    if v then gone = gone + tonumber(v); redis.call('HDEL', tv, x) end\n"
    "    redis.call('ZREM', win, x)\n"
    "  end\n"
    "  if gone ~= 0 then redis.call('HINCRBY', tv, 'sum', -gone) end\n"
    "  n = redis.call('ZCOUNT', win, '('..from, '+inf')\n"
    "  sum = tonumber(redis.call('HGET', tv, 'sum') or '0')\n"
    "  if rpm >= 0 and n >= rpm then\n"
    "    local first = redis.call('ZRANGEBYSCORE', win, '('..from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)\n"
    "    local retry = 60000\n"
    "    if #first == 2 then retry = tonumber(first[2]) + 60000 - now end\n"
    "    return {1, retry, 0, -1, n, 0}\n"
    "  end\n"
    "  if tpm >= 0 and sum >= tpm then\n"
    /* The retry: when enough of the window's tokens will have left it. */
    "    local retry, s = 60000, sum\n"
    "    local l = redis.call('ZRANGEBYSCORE', win, '('..from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1000)\n"
    "    for i = 1, #l, 2 do\n"
    "      s = s - tonumber(redis.call('HGET', tv, l[i]) or '0')\n"
    "      if s < tpm then retry = tonumber(l[i+1]) + 60000 - now; break end\n"
    "    end\n"
    "    return {2, retry, rpm >= 0 and rpm - n or -1, 0, sum, 0}\n"
    "  end\n"
    "end\n"
    "if cc >= 0 then\n"
    "  local busy = redis.call('ZCOUNT', live, '('..now, '+inf')\n"
    "  if busy >= cc then return {3, 1000, -1, -1, busy, 0} end\n"
    "end\n"
    "local lim = {tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])}\n"
    "if lim[1] >= 0 or lim[2] >= 0 or lim[3] >= 0 or lim[4] >= 0 then\n"
    "  local r = redis.call('HMGET', b..'r', 't', 'n')\n"
    "  local held_t, held_n = tonumber(r[1] or '0'), tonumber(r[2] or '0')\n"
    /* Only the periods that have a limit are read, once the usage journal is in the counters. */
    "  ap_fold(p)\n"
    "  local kd = p..'u:kd:'..kid..':'\n"
    "  local used = {0, 0, 0, 0}\n"
    "  if lim[1] >= 0 or lim[3] >= 0 then\n"
    "    local d = redis.call('HMGET', kd..ARGV[8], 'input', 'output', 'cost')\n"
    "    used[1] = tonumber(d[1] or '0') + tonumber(d[2] or '0'); used[3] = tonumber(d[3] or '0')\n"
    "  end\n"
    "  if lim[2] >= 0 or lim[4] >= 0 then\n"
    "    local month, today = string.sub(ARGV[8], 1, 8), tonumber(string.sub(ARGV[8], 9, 10)) or 0\n"
    "    for dd = 1, today do\n"
    "      local d = redis.call('HMGET', kd..month..string.format('%02d', dd), 'input', 'output', 'cost')\n"
    "      used[2] = used[2] + tonumber(d[1] or '0') + tonumber(d[2] or '0')\n"
    "      used[4] = used[4] + tonumber(d[3] or '0')\n"
    "    end\n"
    "  end\n"
    "  local held = {held_t, held_t, held_n, held_n}\n"
    "  local need = {rt, rt, rn, rn}\n"
    "  for i = 1, 4 do\n"
    "    if lim[i] >= 0 and used[i] + held[i] + need[i] > lim[i] then\n"
    "      return {3 + i, 0, -1, -1, used[i], held[i]}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if rpm >= 0 or tpm >= 0 then\n"
    "  redis.call('ZADD', win, now, id)\n"
    "  redis.call('PEXPIRE', win, 61000)\n"
    "  if tpm >= 0 then\n"
    "    redis.call('HSET', tv, id, wt)\n"
    "    redis.call('HINCRBY', tv, 'sum', wt)\n"
    "    redis.call('PEXPIRE', tv, 61000)\n"
    "  end\n"
    "end\n"
    "if lease > 0 then\n"
    "  redis.call('HSET', adm, id, string.format('%d %d', rt, rn))\n"
    "  redis.call('ZADD', live, now + lease, id)\n"
    "  if rt ~= 0 then redis.call('HINCRBY', b..'r', 't', rt) end\n"
    "  if rn ~= 0 then redis.call('HINCRBY', b..'r', 'n', rn) end\n"
    "end\n"
    "local tleft = -1\n"
    "if tpm >= 0 then tleft = math.max(0, tpm - sum - wt) end\n"
    "return {0, 0, rpm >= 0 and rpm - n - 1 or -1, tleft, 0, 0}\n";

/* ARGV: lease ms, then (base, admission id) pairs. ZADD XX: a lease already released stays released. */
const char ap_script_policy_renew[] =
    "local clock = redis.call('TIME')\n"
    "local untl = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[1])\n"
    "local n = 0\n"
    "for i = 2, #ARGV - 1, 2 do\n"
    "  n = n + redis.call('ZADD', ARGV[i]..'live', 'XX', 'CH', untl, ARGV[i+1])\n"
    "end\n"
    "return n\n";

void ap_policy_base(const char *key_id, char *out, size_t n)
{
    ap_store_key(out, n, "pl:%s:", key_id);
}

void ap_policy_admit_args(const struct ap_policy *p, const struct ap_admit_req *q, const char *script_or_sha,
                          int by_sha, struct ap_admit_args *out)
{
    const int64_t nums[] = {q->lease_ms, p->rpm, p->tpm, p->max_concurrent, p->daily_tokens, p->monthly_tokens,
                            p->daily_nano, p->monthly_nano, q->window_tokens, q->reserve_tokens, q->reserve_nano};
    const char **a = out->argv;
    int i = 0;
    a[i++] = by_sha ? "EVALSHA" : "EVAL";
    a[i++] = script_or_sha;
    a[i++] = "0";
    a[i++] = ap_store_prefix();
    a[i++] = q->key_id;
    a[i++] = q->admission_id;
    for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++) {
        snprintf(out->num[k], sizeof(out->num[k]), "%lld", (long long)nums[k]);
        if (k == 4) /* after the three counts: the day, then the budgets */
            a[i++] = q->day;
        a[i++] = out->num[k];
    }
}
