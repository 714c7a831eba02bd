/* PRICES_CONFIG; see ap_prices.h. */
#include "ap_prices.h"

#include "ap_file.h"
#include "ap_usage.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Past this a price is a typo, and costs could overflow (USD per million tokens). */
#define PRICES_MAX_USD_PER_MTOK 100000.0

struct prices_entry {
    char *name;             /* owned; without the trailing '*' for a prefix */
    size_t len;
    int prefix;
    struct ap_price price;
};

struct ap_prices {
    struct prices_entry *e; /* owned */
    size_t n;
};

void ap_prices_free(struct ap_prices *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->e[i].name);
    free(p->e);
    free(p);
}

size_t ap_prices_count(const struct ap_prices *p)
{
    return p ? p->n : 0;
}

/* One price field: USD/MTok with at most three decimals -> nano-dollars per token. */
static int prices_field(const cJSON *m, const char *name, int required, int64_t *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, name);
    if (v == NULL || cJSON_IsNull(v)) {
        if (required) {
            snprintf(err, errlen, "%s: %s: required (USD per million tokens)", m->string, name);
            return -1;
        }
        return 1;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > PRICES_MAX_USD_PER_MTOK) {
        snprintf(err, errlen, "%s: %s: must be a number of USD per million tokens, 0 to %.0f", m->string, name,
                 PRICES_MAX_USD_PER_MTOK);
        return -1;
    }
    double milli = v->valuedouble * 1000.0;
    if (fabs(milli - nearbyint(milli)) > 1e-6 * (milli > 1 ? milli : 1)) {
        snprintf(err, errlen, "%s: %s: at most three decimals (a multiple of 0.001 USD per million tokens)",
                 m->string, name);
        return -1;
    }
    *out = (int64_t)llrint(milli);
    return 0;
}

static int prices_entry(const cJSON *m, struct prices_entry *e, char *err, size_t errlen)
{
    static const char *const known[] = {"input", "output", "cache_read", "cache_write", NULL};
    const cJSON *f;
    if (!cJSON_IsObject(m)) {
        snprintf(err, errlen, "%s: must be an object {\"input\", \"output\", \"cache_read\", \"cache_write\"}",
                 m->string);
        return -1;
    }
    cJSON_ArrayForEach(f, m) {
        int ok = 0;
        for (int i = 0; known[i] != NULL; i++)
            ok |= strcmp(f->string, known[i]) == 0;
        if (!ok) {
            snprintf(err, errlen, "%s: unknown field \"%s\" (input, output, cache_read, cache_write)", m->string,
                     f->string);
            return -1;
        }
    }
    struct ap_price *pr = &e->price;
    int rc;
    if (prices_field(m, "input", 1, &pr->input, err, errlen) < 0 ||
        prices_field(m, "output", 1, &pr->output, err, errlen) < 0)
        return -1;
    if ((rc = prices_field(m, "cache_read", 0, &pr->cache_read, err, errlen)) < 0)
        return -1;
    if (rc == 1)
        pr->cache_read = pr->input;
    if ((rc = prices_field(m, "cache_write", 0, &pr->cache_write, err, errlen)) < 0)
        return -1;
    if (rc == 1)
        pr->cache_write = pr->input;
    size_t len = strlen(m->string);
    e->prefix = len > 0 && m->string[len - 1] == '*';
    e->len = len - (size_t)e->prefix;
    if (e->len == 0 || memchr(m->string, '*', e->len) != NULL) {
        snprintf(err, errlen, "%s: a model name, or a prefix ending in a single '*'", m->string);
        return -1;
    }
    e->name = strndup(m->string, e->len);
    if (e->name == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

struct ap_prices *ap_prices_parse(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    struct ap_prices *p = NULL;
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "must be a JSON object {\"MODEL\": {\"input\": USD_PER_MTOK, \"output\": ...}}");
        goto fail;
    }
    p = calloc(1, sizeof(*p));
    size_t max = (size_t)cJSON_GetArraySize(root);
    if (p == NULL || (p->e = calloc(max ? max : 1, sizeof(*p->e))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, root) {
        if (m->string[0] == '_')
            continue; /* a comment */
        struct prices_entry *e = &p->e[p->n];
        if (prices_entry(m, e, err, errlen) < 0)
            goto fail;
        p->n++;
        for (size_t i = 0; i + 1 < p->n; i++)
            if (p->e[i].prefix == e->prefix && strcmp(p->e[i].name, e->name) == 0) {
                snprintf(err, errlen, "%s: priced twice", m->string);
                goto fail;
            }
    }
    cJSON_Delete(root);
    return p;
fail:
    cJSON_Delete(root);
    ap_prices_free(p);
    return NULL;
}

struct ap_prices *ap_prices_load(const char *path, char *err, size_t errlen)
{
    char *buf, sub[256];
    size_t len;
    if (ap_file_read(path, &buf, &len) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    struct ap_prices *p = ap_prices_parse(buf, len, sub, sizeof(sub));
    free(buf);
    if (p == NULL)
        snprintf(err, errlen, "%s: %s", path, sub);
    return p;
}

const struct ap_price *ap_prices_find(const struct ap_prices *p, const char *model)
{
    const struct prices_entry *best = NULL;
    if (p == NULL || model == NULL)
        return NULL;
    for (size_t i = 0; i < p->n; i++) {
        const struct prices_entry *e = &p->e[i];
        if (!e->prefix && strcmp(e->name, model) == 0)
            return &e->price;
        if (e->prefix && strncmp(e->name, model, e->len) == 0 && (best == NULL || e->len > best->len))
            best = e;
    }
    return best ? &best->price : NULL;
}

int64_t ap_price_cost(const struct ap_price *pr, const struct ap_usage *u)
{
    if (pr == NULL)
        return 0;
    return u->input * pr->input + u->output * pr->output + u->cache_read * pr->cache_read +
           u->cache_creation * pr->cache_write;
}

void ap_usd_format(int64_t nano, char *out, size_t n)
{
    const char *sign = "";
    uint64_t v = (uint64_t)nano;
    if (nano < 0) {
        sign = "-";
        v = (uint64_t)0 - (uint64_t)nano;
    }
    char frac[10];
    snprintf(frac, sizeof(frac), "%09llu", (unsigned long long)(v % 1000000000ULL));
    int l = 9;
    while (l > 0 && frac[l - 1] == '0')
        frac[--l] = '\0';
    snprintf(out, n, "%s%llu%s%s", sign, (unsigned long long)(v / 1000000000ULL), l ? "." : "", frac);
}

int ap_usd_to_nano(double usd, int64_t *nano)
{
    if (!isfinite(usd) || usd < 0 || usd > 1e9)
        return -1;
    *nano = (int64_t)llrint(usd * 1e9);
    return 0;
}
