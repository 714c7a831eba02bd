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
 *   {p}u:journal              LIST  usage lines not yet folded into the counters above (ap_fold)
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

/*
 * The usage journal line of finished requests (one, or `count` of one
 * key/model/outcome/hour): "<id> <ok> <hour> <model> <count> <input> <output>
 * <cache_creation> <cache_read> <cost> <when_ms>", tab-separated. Returns its
 * length, or -1 when it does not fit in n.
 */
int ap_store_usage_line(char *out, size_t n, const struct ap_usage_rec *r);

/* Longest journal line: id, outcome, hour, model and seven numbers, tabs and NUL. */
#define AP_STORE_LINE_MAX (16 + 2 + 17 + AP_MODEL_MAX + 7 * 21 + 16)

/*
 * Journal entries (lines and batch headers) after which the batch that
 * appended them has the journal folded into the counters (ap_fold): the cost
 * of a fold (~45 counter updates per distinct key/model/outcome/hour) is
 * shared by up to this many requests.
 */
#define AP_USAGE_FOLD_LINES 128

/* How long a replica process's batch mark outlives its last batch (a day: far beyond any rewrite). */
#define AP_USAGE_MARK_TTL_S 86400

/* Turns a number into its decimal text, for the scripts. */
#define AP_STORE_STR(x) #x
#define AP_STORE_XSTR(x) AP_STORE_STR(x)

/*
 * Lua: `ap_fold(p)` folds the usage journal ({p}u:journal) into the usage
 * counters and returns the number of lines folded. Lines of the same key,
 * model, outcome and hour are summed first, so the counters of a key that
 * served a thousand requests since the last fold are updated once. Every
 * script that reads usage counters calls it first, so what it reads is exact.
 * The counters each line expands into (docs/redis.md):
 *   u:all, u:k:<id>, u:kd:<id>:<day>, u:d:<day>: the outcome's count, input,
 *     output, cache_creation, cache_read, cost;
 *   served requests only: u:k:<id> last_used_ms (max); m:<model>:{total,
 *     requests,cost,input,output} in u:kd, u:kh (with totals), u:km, u:d and
 *     u:h (with totals); k:<id>:m:<model>:{total,requests,cost} in u:d and
 *     u:h; k:<id>:{input,output,requests,cost} in u:d; the bucket sets.
 * Increments of 0 are not written.
 * A batch written with a plain RPUSH (ap_delta_take_flush) starts with a header
 * "#<mark key>\t<seq>\t<n lines>". A replica process numbers its batches and
 * writes them in order (one in flight, rewrites oldest first), so its mark key
 * holds the highest number applied: the fold skips the n lines after a header
 * whose number is not above it (a copy written again after a lost reply), and
 * stores each mark it moved, kept AP_USAGE_MARK_TTL_S. One key per replica
 * process, read and written once per fold. Lines that come without a header
 * were deduplicated by the flush script that appended them; a header that
 * does not parse skips nothing.
 */
#define AP_LUA_USAGE_FOLD                                                      \
    "local function ap_expand(p, a)\n"                                         \
    "  local id, hour, model = a.id, a.hour, a.model\n"                        \
    "  local day = string.sub(hour, 1, 10)\n"                                  \
    "  local n, inp, out, cc, cr, cost = a[1], a[2], a[3], a[4], a[5], a[6]\n" \
    "  local what = a.ok == '1' and 'requests' or (a.ok == '2' and 'refused' or 'errors')\n" \
    "  local function incr(k, f, v)\n"                                         \
    "    if v ~= 0 then redis.call('HINCRBY', k, f, string.format('%d', v)) end\n" \
    "  end\n"                                                                  \
    "  local function totals(k)\n"                                             \
    "    incr(k, what, n); incr(k, 'input', inp); incr(k, 'output', out)\n"   \
    "    incr(k, 'cache_creation', cc); incr(k, 'cache_read', cr); incr(k, 'cost', cost)\n" \
    "  end\n"                                                                  \
    "  local function per_model(k, pre, full)\n"                               \
    "    local f = pre..'m:'..model..':'\n"                                    \
    "    incr(k, f..'total', inp + out); incr(k, f..'requests', n); incr(k, f..'cost', cost)\n" \
    "    if full then incr(k, f..'input', inp); incr(k, f..'output', out) end\n" \
    "  end\n"                                                                  \
    "  local kk, kd, d = p..'u:k:'..id, p..'u:kd:'..id..':'..day, p..'u:d:'..day\n" \
    "  totals(p..'u:all'); totals(kk); totals(kd); totals(d)\n"                \
    "  if a.ok ~= '1' then return end\n"                                       \
    "  local last = tonumber(redis.call('HGET', kk, 'last_used_ms') or '0') or 0\n" \
    "  if a[7] > last then redis.call('HSET', kk, 'last_used_ms', string.format('%d', a[7])) end\n" \
    "  per_model(kd, '', true)\n"                                              \
    "  local kh = p..'u:kh:'..id..':'..hour\n"                                 \
    "  totals(kh); per_model(kh, '', true)\n"                                  \
    "  per_model(p..'u:km:'..id, '', true)\n"                                  \
    "  redis.call('SADD', p..'u:kdays:'..id, day)\n"                           \
    "  redis.call('SADD', p..'u:khours:'..id, hour)\n"                         \
    "  local kp = 'k:'..id..':'\n"                                             \
    "  per_model(d, '', true); per_model(d, kp, false)\n"                      \
    "  incr(d, kp..'input', inp); incr(d, kp..'output', out); incr(d, kp..'requests', n); incr(d, kp..'cost', cost)\n" \
    "  local h = p..'u:h:'..hour\n"                                            \
    "  totals(h); per_model(h, '', true); per_model(h, kp, false)\n"           \
    "  redis.call('SADD', p..'u:days', day)\n"                                 \
    "  redis.call('SADD', p..'u:hours', hour)\n"                               \
    "end\n"                                                                    \
    "local function ap_fold(p)\n"                                              \
    "  local j = p..'u:journal'\n"                                             \
    "  local lines = redis.call('LRANGE', j, 0, -1)\n"                         \
    "  if #lines == 0 then return 0 end\n"                                     \
    "  redis.call('DEL', j)\n"                                                 \
    "  local acc, order, skip, hw, marks = {}, {}, 0, {}, {}\n"                \
    "  for _, l in ipairs(lines) do\n"                                         \
    "    local k, n, i, o, cc, cr, c, w\n"                                     \
    "    if skip > 0 then skip = skip - 1\n"                                   \
    "    elseif string.byte(l, 1) == 35 then\n"                                \
    "      local mk, sq, nb = string.match(l, '^#([^\t]+)\t(%d+)\t(%d+)$')\n"     \
    "      if mk then\n"                                                       \
    "        if hw[mk] == nil then\n"                                          \
    "          hw[mk] = tonumber(redis.call('GET', mk) or '0') or 0; marks[#marks + 1] = mk\n" \
    "        end\n"                                                            \
    "        sq = tonumber(sq)\n"                                              \
    "        if sq <= hw[mk] then skip = tonumber(nb) else hw[mk] = sq end\n"  \
    "      end\n"                                                              \
    "    else k, n, i, o, cc, cr, c, w = string.match(l,\n"                     \
    "      '^([^\t]+\t[^\t]+\t[^\t]+\t[^\t]+)\t(%-?%d+)\t(%-?%d+)\t(%-?%d+)\t(%-?%d+)\t(%-?%d+)\t(%-?%d+)\t(%-?%d+)$')\n" \
    "    end\n"                                                                \
    "    if k then\n"                                                          \
    "      local a = acc[k]\n"                                                 \
    "      if not a then\n"                                                    \
    "        local id, ok, hour, model = string.match(k, '^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)$')\n" \
    "        a = {0, 0, 0, 0, 0, 0, 0, id = id, ok = ok, hour = hour, model = model}\n" \
    "        acc[k] = a; order[#order + 1] = a\n"                              \
    "      end\n"                                                              \
    /* Text to number is most of a line's cost: the fields that are usually 0 are compared as text first. */ \
    "      a[1] = a[1] + tonumber(n); a[2] = a[2] + tonumber(i); a[3] = a[3] + tonumber(o)\n" \
    "      if cc ~= '0' then a[4] = a[4] + tonumber(cc) end\n"                \
    "      if cr ~= '0' then a[5] = a[5] + tonumber(cr) end\n"                \
    "      if c ~= '0' then a[6] = a[6] + tonumber(c) end\n"                  \
    "      w = tonumber(w)\n"                                                  \
    "      if w > a[7] then a[7] = w end\n"                                    \
    "    end\n"                                                                \
    "  end\n"                                                                  \
    "  for _, a in ipairs(order) do ap_expand(p, a) end\n"                     \
    "  for _, mk in ipairs(marks) do\n"                                        \
    "    redis.call('SET', mk, string.format('%d', hw[mk]), 'EX', " AP_STORE_XSTR(AP_USAGE_MARK_TTL_S) ")\n" \
    "  end\n"                                                                  \
    "  return #lines\n"                                                        \
    "end\n"

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
extern const char ap_script_usage_fold[];
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
