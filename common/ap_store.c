/*
 * Redis data model: key names, the per-request counter expansion, and the Lua
 * scripts. Scripts run with 0 declared keys and build key names from ARGV[1]
 * (the prefix): fine for a standalone Redis, which is what docs/contract.md describes;
 * a Redis Cluster would need hash tags here.
 * Every script that changes a key record publishes the new state on
 * {p}events in the same atomic step, so no replica can miss a change that
 * was stored (a replica that was disconnected reloads on resubscribe).
 */
#include "ap_store.h"

#include "ap_keys.h"
#include "ap_policy_redis.h"
#include "ap_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static char store_prefix[64] = "ap:";

void ap_store_set_prefix(const char *prefix)
{
    snprintf(store_prefix, sizeof(store_prefix), "%s", prefix);
}

const char *ap_store_prefix(void)
{
    return store_prefix;
}

char *ap_store_key(char *out, size_t n, const char *fmt, ...)
{
    size_t pl = strlen(store_prefix);
    if (pl >= n)
        pl = n - 1;
    memcpy(out, store_prefix, pl);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + pl, n - pl, fmt, ap);
    va_end(ap);
    return out;
}

void ap_store_model_name(const char *model, char *out, size_t n)
{
    size_t o = 0;
    if (model == NULL || model[0] == '\0')
        model = "unknown";
    for (const char *s = model; *s != '\0' && o + 1 < n; s++)
        out[o++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '_' : *s;
    out[o] = '\0';
}

int ap_store_usage_line(char *out, size_t n, const struct ap_usage_rec *r)
{
    char hour[17], model[AP_MODEL_MAX];
    const struct ap_usage *u = &r->usage;
    ap_time_hour((time_t)(r->when_ms / 1000), r->tz_offset, hour);
    /* Control bytes (tab and newline among them) become '_': the line's separators stay unambiguous. */
    ap_store_model_name(r->model, model, sizeof(model));
    int len = snprintf(out, n, "%s\t%d\t%s\t%s\t%lld\t%lld\t%lld\t%lld\t%lld\t%lld\t%lld", r->key_id,
                       r->ok, hour, model, (long long)(r->count > 0 ? r->count : 1), (long long)u->input,
                       (long long)u->output, (long long)u->cache_creation, (long long)u->cache_read,
                       (long long)r->cost_nano, (long long)r->when_ms);
    return len < 0 || (size_t)len >= n ? -1 : len;
}

int ap_store_new_key(struct ap_new_key *k, const char *name, long tz_offset)
{
    memset(k, 0, sizeof(*k));
    snprintf(k->name, sizeof(k->name), "%s", name && name[0] ? name : "unnamed");
    if (ap_key_generate(k->secret, sizeof(k->secret)) < 0 || ap_key_id_generate(k->id) < 0)
        return -1;
    ap_sha256_hex(k->secret, strlen(k->secret), k->hash);
    ap_key_mask(k->secret, k->masked, sizeof(k->masked));
    int64_t now = ap_now_ms();
    ap_time_iso((time_t)(now / 1000), tz_offset, k->created, sizeof(k->created));
    snprintf(k->created_ms, sizeof(k->created_ms), "%lld", (long long)now);
    return 0;
}

void ap_store_new_key_args(const struct ap_new_key *k, const char *args[6])
{
    args[0] = k->hash;
    args[1] = k->id;
    args[2] = k->name;
    args[3] = k->created;
    args[4] = k->masked;
    args[5] = k->created_ms;
}

void ap_store_key_ref(const char *key_or_id, char id[17], char hash[65])
{
    size_t n = strlen(key_or_id);
    int is_id = n == 16;
    for (size_t i = 0; is_id && i < n; i++)
        is_id = (key_or_id[i] >= '0' && key_or_id[i] <= '9') || (key_or_id[i] >= 'a' && key_or_id[i] <= 'f');
    if (is_id)
        memcpy(id, key_or_id, 17);
    else
        id[0] = '\0';
    ap_sha256_hex(key_or_id, n, hash);
}

/* ---- Lua ---- */

/*
 * Applies op/key/field/value quads from ARGV[start] on: i = HINCRBY, m = keep
 * max, s = SADD; `extra` may add operations (an "elseif" branch).
 */
#define LUA_APPLY_OPS(start, extra)                                            \
    "local i = " start "\n"                                                    \
    "while i + 3 <= #ARGV do\n"                                                \
    "  local op, k, f, v = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]\n"         \
    "  if op == 'i' then redis.call('HINCRBY', k, f, v)\n"                     \
    "  elseif op == 'm' then\n"                                                \
    "    local cur = tonumber(redis.call('HGET', k, f) or '0') or 0\n"         \
    "    if tonumber(v) > cur then redis.call('HSET', k, f, v) end\n"          \
    "  elseif op == 's' then redis.call('SADD', k, f)\n"                       \
    extra                                                                      \
    "  end\n"                                                                  \
    "  i = i + 4\n"                                                            \
    "end\n"

/* ARGV[2] is a key id or '', ARGV[3] a key's sha256 or ''; sets h (hash) and rk (record key). */
#define LUA_RESOLVE                                                            \
    "local p = ARGV[1]\n"                                                      \
    "local h = false\n"                                                        \
    "if ARGV[2] ~= '' then h = redis.call('GET', p..'keyid:'..ARGV[2]) end\n"  \
    "if not h and ARGV[3] ~= '' then h = ARGV[3] end\n"                        \
    "if not h or redis.call('EXISTS', p..'key:'..h) == 0 then return false end\n" \
    "local rk = p..'key:'..h\n"

/*
 * Every change bumps the record's "ver"; replicas ignore data older than what
 * they hold, so a stale read racing with an event cannot undo the event.
 */
#define LUA_PUBLISH_KEY(extra)                                                 \
    "local rec = redis.call('HMGET', rk, 'id', 'name', 'enabled', 'ver', 'policy')\n" \
    "redis.call('PUBLISH', p..'events', cjson.encode({type='key', hash=h, "     \
    "id=rec[1], name=rec[2], enabled=(rec[3]=='1'), ver=tonumber(rec[4]), "    \
    "policy=(rec[5] or nil)" extra "}))\n"

/* The first step of every script that reads usage counters: the journal goes into them (ARGV[1]: prefix). */
#define LUA_FOLD_FIRST AP_LUA_USAGE_FOLD "ap_fold(ARGV[1])\n"

/*
 * ARGV: mark key, batch number, prefix, n, n usage lines
 * (ap_store_usage_line), then op/key/field/value quads. Returns 1 if applied,
 * 0 if this batch was applied before: a replica process writes its batches in
 * order, so the mark key holds the highest number applied (one key per
 * replica process, not one per batch). A batch applied before still writes
 * (the mark's expiry): WAIT vouches only for the writes of its own
 * connection, and a rewrite on a new connection must give it one.
 * The lines are appended to the journal, which is folded into the counters
 * once it holds AP_USAGE_FOLD_LINES lines (and by every reader): one batch
 * costs Redis two writes, not the ~45 counter updates of each line.
 * Besides counters, a batch settles the policy admissions of the requests it
 * counts (op p: base, admission id, real tokens): the reservation is
 * released in the same atomic step that adds the real usage to the journal,
 * and the admission script folds the journal before it reads a budget.
 */
const char ap_script_flush[] =
    AP_LUA_POLICY_SETTLE
    AP_LUA_USAGE_FOLD
    "if tonumber(ARGV[2]) <= (tonumber(redis.call('GET', ARGV[1]) or '0') or 0) then\n"
    "  redis.call('EXPIRE', ARGV[1], " AP_STORE_XSTR(AP_USAGE_MARK_TTL_S) ")\n"
    "  return 0\n"
    "end\n"
    "redis.call('SET', ARGV[1], ARGV[2], 'EX', " AP_STORE_XSTR(AP_USAGE_MARK_TTL_S) ")\n"
    "local nl = tonumber(ARGV[4])\n"
    "if nl > 0 and redis.call('RPUSH', ARGV[3]..'u:journal', unpack(ARGV, 5, 4 + nl)) >= "
    AP_STORE_XSTR(AP_USAGE_FOLD_LINES) " then\n"
    "  ap_fold(ARGV[3])\n"
    "end\n"
    LUA_APPLY_OPS("5 + nl", "  elseif op == 'p' then pl_settle(k, f, v)\n")
    "return 1\n";

/* ARGV: prefix. Folds the usage journal now; returns the number of lines folded. */
const char ap_script_usage_fold[] =
    AP_LUA_USAGE_FOLD
    "return ap_fold(ARGV[1])\n";

/*
 * ARGV: prefix, sha256, id, name, created (ISO), masked, created_ms, policy
 * (canonical JSON, '' for none). Returns 1, or 0 if it exists.
 */
const char ap_script_key_create[] =
    "local p, h = ARGV[1], ARGV[2]\n"
    "local rk = p..'key:'..h\n"
    "if redis.call('EXISTS', rk) == 1 then return 0 end\n"
    "redis.call('HSET', rk, 'id', ARGV[3], 'name', ARGV[4], 'enabled', '1', 'created', ARGV[5], 'masked', ARGV[6], 'ver', 1)\n"
    "if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', rk, 'policy', ARGV[8]) end\n"
    "redis.call('SET', p..'keyid:'..ARGV[3], h)\n"
    /* Ordered by creation time; keys made in the same millisecond keep their order. */
    "local seq = redis.call('INCR', p..'keyseq') % 1000\n"
    "redis.call('ZADD', p..'keys', tonumber(ARGV[7]) * 1000 + seq, ARGV[3])\n"
    "redis.call('HSET', p..'keynames', ARGV[3], ARGV[4])\n"
    LUA_PUBLISH_KEY("")
    "return 1\n";

/* ARGV: prefix, id, sha256, '1'|'0'. Returns {id, name} or nil. */
const char ap_script_key_set_enabled[] =
    LUA_RESOLVE
    "redis.call('HSET', rk, 'enabled', ARGV[4])\n"
    "redis.call('HINCRBY', rk, 'ver', 1)\n"
    LUA_PUBLISH_KEY("")
    "return {rec[1], rec[2]}\n";

/*
 * ARGV: prefix, id, sha256, policy (canonical JSON; '' clears it). Returns
 * {id, name, policy or false} or nil. Every replica applies it from the event.
 */
const char ap_script_key_set_policy[] =
    LUA_RESOLVE
    "if ARGV[4] == '' then redis.call('HDEL', rk, 'policy') else redis.call('HSET', rk, 'policy', ARGV[4]) end\n"
    "redis.call('HINCRBY', rk, 'ver', 1)\n"
    LUA_PUBLISH_KEY("")
    "return {rec[1], rec[2], rec[5]}\n";

/* ARGV: prefix, id, sha256. Returns {record} or nil. */
const char ap_script_key_get[] =
    LUA_RESOLVE
    "return {redis.call('HGETALL', rk)}\n";

/* ARGV: prefix, id, sha256. Returns {id, name} or nil. Usage history is kept. */
const char ap_script_key_delete[] =
    LUA_RESOLVE
    "redis.call('HINCRBY', rk, 'ver', 1)\n"
    LUA_PUBLISH_KEY(", deleted=true")
    "redis.call('DEL', rk)\n"
    "if rec[1] then redis.call('DEL', p..'keyid:'..rec[1]); redis.call('ZREM', p..'keys', rec[1]) end\n"
    "return {rec[1], rec[2]}\n";

/* ARGV: prefix. Returns {{record, totals}, ...} in creation order. */
const char ap_script_keys_list[] =
    LUA_FOLD_FIRST
    "local p = ARGV[1]\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', p..'keys', 0, -1)) do\n"
    "  local h = redis.call('GET', p..'keyid:'..id)\n"
    "  if h then\n"
    "    out[#out+1] = {redis.call('HGETALL', p..'key:'..h), redis.call('HGETALL', p..'u:k:'..id)}\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: prefix, id, sha256. Returns {record, totals, {day, hash, ...}, {hour, hash, ...}, by_model} or nil. */
const char ap_script_key_usage[] =
    LUA_FOLD_FIRST
    LUA_RESOLVE
    "local id = redis.call('HGET', rk, 'id')\n"
    "local function buckets(set, pre)\n"
    "  local out = {}\n"
    "  for _, b in ipairs(redis.call('SMEMBERS', p..set..id)) do\n"
    "    out[#out+1] = b\n"
    "    out[#out+1] = redis.call('HGETALL', p..pre..id..':'..b)\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "return {redis.call('HGETALL', rk), redis.call('HGETALL', p..'u:k:'..id),\n"
    "        buckets('u:kdays:', 'u:kd:'), buckets('u:khours:', 'u:kh:'),\n"
    "        redis.call('HGETALL', p..'u:km:'..id)}\n";

/*
 * ARGV: prefix. Every key with its whole history, for GET /admin/export:
 * {{sha256, record, totals, {day, hash, ...}, {hour, hash, ...}, by_model}, ...}.
 */
const char ap_script_export[] =
    LUA_FOLD_FIRST
    "local p = ARGV[1]\n"
    "local out = {}\n"
    "local function buckets(id, set, pre)\n"
    "  local r = {}\n"
    "  for _, b in ipairs(redis.call('SMEMBERS', p..set..id)) do\n"
    "    r[#r+1] = b\n"
    "    r[#r+1] = redis.call('HGETALL', p..pre..id..':'..b)\n"
    "  end\n"
    "  return r\n"
    "end\n"
    "for _, id in ipairs(redis.call('ZRANGE', p..'keys', 0, -1)) do\n"
    "  local h = redis.call('GET', p..'keyid:'..id)\n"
    "  if h then\n"
    "    out[#out+1] = {h, redis.call('HGETALL', p..'key:'..h), redis.call('HGETALL', p..'u:k:'..id),\n"
    "                   buckets(id, 'u:kdays:', 'u:kd:'), buckets(id, 'u:khours:', 'u:kh:'),\n"
    "                   redis.call('HGETALL', p..'u:km:'..id)}\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: prefix. Returns {totals, number of keys, number of enabled keys}. */
const char ap_script_usage_total[] =
    LUA_FOLD_FIRST
    "local p = ARGV[1]\n"
    "local ids = redis.call('ZRANGE', p..'keys', 0, -1)\n"
    "local active = 0\n"
    "for _, id in ipairs(ids) do\n"
    "  local h = redis.call('GET', p..'keyid:'..id)\n"
    "  if h and redis.call('HGET', p..'key:'..h, 'enabled') == '1' then active = active + 1 end\n"
    "end\n"
    "return {redis.call('HGETALL', p..'u:all'), #ids, active}\n";

/* ARGV: prefix, day or ''. Returns {id->name, {day, hash, ...}}. */
const char ap_script_usage_daily[] =
    LUA_FOLD_FIRST
    "local p = ARGV[1]\n"
    "local days = ARGV[2] ~= '' and {ARGV[2]} or redis.call('SMEMBERS', p..'u:days')\n"
    "local out = {}\n"
    "for _, d in ipairs(days) do\n"
    "  local hsh = redis.call('HGETALL', p..'u:d:'..d)\n"
    "  if #hsh > 0 then out[#out+1] = d; out[#out+1] = hsh end\n"
    "end\n"
    "return {redis.call('HGETALL', p..'keynames'), out}\n";

/* ARGV: prefix, day prefix or ''. Returns {id->name, {hour, hash, ...}}. */
const char ap_script_usage_hourly[] =
    LUA_FOLD_FIRST
    "local p, want = ARGV[1], ARGV[2]\n"
    "local out = {}\n"
    "for _, h in ipairs(redis.call('SMEMBERS', p..'u:hours')) do\n"
    "  if want == '' or string.sub(h, 1, #want) == want then\n"
    "    out[#out+1] = h; out[#out+1] = redis.call('HGETALL', p..'u:h:'..h)\n"
    "  end\n"
    "end\n"
    "return {redis.call('HGETALL', p..'keynames'), out}\n";

/*
 * ARGV: prefix, 'd' or 'h', then the buckets of a range. Returns
 * {id->name, {bucket, hash, ...}}, the shape of the two scripts above, for
 * the buckets that hold data.
 */
const char ap_script_usage_buckets[] =
    LUA_FOLD_FIRST
    "local p = ARGV[1]\n"
    "local pre = p..(ARGV[2] == 'h' and 'u:h:' or 'u:d:')\n"
    "local out = {}\n"
    "for i = 3, #ARGV do\n"
    "  local hsh = redis.call('HGETALL', pre..ARGV[i])\n"
    "  if #hsh > 0 then out[#out+1] = ARGV[i]; out[#out+1] = hsh end\n"
    "end\n"
    "return {redis.call('HGETALL', p..'keynames'), out}\n";

/*
 * ARGV: prefix, sha256, id, name, enabled, created, masked, created_ms,
 * policy ('' for none), then usage quads. Imports once per key hash, ever
 * (deleting the key later does not make a re-import resurrect it). Returns 1
 * if imported, 0 if not needed, -1 when the id (from an export) belongs to
 * another key.
 */
const char ap_script_import_key[] =
    "local p, h = ARGV[1], ARGV[2]\n"
    "local rk = p..'key:'..h\n"
    "if redis.call('SISMEMBER', p..'imported', h) == 1 then return 0 end\n"
    "if redis.call('EXISTS', rk) == 1 then redis.call('SADD', p..'imported', h); return 0 end\n"
    "if redis.call('EXISTS', p..'keyid:'..ARGV[3]) == 1 then return -1 end\n"
    "redis.call('SADD', p..'imported', h)\n"
    "redis.call('HSET', rk, 'id', ARGV[3], 'name', ARGV[4], 'enabled', ARGV[5], 'created', ARGV[6], 'masked', ARGV[7], 'ver', 1)\n"
    "redis.call('SET', p..'keyid:'..ARGV[3], h)\n"
    "redis.call('ZADD', p..'keys', ARGV[8], ARGV[3])\n"
    "redis.call('HSET', p..'keynames', ARGV[3], ARGV[4])\n"
    LUA_APPLY_OPS("10", "")
    "if ARGV[9] ~= '' then redis.call('HSET', rk, 'policy', ARGV[9]) end\n"
    LUA_PUBLISH_KEY("")
    "return 1\n";

/* ---- the fleet ---- */

/* Redis's clock, so replicas with skewed clocks agree on who was seen when. */
#define LUA_NOW_MS                                                             \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* ARGV: prefix, instance id, record (JSON), ttl ms. Stores a heartbeat; forgets replicas silent past the ttl. */
const char ap_script_fleet_beat[] =
    "local p, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])\n"
    LUA_NOW_MS
    "redis.call('SET', p..'fleet:'..id, ARGV[3], 'PX', ttl)\n"
    "redis.call('ZADD', p..'fleet', now, id)\n"
    "redis.call('ZREMRANGEBYSCORE', p..'fleet', '-inf', now - ttl)\n"
    "return now\n";

/* ARGV: prefix, instance id. A replica that stopped leaves the fleet at once. */
const char ap_script_fleet_leave[] =
    "redis.call('DEL', ARGV[1]..'fleet:'..ARGV[2])\n"
    "return redis.call('ZREM', ARGV[1]..'fleet', ARGV[2])\n";

/* ARGV: prefix, window ms. Returns {now ms, {id, seen ms, record, ...}} of the replicas seen within the window. */
const char ap_script_fleet_list[] =
    "local p, w = ARGV[1], tonumber(ARGV[2])\n"
    LUA_NOW_MS
    "local ids = redis.call('ZRANGEBYSCORE', p..'fleet', now - w, '+inf', 'WITHSCORES')\n"
    "local out = {}\n"
    "for i = 1, #ids, 2 do\n"
    "  local rec = redis.call('GET', p..'fleet:'..ids[i])\n"
    "  if rec then out[#out+1] = ids[i]; out[#out+1] = ids[i+1]; out[#out+1] = rec end\n"
    "end\n"
    "return {now, out}\n";

/* ---- poller and fallback ---- */

/*
 * ARGV: lease key, owner, ttl ms. Takes a free lease, or extends one that is already
 * ours (a poller back from a Redis failover resumes its own lease at once instead
 * of waiting for it to lapse; a leader keeps a lease that lapsed if nobody took it).
 * Returns 1 if the lease is ours now, else 0.
 */
const char ap_script_lease_acquire[] =
    "local v = redis.call('GET', ARGV[1])\n"
    "if v == ARGV[2] then redis.call('PEXPIRE', ARGV[1], ARGV[3]) return 1 end\n"
    "if v then return 0 end\n"
    "redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])\n"
    "return 1\n";

/* ARGV: lease key, owner. Deletes the lease only if it is ours. */
const char ap_script_lease_release[] =
    "if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('DEL', ARGV[1]) end\n"
    "return 0\n";

/* ARGV: key, value, channel, message ('' for none). SET, then PUBLISH, atomically. */
const char ap_script_set_publish[] =
    "redis.call('SET', ARGV[1], ARGV[2])\n"
    "if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end\n"
    "return 1\n";

/* ARGV: key, value, channel, message. SET and PUBLISH only when the value changes. */
const char ap_script_set_if_changed[] =
    "if redis.call('GET', ARGV[1]) == ARGV[2] then return 0 end\n"
    "redis.call('SET', ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "return 1\n";

/*
 * ARGV: marks hash, model, until ms, channel, message, now ms. Keeps the later
 * mark, drops expired ones, publishes. Returns the mark in force.
 */
const char ap_script_mark_exhausted[] =
    "local cur = tonumber(redis.call('HGET', ARGV[1], ARGV[2]) or '0') or 0\n"
    "if tonumber(ARGV[3]) > cur then\n"
    "  redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])\n"
    "  redis.call('PUBLISH', ARGV[4], ARGV[5])\n"
    "  cur = tonumber(ARGV[3])\n"
    "end\n"
    "local all = redis.call('HGETALL', ARGV[1])\n"
    "for i = 1, #all, 2 do\n"
    "  if tonumber(all[i+1]) < tonumber(ARGV[6]) then redis.call('HDEL', ARGV[1], all[i]) end\n"
    "end\n"
    "return cur\n";

/* ARGV: prefix. Returns {chain JSON or false, quota JSON or false, marks HGETALL}. */
const char ap_script_fallback_state[] =
    "local p = ARGV[1]\n"
    "return {redis.call('GET', p..'fallback:config'), redis.call('GET', p..'quota'),\n"
    "        redis.call('HGETALL', p..'exhausted')}\n";

/*
 * ARGV: seen key ('' when the event has no id), stream, maxlen, event_id,
 * event_type, action, body. Records a Lark card action once per event id.
 * Returns 1 when it is new (act on it), 0 for a redelivery.
 */
const char ap_script_lark_record[] =
    "if ARGV[1] ~= '' and not redis.call('SET', ARGV[1], '1', 'NX', 'EX', 86400) then return 0 end\n"
    "redis.call('XADD', ARGV[2], 'MAXLEN', '~', ARGV[3], '*', 'event_id', ARGV[4], 'event_type', ARGV[5],\n"
    "           'action', ARGV[6], 'body', ARGV[7])\n"
    "return 1\n";
