/*
 * Admin JSON views; see ap_views.h. Field layouts are those of ap_store.h.
 * Extra fields beyond the original's (cache tokens, errors, per-model input
 * and output) are added next to the original ones, never instead of them.
 */
#include "ap_views.h"

#include "ap_prices.h"
#include "ap_time.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int view_is_array(const redisReply *r, size_t min)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= min;
}

static const char *view_str(const redisReply *r)
{
    return (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)) ? r->str : NULL;
}

const char *ap_view_hget(const redisReply *hash, const char *field)
{
    if (!view_is_array(hash, 0))
        return NULL;
    for (size_t i = 0; i + 1 < hash->elements; i += 2) {
        const char *f = view_str(hash->element[i]);
        if (f != NULL && strcmp(f, field) == 0)
            return view_str(hash->element[i + 1]);
    }
    return NULL;
}

static double view_num(const redisReply *hash, const char *field)
{
    const char *v = ap_view_hget(hash, field);
    return v ? strtod(v, NULL) : 0;
}

static void view_last_used(cJSON *obj, const redisReply *totals, long tz)
{
    const char *ms = ap_view_hget(totals, "last_used_ms");
    if (ms == NULL) {
        cJSON_AddNullToObject(obj, "last_used");
        return;
    }
    char iso[40];
    ap_time_iso((time_t)(strtoll(ms, NULL, 10) / 1000), tz, iso, sizeof(iso));
    cJSON_AddStringToObject(obj, "last_used", iso);
}

/* Adds n to obj[name] (creating it as 0 first). */
static void view_add(cJSON *obj, const char *name, double n)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL)
        cJSON_AddNumberToObject(obj, name, n);
    else
        cJSON_SetNumberHelper(it, it->valuedouble + n);
}

/*
 * Costs are summed as "cost_nano" (integer nano-dollars; exact as doubles up
 * to 2^53, i.e. 9 million USD per figure) and rendered at the end as
 * "cost_usd", an exact decimal.
 */
static void view_finish_costs(cJSON *node)
{
    cJSON *c, *nano = NULL;
    cJSON_ArrayForEach(c, node) {
        if (c->string != NULL && strcmp(c->string, "cost_nano") == 0)
            nano = c;
        else if (cJSON_IsObject(c) || cJSON_IsArray(c))
            view_finish_costs(c);
    }
    if (nano == NULL)
        return;
    char usd[40];
    ap_usd_format((int64_t)llround(nano->valuedouble), usd, sizeof(usd));
    cJSON_DeleteItemFromObjectCaseSensitive(node, "cost_nano");
    cJSON_AddRawToObject(node, "cost_usd", usd);
}

/* The key's policy from its record ({} when none, or unreadable). */
static void view_policy(cJSON *obj, const redisReply *rec)
{
    const char *s = ap_view_hget(rec, "policy");
    cJSON *pol = s ? cJSON_Parse(s) : NULL;
    cJSON_AddItemToObject(obj, "policy", cJSON_IsObject(pol) ? pol : cJSON_CreateObject());
    if (!cJSON_IsObject(pol))
        cJSON_Delete(pol);
}

static cJSON *view_child(cJSON *obj, const char *name)
{
    cJSON *c = cJSON_GetObjectItemCaseSensitive(obj, name);
    return c ? c : cJSON_AddObjectToObject(obj, name);
}

/*
 * Splits "m:<model>:<stat>" (after `pre`) into model and stat; model names may
 * themselves contain ':', so the stat is what follows the last one.
 */
static int view_model_field(const char *f, const char *pre, char *model, size_t n, const char **stat)
{
    size_t pl = strlen(pre);
    if (strncmp(f, pre, pl) != 0 || strncmp(f + pl, "m:", 2) != 0)
        return -1;
    const char *m = f + pl + 2;
    const char *last = strrchr(m, ':');
    if (last == NULL || last == m || (size_t)(last - m) >= n)
        return -1;
    memcpy(model, m, (size_t)(last - m));
    model[last - m] = '\0';
    *stat = last + 1;
    return 0;
}

/* Accumulates the m:<model>:<stat> fields of `hash` (after `pre`) into by_model. */
static void view_models_into(cJSON *by_model, const redisReply *hash, const char *pre)
{
    char model[256];
    const char *stat;
    for (size_t i = 0; i + 1 < hash->elements; i += 2) {
        const char *f = view_str(hash->element[i]);
        const char *v = view_str(hash->element[i + 1]);
        if (f == NULL || v == NULL || view_model_field(f, pre, model, sizeof(model), &stat) < 0)
            continue;
        if (strcmp(stat, "total") && strcmp(stat, "requests") && strcmp(stat, "input") && strcmp(stat, "output") &&
            strcmp(stat, "cost"))
            continue;
        cJSON *m = view_child(by_model, model);
        if (!cJSON_HasObjectItem(m, "total"))
            cJSON_AddNumberToObject(m, "total", 0);
        if (!cJSON_HasObjectItem(m, "requests"))
            cJSON_AddNumberToObject(m, "requests", 0);
        if (!cJSON_HasObjectItem(m, "cost_nano"))
            cJSON_AddNumberToObject(m, "cost_nano", 0);
        view_add(m, strcmp(stat, "cost") == 0 ? "cost_nano" : stat, strtod(v, NULL));
    }
}

static double view_total_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "total");
    if (t != NULL)
        return t->valuedouble;
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, "input");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "output");
    return (i ? i->valuedouble : 0) + (u ? u->valuedouble : 0);
}

static int view_cmp_total_desc(const void *a, const void *b)
{
    double x = view_total_of(*(cJSON *const *)a), y = view_total_of(*(cJSON *const *)b);
    return (x < y) - (x > y);
}

/* Reorders the members of an object or array by "total" (or input+output) descending. */
static void view_sort_by_total(cJSON *obj)
{
    int n = cJSON_GetArraySize(obj);
    if (n < 2)
        return;
    cJSON **items = malloc((size_t)n * sizeof(*items));
    if (items == NULL)
        return;
    for (int i = 0; i < n; i++)
        items[i] = cJSON_DetachItemFromArray(obj, 0);
    qsort(items, (size_t)n, sizeof(*items), view_cmp_total_desc);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(obj, items[i]); /* keeps each item's name: works for objects too */
    free(items);
}

static int view_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Bucket names of a flat {name, hash, ...} reply, sorted ascending; returns the count. */
static size_t view_sorted_buckets(const redisReply *flat, const redisReply ***hashes, const char ***names)
{
    size_t n = flat->elements / 2;
    *names = calloc(n ? n : 1, sizeof(char *));
    *hashes = calloc(n ? n : 1, sizeof(redisReply *));
    if (*names == NULL || *hashes == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        (*names)[i] = view_str(flat->element[2 * i]) ? view_str(flat->element[2 * i]) : "";
    qsort(*names, n, sizeof(char *), view_cmp_str);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (view_str(flat->element[2 * j]) != NULL && strcmp(view_str(flat->element[2 * j]), (*names)[i]) == 0)
                (*hashes)[i] = flat->element[2 * j + 1];
    return n;
}

static cJSON *view_key_entry(const redisReply *rec, const redisReply *tot, long tz)
{
    const char *en = ap_view_hget(rec, "enabled");
    const char *s;
    cJSON *k = cJSON_CreateObject();
    cJSON_AddStringToObject(k, "key", (s = ap_view_hget(rec, "masked")) ? s : "***");
    cJSON_AddStringToObject(k, "id", (s = ap_view_hget(rec, "id")) ? s : "");
    cJSON_AddStringToObject(k, "name", (s = ap_view_hget(rec, "name")) ? s : "");
    cJSON_AddBoolToObject(k, "enabled", en != NULL && strcmp(en, "1") == 0);
    if ((s = ap_view_hget(rec, "created")) != NULL)
        cJSON_AddStringToObject(k, "created", s);
    else
        cJSON_AddNullToObject(k, "created");
    cJSON_AddNumberToObject(k, "total_input", view_num(tot, "input"));
    cJSON_AddNumberToObject(k, "total_output", view_num(tot, "output"));
    cJSON_AddNumberToObject(k, "total_requests", view_num(tot, "requests"));
    view_last_used(k, tot, tz);
    cJSON_AddNumberToObject(k, "total_cache_creation", view_num(tot, "cache_creation"));
    cJSON_AddNumberToObject(k, "total_cache_read", view_num(tot, "cache_read"));
    cJSON_AddNumberToObject(k, "total_errors", view_num(tot, "errors"));
    cJSON_AddNumberToObject(k, "total_refused", view_num(tot, "refused"));
    cJSON_AddNumberToObject(k, "cost_nano", view_num(tot, "cost"));
    view_policy(k, rec);
    return k;
}

cJSON *ap_view_keys_list(const redisReply *rep, long tz)
{
    if (!view_is_array(rep, 0))
        return NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *keys = cJSON_AddArrayToObject(root, "keys");
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (view_is_array(e, 2))
            cJSON_AddItemToArray(keys, view_key_entry(e->element[0], e->element[1], tz));
    }
    view_finish_costs(root);
    return root;
}

cJSON *ap_view_key_usage(const redisReply *rep, long tz)
{
    if (!view_is_array(rep, 5))
        return NULL;
    for (size_t i = 0; i < 5; i++)
        if (!view_is_array(rep->element[i], 0))
            return NULL;
    const redisReply *rec = rep->element[0], *tot = rep->element[1];
    const char *s, *en = ap_view_hget(rec, "enabled");
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "name", (s = ap_view_hget(rec, "name")) ? s : "");
    cJSON_AddStringToObject(root, "id", (s = ap_view_hget(rec, "id")) ? s : "");
    cJSON_AddBoolToObject(root, "enabled", en != NULL && strcmp(en, "1") == 0);
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "total_input", view_num(tot, "input"));
    cJSON_AddNumberToObject(u, "total_output", view_num(tot, "output"));
    cJSON_AddNumberToObject(u, "total_requests", view_num(tot, "requests"));
    view_last_used(u, tot, tz);
    cJSON_AddNumberToObject(u, "total_cache_creation", view_num(tot, "cache_creation"));
    cJSON_AddNumberToObject(u, "total_cache_read", view_num(tot, "cache_read"));
    cJSON_AddNumberToObject(u, "total_errors", view_num(tot, "errors"));
    cJSON_AddNumberToObject(u, "total_refused", view_num(tot, "refused"));
    cJSON_AddNumberToObject(u, "cost_nano", view_num(tot, "cost"));
    view_policy(root, rec);

    const redisReply **hashes;
    const char **names;
    cJSON *daily = cJSON_AddObjectToObject(u, "daily");
    size_t n = view_sorted_buckets(rep->element[2], &hashes, &names);
    for (size_t i = 0; i < n; i++) {
        if (hashes[i] == NULL)
            continue;
        cJSON *d = cJSON_AddObjectToObject(daily, names[i]);
        cJSON_AddNumberToObject(d, "input", view_num(hashes[i], "input"));
        cJSON_AddNumberToObject(d, "output", view_num(hashes[i], "output"));
        cJSON_AddNumberToObject(d, "requests", view_num(hashes[i], "requests"));
        cJSON_AddNumberToObject(d, "cache_creation", view_num(hashes[i], "cache_creation"));
        cJSON_AddNumberToObject(d, "cache_read", view_num(hashes[i], "cache_read"));
        cJSON_AddNumberToObject(d, "errors", view_num(hashes[i], "errors"));
        cJSON_AddNumberToObject(d, "refused", view_num(hashes[i], "refused"));
        cJSON_AddNumberToObject(d, "cost_nano", view_num(hashes[i], "cost"));
        cJSON *bm = cJSON_AddObjectToObject(d, "by_model");
        view_models_into(bm, hashes[i], "");
        view_sort_by_total(bm);
    }
    free(hashes);
    free(names);

    cJSON *hourly = cJSON_AddObjectToObject(u, "hourly");
    n = view_sorted_buckets(rep->element[3], &hashes, &names);
    for (size_t i = 0; i < n; i++) {
        if (hashes[i] == NULL)
            continue;
        cJSON *h = cJSON_AddObjectToObject(hourly, names[i]);
        cJSON_AddNumberToObject(h, "cost_nano", view_num(hashes[i], "cost"));
        cJSON *bm = cJSON_AddObjectToObject(h, "by_model");
        view_models_into(bm, hashes[i], "");
        view_sort_by_total(bm);
    }
    free(hashes);
    free(names);

    cJSON *tbm = cJSON_AddObjectToObject(u, "total_by_model");
    view_models_into(tbm, rep->element[4], "");
    view_sort_by_total(tbm);
    view_finish_costs(root);
    return root;
}

cJSON *ap_view_usage_total(const redisReply *rep)
{
    if (!view_is_array(rep, 3) || !view_is_array(rep->element[0], 0) ||
        rep->element[1]->type != REDIS_REPLY_INTEGER || rep->element[2]->type != REDIS_REPLY_INTEGER)
        return NULL;
    const redisReply *all = rep->element[0];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "total_input_tokens", view_num(all, "input"));
    cJSON_AddNumberToObject(root, "total_output_tokens", view_num(all, "output"));
    cJSON_AddNumberToObject(root, "total_requests", view_num(all, "requests"));
    cJSON_AddNumberToObject(root, "total_keys", (double)rep->element[1]->integer);
    cJSON_AddNumberToObject(root, "active_keys", (double)rep->element[2]->integer);
    cJSON_AddNumberToObject(root, "total_cache_creation_tokens", view_num(all, "cache_creation"));
    cJSON_AddNumberToObject(root, "total_cache_read_tokens", view_num(all, "cache_read"));
    cJSON_AddNumberToObject(root, "total_errors", view_num(all, "errors"));
    cJSON_AddNumberToObject(root, "total_refused", view_num(all, "refused"));
    cJSON_AddNumberToObject(root, "cost_nano", view_num(all, "cost"));
    view_finish_costs(root);
    return root;
}

/* Sums the per-model entries of `from` into `into`. */
static void view_merge_models(cJSON *into, const cJSON *from)
{
    const cJSON *m, *stat;
    cJSON_ArrayForEach(m, from) {
        cJSON *dst = view_child(into, m->string);
        cJSON_ArrayForEach(stat, m) view_add(dst, stat->string, stat->valuedouble);
    }
}

/*
 * The per-key fields "k:<id>:..." of a rollup hash, grouped by key id (names
 * are not unique): returns {id: {"input","output","requests","by_model"}}.
 */
static cJSON *view_per_key(const redisReply *hash)
{
    cJSON *by_id = cJSON_CreateObject();
    for (size_t i = 0; i + 1 < hash->elements; i += 2) {
        const char *f = view_str(hash->element[i]);
        const char *v = view_str(hash->element[i + 1]);
        if (f == NULL || v == NULL || strncmp(f, "k:", 2) != 0)
            continue;
        const char *idend = strchr(f + 2, ':');
        if (idend == NULL || idend - (f + 2) >= 64)
            continue;
        char id[64], pre[72];
        memcpy(id, f + 2, (size_t)(idend - (f + 2)));
        id[idend - (f + 2)] = '\0';
        cJSON *k = cJSON_GetObjectItemCaseSensitive(by_id, id);
        if (k == NULL) {
            k = cJSON_AddObjectToObject(by_id, id);
            cJSON_AddNumberToObject(k, "input", 0);
            cJSON_AddNumberToObject(k, "output", 0);
            cJSON_AddNumberToObject(k, "requests", 0);
            cJSON_AddNumberToObject(k, "cost_nano", 0);
            snprintf(pre, sizeof(pre), "k:%s:", id);
            cJSON *bm = cJSON_AddObjectToObject(k, "by_model");
            view_models_into(bm, hash, pre);
            view_sort_by_total(bm);
        }
        const char *stat = idend + 1;
        if (!strcmp(stat, "input") || !strcmp(stat, "output") || !strcmp(stat, "requests"))
            view_add(k, stat, strtod(v, NULL));
        else if (!strcmp(stat, "cost"))
            view_add(k, "cost_nano", strtod(v, NULL));
    }
    return by_id;
}

/*
 * by_tenant (name -> models, keys of one name summed) and the keys list. Day
 * rollups hold each key's input, output and requests; hour rollups only its
 * per-model totals, so an hour's key entry carries requests and total summed
 * from those instead.
 */
static void view_tenants(const redisReply *hash, const redisReply *names, cJSON *by_tenant, cJSON *keys,
                         int key_totals)
{
    cJSON *by_id = view_per_key(hash), *k;
    cJSON_ArrayForEach(k, by_id) {
        const char *name = ap_view_hget(names, k->string);
        if (name == NULL)
            name = k->string;
        view_merge_models(view_child(by_tenant, name), cJSON_GetObjectItemCaseSensitive(k, "by_model"));
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name);
        if (key_totals) {
            cJSON_AddNumberToObject(e, "input", cJSON_GetObjectItemCaseSensitive(k, "input")->valuedouble);
            cJSON_AddNumberToObject(e, "output", cJSON_GetObjectItemCaseSensitive(k, "output")->valuedouble);
            cJSON_AddNumberToObject(e, "requests", cJSON_GetObjectItemCaseSensitive(k, "requests")->valuedouble);
            cJSON_AddNumberToObject(e, "cost_nano", cJSON_GetObjectItemCaseSensitive(k, "cost_nano")->valuedouble);
        } else {
            /* An hour keeps no per-key totals: the key's models add up to them (integers, exact). */
            double req = 0, total = 0, cost = 0;
            const cJSON *m, *c;
            cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(k, "by_model")) {
                req += cJSON_GetObjectItemCaseSensitive(m, "requests")->valuedouble;
                total += cJSON_GetObjectItemCaseSensitive(m, "total")->valuedouble;
                if ((c = cJSON_GetObjectItemCaseSensitive(m, "cost_nano")) != NULL)
                    cost += c->valuedouble;
            }
            cJSON_AddNumberToObject(e, "requests", req);
            cJSON_AddNumberToObject(e, "total", total);
            cJSON_AddNumberToObject(e, "cost_nano", cost);
        }
        cJSON_AddStringToObject(e, "id", k->string);
        cJSON_AddItemToObject(e, "by_model", cJSON_DetachItemFromObjectCaseSensitive(k, "by_model"));
        cJSON_AddItemToArray(keys, e);
    }
    cJSON_ArrayForEach(k, by_tenant) view_sort_by_total(k);
    cJSON_Delete(by_id);
}

cJSON *ap_view_usage_daily(const redisReply *rep)
{
    if (!view_is_array(rep, 2) || !view_is_array(rep->element[1], 0))
        return NULL;
    const redisReply *names = rep->element[0];
    const redisReply **hashes;
    const char **days;
    size_t n = view_sorted_buckets(rep->element[1], &hashes, &days);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "days");
    for (size_t i = 0; i < n; i++) {
        const redisReply *h = hashes[i];
        if (h == NULL)
            continue;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "date", days[i]);
        cJSON_AddNumberToObject(d, "total_input", view_num(h, "input"));
        cJSON_AddNumberToObject(d, "total_output", view_num(h, "output"));
        cJSON_AddNumberToObject(d, "total_requests", view_num(h, "requests"));
        cJSON_AddNumberToObject(d, "total_cache_creation", view_num(h, "cache_creation"));
        cJSON_AddNumberToObject(d, "total_cache_read", view_num(h, "cache_read"));
        cJSON_AddNumberToObject(d, "total_errors", view_num(h, "errors"));
        cJSON_AddNumberToObject(d, "total_refused", view_num(h, "refused"));
        cJSON_AddNumberToObject(d, "cost_nano", view_num(h, "cost"));
        cJSON *bm = cJSON_AddObjectToObject(d, "by_model");
        view_models_into(bm, h, "");
        view_sort_by_total(bm);
        cJSON *bt = cJSON_AddObjectToObject(d, "by_tenant");
        cJSON *keys = cJSON_AddArrayToObject(d, "keys");
        view_tenants(h, names, bt, keys, 1);
        view_sort_by_total(keys);
        cJSON_AddItemToArray(arr, d);
    }
    free(hashes);
    free(days);
    view_finish_costs(root);
    return root;
}

cJSON *ap_view_usage_hourly(const redisReply *rep)
{
    if (!view_is_array(rep, 2) || !view_is_array(rep->element[1], 0))
        return NULL;
    const redisReply *names = rep->element[0];
    const redisReply **hashes;
    const char **hours;
    size_t n = view_sorted_buckets(rep->element[1], &hashes, &hours);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "hours");
    for (size_t i = 0; i < n; i++) {
        if (hashes[i] == NULL)
            continue;
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "hour", hours[i]);
        cJSON *bm = cJSON_AddObjectToObject(h, "by_model");
        view_models_into(bm, hashes[i], "");
        view_sort_by_total(bm);
        cJSON *bt = cJSON_AddObjectToObject(h, "by_tenant");
        cJSON *keys = cJSON_AddArrayToObject(h, "keys");
        view_tenants(hashes[i], names, bt, keys, 0);
        view_sort_by_total(keys);
        cJSON_AddNumberToObject(h, "total_input", view_num(hashes[i], "input"));
        cJSON_AddNumberToObject(h, "total_output", view_num(hashes[i], "output"));
        cJSON_AddNumberToObject(h, "total_requests", view_num(hashes[i], "requests"));
        cJSON_AddNumberToObject(h, "cost_nano", view_num(hashes[i], "cost"));
        cJSON_AddItemToArray(arr, h);
    }
    free(hashes);
    free(hours);
    view_finish_costs(root);
    return root;
}

cJSON *ap_view_key_policy(const redisReply *rep)
{
    const char *s = NULL;
    if (view_is_array(rep, 3)) /* set: {id, name, policy or nil} */
        s = view_str(rep->element[2]);
    else if (view_is_array(rep, 1) && view_is_array(rep->element[0], 0)) /* get: {record} */
        s = ap_view_hget(rep->element[0], "policy");
    else
        return NULL;
    cJSON *pol = s ? cJSON_Parse(s) : NULL;
    if (cJSON_IsObject(pol))
        return pol;
    cJSON_Delete(pol);
    return cJSON_CreateObject();
}

cJSON *ap_view_export(const redisReply *rep, long tz, int64_t now_ms)
{
    if (!view_is_array(rep, 0))
        return NULL;
    char iso[40];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "api-proxy-export");
    cJSON_AddNumberToObject(root, "version", 1);
    ap_time_iso((time_t)(now_ms / 1000), tz, iso, sizeof(iso));
    cJSON_AddStringToObject(root, "exported_at", iso);
    cJSON *keys = cJSON_AddObjectToObject(root, "keys");
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (!view_is_array(e, 6) || view_str(e->element[0]) == NULL)
            continue;
        /* The same document as GET /admin/keys/<key>/usage, from the same five replies. */
        redisReply sub = *e;
        sub.element = e->element + 1;
        sub.elements = 5;
        cJSON *k = ap_view_key_usage(&sub, tz);
        if (k == NULL)
            continue;
        const char *s;
        const redisReply *rec = e->element[1];
        if ((s = ap_view_hget(rec, "created")) != NULL)
            cJSON_AddStringToObject(k, "created", s);
        cJSON_AddStringToObject(k, "masked", (s = ap_view_hget(rec, "masked")) ? s : "***");
        char name[80];
        snprintf(name, sizeof(name), "sha256:%s", view_str(e->element[0]));
        cJSON_AddItemToObject(keys, name, k);
    }
    return root;
}
