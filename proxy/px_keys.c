/*
 * Verified-key cache. Requests are authenticated from memory; Redis is read
 * only for a key this replica has not seen yet. The cache stays right
 * through pub/sub events (applied directly, no round trip) and a full
 * re-read after every (re)subscribe. Each record carries a version ("ver"),
 * and older data never overwrites newer: an HGETALL reply racing with a
 * "disabled" event cannot re-enable the key.
 * While Redis is down, cached verdicts keep serving (docs/contract.md section 4).
 * Unknown keys are not cached, so a key created on another replica works here
 * at once. A key's policy travels with its record and its events, so keys
 * without one cost nothing more per request.
 */
#include "px.h"

#include "ap_log.h"
#include "ap_policy.h"
#include "ap_store.h"
#include "ap_views.h"

#include <cJSON.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

struct keys_entry {
    char hash[65];              /* sha256 hex of the key: the tree's sort key */
    char id[17];
    enum px_key_state state;    /* UNKNOWN: deleted (kept as a tombstone for its version) */
    long long ver;
    struct ap_policy *policy;   /* owned reference; NULL: none */
};

struct px_keys {
    struct px_ctx *ctx;         /* borrowed */
    void *root;                 /* tsearch tree of keys_entry */
    size_t count;
};

/* One outstanding read, freed by its reply callback. */
struct keys_fetch {
    struct px_keys *keys;
    char hash[65];
    px_keys_cb cb;              /* NULL for revalidation */
    void *arg;
};

static void keys_entry_free(void *p)
{
    struct keys_entry *e = p;
    ap_policy_free(e->policy);
    free(e);
}

/*
 * A policy as stored (JSON text, NULL: none) -> *out (NULL when empty). -1
 * when it cannot be read: the key is then refused rather than served without
 * its limits.
 */
static int keys_policy(const char *id, const char *json, struct ap_policy **out)
{
    char err[256];
    *out = NULL;
    if (json == NULL || json[0] == '\0')
        return 0;
    struct ap_policy *p = ap_policy_parse_text(json, strlen(json), err, sizeof(err));
    if (p == NULL) {
        ap_error(NULL, "key %s: its policy cannot be read (%s); refusing the key until it is fixed", id ? id : "?",
                 err);
        return -1;
    }
    if (ap_policy_empty(p))
        ap_policy_free(p);
    else
        *out = p;
    return 0;
}

static int keys_cmp(const void *a, const void *b)
{
    return strcmp(((const struct keys_entry *)a)->hash, ((const struct keys_entry *)b)->hash);
}

struct px_keys *px_keys_new(struct px_ctx *ctx)
{
    struct px_keys *k = calloc(1, sizeof(*k));
    if (k != NULL)
        k->ctx = ctx;
    return k;
}

void px_keys_free(struct px_keys *k)
{
    if (k == NULL)
        return;
    tdestroy(k->root, keys_entry_free);
    free(k);
}

size_t px_keys_count(const struct px_keys *k)
{
    return k->count;
}

static struct keys_entry *keys_find(struct px_keys *k, const char *hash)
{
    struct keys_entry probe;
    if (strlen(hash) != 64)
        return NULL;
    memcpy(probe.hash, hash, 65);
    struct keys_entry **e = tfind(&probe, &k->root, keys_cmp);
    return e ? *e : NULL;
}

/* Records what we learned about a key, unless we already hold newer data. Takes `policy`. */
static struct keys_entry *keys_store(struct px_keys *k, const char *hash, const char *id,
                                     enum px_key_state state, long long ver, struct ap_policy *policy)
{
    struct keys_entry *e = keys_find(k, hash);
    if (e == NULL) {
        if (strlen(hash) != 64 || (e = calloc(1, sizeof(*e))) == NULL) {
            ap_policy_free(policy);
            return NULL;
        }
        memcpy(e->hash, hash, 65);
        e->ver = -1;
        if (tsearch(e, &k->root, keys_cmp) == NULL) {
            free(e);
            return NULL;
        }
        k->count++;
    }
    if (ver < e->ver) {
        ap_policy_free(policy);
        return e;
    }
    e->ver = ver;
    e->state = state;
    ap_policy_free(e->policy);
    e->policy = policy;
    if (id != NULL)
        snprintf(e->id, sizeof(e->id), "%s", id);
    return e;
}

struct ap_policy *px_keys_policy(struct px_keys *k, const char *hash_hex)
{
    struct keys_entry *e = keys_find(k, hash_hex);
    return e != NULL && e->state == PX_KEY_ENABLED ? ap_policy_ref(e->policy) : NULL;
}

int px_keys_lookup(struct px_keys *k, const char *hash_hex, struct px_key_info *info)
{
    struct keys_entry *e = keys_find(k, hash_hex);
    if (e == NULL || e->state == PX_KEY_UNKNOWN)
        return -1;
    info->state = e->state;
    memcpy(info->id, e->id, sizeof(info->id));
    return 0;
}

static void keys_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct keys_fetch *f = priv;
    redisReply *rep = reply;
    struct px_key_info info = {PX_KEY_UNKNOWN, ""};
    int ok = ap_reply_ok(rep) && rep->type == REDIS_REPLY_ARRAY;
    (void)ac;

    if (ok && rep->elements > 0) {
        const char *id = ap_view_hget(rep, "id");
        const char *en = ap_view_hget(rep, "enabled");
        const char *ver = ap_view_hget(rep, "ver");
        enum px_key_state st = (en != NULL && strcmp(en, "1") == 0) ? PX_KEY_ENABLED : PX_KEY_DISABLED;
        struct ap_policy *pol;
        if (keys_policy(id, ap_view_hget(rep, "policy"), &pol) < 0)
            st = PX_KEY_DISABLED;
        struct keys_entry *e = keys_store(f->keys, f->hash, id, st, ver ? atoll(ver) : 0, pol);
        if (e != NULL) {
            info.state = e->state;
            memcpy(info.id, e->id, sizeof(info.id));
        }
    } else if (ok) {
        /* Gone from Redis: forget it unless it was never cached. */
        struct keys_entry *e = keys_find(f->keys, f->hash);
        if (e != NULL)
            e->state = PX_KEY_UNKNOWN;
    }
    if (f->cb != NULL)
        f->cb(f->arg, ok, &info);
    free(f);
}

static int keys_read(struct px_keys *k, const char *hash_hex, px_keys_cb cb, void *arg)
{
    char rk[AP_STORE_KEY_MAX];
    struct keys_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->keys = k;
    snprintf(f->hash, sizeof(f->hash), "%s", hash_hex);
    f->cb = cb;
    f->arg = arg;
    ap_store_key(rk, sizeof(rk), "key:%s", hash_hex);
    if (ap_redis_cmd(k->ctx->redis, keys_on_reply, f, "HGETALL %s", rk) < 0) {
        free(f);
        return -1;
    }
    return 0;
}

int px_keys_fetch(struct px_keys *k, const char *hash_hex, px_keys_cb cb, void *arg)
{
    return keys_read(k, hash_hex, cb, arg);
}

void px_keys_on_event(struct px_keys *k, const cJSON *ev)
{
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(ev, "hash");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev, "id");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(ev, "ver");
    if (!cJSON_IsString(hash))
        return;
    enum px_key_state st = PX_KEY_DISABLED;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "deleted")))
        st = PX_KEY_UNKNOWN;
    else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "enabled")))
        st = PX_KEY_ENABLED;
    /* Only keys this replica has seen matter; others are read when first used. */
    if (keys_find(k, hash->valuestring) == NULL)
        return;
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(ev, "policy");
    struct ap_policy *pol;
    if (keys_policy(cJSON_IsString(id) ? id->valuestring : NULL, cJSON_IsString(pj) ? pj->valuestring : NULL,
                    &pol) < 0 && st == PX_KEY_ENABLED)
        st = PX_KEY_DISABLED;
    keys_store(k, hash->valuestring, cJSON_IsString(id) ? id->valuestring : NULL, st,
               cJSON_IsNumber(ver) ? (long long)ver->valuedouble : 0, pol);
    ap_info(NULL, "key %s: %s", cJSON_IsString(id) ? id->valuestring : "?",
            st == PX_KEY_ENABLED ? "enabled" : st == PX_KEY_DISABLED ? "disabled" : "deleted");
}

static void keys_revalidate_one(const void *node, VISIT which, void *arg)
{
    if (which != postorder && which != leaf)
        return;
    const struct keys_entry *e = *(const struct keys_entry *const *)node;
    keys_read(arg, e->hash, NULL, NULL);
}

void px_keys_revalidate(struct px_keys *k)
{
    twalk_r(k->root, keys_revalidate_one, k);
}
