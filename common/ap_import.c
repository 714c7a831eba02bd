/* keys.json import; see ap_import.h. */
#include "ap_import.h"

#include "ap_delta.h"
#include "ap_file.h"
#include "ap_json.h"
#include "ap_keys.h"
#include "ap_policy.h"
#include "ap_prices.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t imp_num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    /* Past 1e15 a count is nonsense, and the cast would overflow. */
    return cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1e15 ? (int64_t)v->valuedouble : 0;
}

/* "cost_usd" of our own export, in nano-dollars (0 when absent, as in the original's files). */
static int64_t imp_cost(const cJSON *obj)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "cost_usd");
    int64_t nano;
    return cJSON_IsNumber(v) && ap_usd_to_nano(v->valuedouble, &nano) == 0 ? nano : 0;
}

/* "total" of a by_model entry; the original's older entries had input/output instead. */
static int64_t imp_model_total(const cJSON *m)
{
    if (cJSON_GetObjectItemCaseSensitive(m, "total") != NULL)
        return imp_num(m, "total");
    return imp_num(m, "input") + imp_num(m, "output");
}

/* Adds one by_model map into hash `key` with field prefix `pre` ("" or "k:<id>:"). */
static void imp_models(struct ap_delta *d, const char *key, const char *pre, const cJSON *by_model)
{
    const cJSON *m;
    char f[AP_MODEL_MAX + 80], model[AP_MODEL_MAX];
    cJSON_ArrayForEach(m, by_model) {
        if (!cJSON_IsObject(m) || m->string == NULL)
            continue;
        ap_store_model_name(m->string, model, sizeof(model));
        snprintf(f, sizeof(f), "%sm:%s:total", pre, model);
        ap_delta_incr(d, key, f, imp_model_total(m));
        snprintf(f, sizeof(f), "%sm:%s:requests", pre, model);
        ap_delta_incr(d, key, f, imp_num(m, "requests"));
        snprintf(f, sizeof(f), "%sm:%s:cost", pre, model);
        ap_delta_incr(d, key, f, imp_cost(m));
        if (*pre == '\0' && cJSON_GetObjectItemCaseSensitive(m, "input") != NULL) {
            snprintf(f, sizeof(f), "m:%s:input", model);
            ap_delta_incr(d, key, f, imp_num(m, "input"));
            snprintf(f, sizeof(f), "m:%s:output", model);
            ap_delta_incr(d, key, f, imp_num(m, "output"));
        }
    }
}

/* A bucket's input, output, request and cost counters. */
struct imp_counts {
    int64_t in, out, req, cost;
};

/* Adds them into hash `key` as "<pre>input", ... ("" or "k:<id>:"). */
static void imp_totals(struct ap_delta *d, const char *key, const char *pre, const struct imp_counts *c)
{
    char f[80];
    snprintf(f, sizeof(f), "%sinput", pre);
    ap_delta_incr(d, key, f, c->in);
    snprintf(f, sizeof(f), "%soutput", pre);
    ap_delta_incr(d, key, f, c->out);
    snprintf(f, sizeof(f), "%srequests", pre);
    ap_delta_incr(d, key, f, c->req);
    snprintf(f, sizeof(f), "%scost", pre);
    ap_delta_incr(d, key, f, c->cost);
}

/*
 * The counters our own export adds beside the original's (absent there, or `obj` NULL:
 * nothing added), under their names in a view (`pre` "total_" for a key's totals, "" for a day).
 */
static void imp_extras(struct ap_delta *d, const char *key, const cJSON *obj, const char *pre)
{
    static const char *const fields[] = {"cache_creation", "cache_read", "errors", "refused"};
    char name[40];
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", pre, fields[i]);
        ap_delta_incr(d, key, fields[i], imp_num(obj, name));
    }
}

/* One day or hour bucket (a key's, or the rollup): its counters and its models. */
static void imp_bucket(struct ap_delta *d, const char *key, const struct imp_counts *c, const cJSON *extras,
                       const cJSON *by_model)
{
    imp_totals(d, key, "", c);
    imp_extras(d, key, extras, "");
    imp_models(d, key, "", by_model);
}

static int imp_is_day(const char *s)
{
    int y, m, dd, n = 0;
    return sscanf(s, "%4d-%2d-%2d%n", &y, &m, &dd, &n) == 3 && n == 10 && s[10] == '\0';
}

static int imp_is_hour(const char *s)
{
    int y, m, dd, h, n = 0;
    return sscanf(s, "%4d-%2d-%2d %2d:00%n", &y, &m, &dd, &h, &n) == 4 && n == 16 && s[16] == '\0';
}

static void imp_daily(struct ap_delta *d, const char *id, const cJSON *daily)
{
    const cJSON *day;
    char k[AP_STORE_KEY_MAX], pre[40];
    snprintf(pre, sizeof(pre), "k:%s:", id);
    cJSON_ArrayForEach(day, daily) {
        if (!cJSON_IsObject(day) || day->string == NULL || !imp_is_day(day->string))
            continue;
        const cJSON *bm = cJSON_GetObjectItemCaseSensitive(day, "by_model");
        struct imp_counts c = {imp_num(day, "input"), imp_num(day, "output"), imp_num(day, "requests"),
                               imp_cost(day)};
        imp_bucket(d, ap_store_key(k, sizeof(k), "u:kd:%s:%s", id, day->string), &c, day, bm);
        imp_bucket(d, ap_store_key(k, sizeof(k), "u:d:%s", day->string), &c, day, bm);
        imp_models(d, k, pre, bm);
        imp_totals(d, k, pre, &c);
        ap_delta_sadd(d, ap_store_key(k, sizeof(k), "u:kdays:%s", id), day->string);
        ap_delta_sadd(d, ap_store_key(k, sizeof(k), "u:days"), day->string);
    }
}

static void imp_hourly(struct ap_delta *d, const char *id, const cJSON *hourly)
{
    const cJSON *hour, *m;
    char k[AP_STORE_KEY_MAX], pre[40];
    snprintf(pre, sizeof(pre), "k:%s:", id);
    cJSON_ArrayForEach(hour, hourly) {
        if (!cJSON_IsObject(hour) || hour->string == NULL || !imp_is_hour(hour->string))
            continue;
        const cJSON *bm = cJSON_GetObjectItemCaseSensitive(hour, "by_model");
        /* A key's hour is shown as its models (ours give input/output each) and its cost. */
        struct imp_counts c = {0, 0, 0, imp_cost(hour)};
        cJSON_ArrayForEach(m, bm) {
            c.req += imp_num(m, "requests");
            c.in += imp_num(m, "input");
            c.out += imp_num(m, "output");
        }
        imp_bucket(d, ap_store_key(k, sizeof(k), "u:kh:%s:%s", id, hour->string), &c, NULL, bm);
        imp_bucket(d, ap_store_key(k, sizeof(k), "u:h:%s", hour->string), &c, NULL, bm);
        imp_models(d, k, pre, bm);
        ap_delta_sadd(d, ap_store_key(k, sizeof(k), "u:khours:%s", id), hour->string);
        ap_delta_sadd(d, ap_store_key(k, sizeof(k), "u:hours"), hour->string);
    }
}

static void imp_usage(struct ap_delta *d, const char *id, const cJSON *usage)
{
    char k[AP_STORE_KEY_MAX];
    struct imp_counts c = {imp_num(usage, "total_input"), imp_num(usage, "total_output"),
                           imp_num(usage, "total_requests"), imp_cost(usage)};
    for (int i = 0; i < 2; i++) {
        const char *key = i == 0 ? ap_store_key(k, sizeof(k), "u:k:%s", id) : ap_store_key(k, sizeof(k), "u:all");
        imp_totals(d, key, "", &c);
        imp_extras(d, key, usage, "total_");
    }
    const cJSON *lu = cJSON_GetObjectItemCaseSensitive(usage, "last_used");
    time_t t;
    if (cJSON_IsString(lu) && ap_time_parse_iso(lu->valuestring, &t) == 0)
        ap_delta_max(d, ap_store_key(k, sizeof(k), "u:k:%s", id), "last_used_ms", (int64_t)t * 1000);
    imp_daily(d, id, cJSON_GetObjectItemCaseSensitive(usage, "daily"));
    imp_hourly(d, id, cJSON_GetObjectItemCaseSensitive(usage, "hourly"));
    imp_models(d, ap_store_key(k, sizeof(k), "u:km:%s", id), "",
               cJSON_GetObjectItemCaseSensitive(usage, "total_by_model"));
}

static int imp_is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/*
 * The EVAL for one key entry; `seq` orders keys without a usable "created".
 * NULL with a reason in `why` when the entry cannot be imported.
 */
static struct ap_batch *imp_key(const char *key, const cJSON *info, size_t seq, char *why, size_t whylen)
{
    char hash[AP_SHA256_HEX], id[AP_KEY_ID_LEN], masked[AP_MASK_LEN], enabled[2], cms[24], err[200];
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(info, "enabled");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(info, "name");
    const cJSON *created = cJSON_GetObjectItemCaseSensitive(info, "created");
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(info, "id");
    const cJSON *jmask = cJSON_GetObjectItemCaseSensitive(info, "masked");
    time_t t = 0;

    if (strncmp(key, "sha256:", 7) == 0 && imp_is_hex(key + 7, 64)) {
        /* An entry of our own export: the key is known by its hash only, and keeps working. */
        memcpy(hash, key + 7, sizeof(hash));
        snprintf(masked, sizeof(masked), "%s",
                 cJSON_IsString(jmask) && strlen(jmask->valuestring) < sizeof(masked) ? jmask->valuestring : "***");
    } else {
        ap_sha256_hex(key, strlen(key), hash);
        ap_key_mask(key, masked, sizeof(masked));
    }
    if (cJSON_IsString(jid) && imp_is_hex(jid->valuestring, AP_KEY_ID_LEN - 1))
        memcpy(id, jid->valuestring, AP_KEY_ID_LEN);
    else if (ap_key_id_generate(id) < 0)
        return NULL;
    struct ap_policy *pol = ap_policy_parse(cJSON_GetObjectItemCaseSensitive(info, "policy"), err, sizeof(err));
    char *policy = pol != NULL && !ap_policy_empty(pol) ? ap_policy_print(pol) : NULL;
    int bad = pol == NULL || (!ap_policy_empty(pol) && policy == NULL);
    ap_policy_free(pol);
    if (bad) {
        snprintf(why, whylen, "%s: %s", masked, pol == NULL ? err : "out of memory");
        return NULL;
    }
    /* The original wrote 1 or true; a missing flag meant enabled. */
    int on = en == NULL || cJSON_IsTrue(en) || (cJSON_IsNumber(en) && en->valuedouble != 0);
    snprintf(enabled, sizeof(enabled), "%d", on);
    if (cJSON_IsString(created))
        ap_time_parse_iso(created->valuestring, &t);
    /* The key list's order: creation time in ms, then the file's order (as the create script does). */
    snprintf(cms, sizeof(cms), "%lld", ((long long)t * 1000) * 1000 + (long long)(seq % 1000));

    struct ap_delta *d = ap_delta_new();
    if (d == NULL) {
        free(policy);
        return NULL;
    }
    imp_usage(d, id, cJSON_GetObjectItemCaseSensitive(info, "usage"));
    const char *head[] = {"EVAL", ap_script_import_key, "0", ap_store_prefix(), hash, id,
                          cJSON_IsString(name) ? name->valuestring : "unnamed", enabled,
                          cJSON_IsString(created) ? created->valuestring : "", masked, cms, policy ? policy : ""};
    struct ap_batch *b = ap_delta_take(d, SIZE_MAX, head, 12);
    ap_delta_free(d);
    free(policy);
    return b;
}

int ap_import_parse(const char *json, size_t len, struct ap_import *out, char *err, size_t errlen)
{
    const char *why;
    memset(out, 0, sizeof(*out));
    cJSON *root = ap_json_parse_client(json, len, &why);
    if (root == NULL) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
    if (!cJSON_IsObject(keys)) {
        snprintf(err, errlen, "no \"keys\" object");
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *ak = cJSON_GetObjectItemCaseSensitive(root, "admin_key");
    if (cJSON_IsString(ak) && ak->valuestring[0] != '\0')
        out->admin_key = strdup(ak->valuestring);

    size_t n = (size_t)cJSON_GetArraySize(keys), seq = 0;
    out->cmds = calloc(n ? n : 1, sizeof(*out->cmds));
    if (out->cmds == NULL) {
        cJSON_Delete(root);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *k;
    cJSON_ArrayForEach(k, keys) {
        if (!cJSON_IsObject(k) || k->string == NULL || k->string[0] == '\0') {
            out->skipped++;
            continue;
        }
        /* The first problem is kept; later ones only count as skipped. */
        char problem[sizeof(out->problem)] = "";
        struct ap_batch *b = imp_key(k->string, k, seq++, problem, sizeof(problem));
        if (b == NULL) {
            out->skipped++;
            if (out->problem[0] == '\0')
                memcpy(out->problem, problem, sizeof(problem));
            continue;
        }
        out->cmds[out->ncmds++] = b;
    }
    cJSON_Delete(root);
    return 0;
}

int ap_import_file(const char *path, struct ap_import *out, char *err, size_t errlen)
{
    char *buf;
    size_t len;
    memset(out, 0, sizeof(*out));
    if (ap_file_read(path, &buf, &len) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = ap_import_parse(buf, len, out, err, errlen);
    free(buf);
    return rc;
}

void ap_import_free(struct ap_import *imp)
{
    for (size_t i = 0; i < imp->ncmds; i++)
        ap_batch_free(imp->cmds[i]);
    free(imp->cmds);
    free(imp->admin_key);
    memset(imp, 0, sizeof(*imp));
}
