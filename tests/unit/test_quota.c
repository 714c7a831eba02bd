/*
 * ap_quota: from the upstream's /health to a tier choice (docs/contract.md sections 5, 6).
 *
 *   ap_health_parse     table of documents -> per-model fraction and resetTime
 *                       (max over ALL accounts, null as 0, clamped, invalid/error
 *                       accounts ignored), then malformed documents
 *   ap_quota_settle     table: fraction x previous state x min/margin -> available
 *   ap_quota_changed    table of edits to a copy
 *   ap_quota_stale      table of ages around 3 intervals
 *   JSON round trip, exhausted marks
 *   ap_tier_available   table: tier x quota (fresh/stale/none) x marks
 *   ap_fallback_plan    table: chain, requested model, unavailable tiers, max -> plan
 *
 * JSON in this file is written with ' for " so that it stays readable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "ap_fallback.h"
#include "ap_quota.h"

/* resetTime values used below, as wall milliseconds. */
#define T_0900 "2026-02-11T09:00:00Z"
#define T_0930 "2026-02-11T09:30:00Z"
#define T_1000 "2026-02-11T10:00:00Z"
#define MS_0900 1770800400000LL
#define MS_0930 1770802200000LL
#define MS_1000 1770804000000LL

#define NOW 1795694105135LL

static char *dq(const char *sq)
{
    char *s = strdup(sq);
    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

static int health_parse_sq(const char *sq, struct ap_quota *q, char *err, size_t errlen)
{
    char *s = dq(sq);
    int rc = ap_health_parse(s, strlen(s), q, err, errlen);
    free(s);
    return rc;
}

/* Appends a model to q by hand (independent of the parser). */
static void quota_add(struct ap_quota *q, const char *model, double fraction, int available)
{
    struct ap_quota_model *m = realloc(q->m, (q->n + 1) * sizeof(*m));
    assert_non_null(m);
    q->m = m;
    memset(&m[q->n], 0, sizeof(m[q->n]));
    snprintf(m[q->n].model, sizeof(m[q->n].model), "%s", model);
    m[q->n].fraction = fraction;
    m[q->n].available = available ? 1 : 0;
    q->n++;
}

static void quota_copy(struct ap_quota *dst, const struct ap_quota *src)
{
    *dst = *src;
    dst->m = NULL;
    if (src->n > 0) {
        dst->m = malloc(src->n * sizeof(*dst->m));
        assert_non_null(dst->m);
        memcpy(dst->m, src->m, src->n * sizeof(*dst->m));
    }
}

/* ---- ap_health_parse: aggregation table ---- */

struct want_model {
    const char *model;
    double fraction;
    int64_t reset_ms;
};

struct health_case {
    const char *doc;            /* ' for " */
    size_t nmodels;             /* models expected in q, exactly */
    struct want_model want[3];
};

static void run_health(void **state)
{
    const struct health_case *c = *state;
    struct ap_quota q = {0};
    char err[160] = "";

    /* Start from unrelated content: the parse must replace it. */
    quota_add(&q, "left-over-model", 0.5, 1);
    if (health_parse_sq(c->doc, &q, err, sizeof(err)) != 0)
        fail_msg("refused: %s", err);
    if (q.n != c->nmodels) {
        for (size_t i = 0; i < q.n; i++)
            print_error("  got model %s f=%g\n", q.m[i].model, q.m[i].fraction);
        fail_msg("%zu models, want %zu", q.n, c->nmodels);
    }
    assert_null(ap_quota_find(&q, "left-over-model"));
    for (size_t i = 0; i < c->nmodels; i++) {
        const struct want_model *w = &c->want[i];
        const struct ap_quota_model *e = ap_quota_find(&q, w->model);
        if (e == NULL)
            fail_msg("model %s missing", w->model);
        if (e->fraction < w->fraction - 1e-12 || e->fraction > w->fraction + 1e-12)
            fail_msg("model %s: fraction %.17g, want %.17g", w->model, e->fraction, w->fraction);
        if (e->reset_ms != w->reset_ms)
            fail_msg("model %s: reset_ms %lld, want %lld", w->model, (long long)e->reset_ms,
                     (long long)w->reset_ms);
    }
    ap_quota_free(&q);
    assert_null(q.m);
    assert_int_equal(q.n, 0);
}

#define ACCT(status, models) "{'email':'x@y','status':'" status "','modelRateLimits':{},'models':{" models "}}"
#define MODEL(name, frac) "'" name "':{'remaining':'?','remainingFraction':" frac "}"
#define MODEL_R(name, frac, reset) "'" name "':{'remainingFraction':" frac ",'resetTime':'" reset "'}"
#define DOC(accounts) "{'status':'ok','timestamp':'2026-02-11T08:00:00Z','accounts':[" accounts "]}"

#define HEALTH(name, doc, n, ...) \
    {name, run_health, NULL, NULL, &(struct health_case){doc, n, {__VA_ARGS__}}}

/* ---- ap_health_parse: malformed documents ---- */

struct bad_doc {
    const char *doc; /* verbatim, not ' translated */
    const char *msg; /* expected in the message */
};

static const struct bad_doc bad_docs[] = {
    {"", "JSON"},
    {"{", "JSON"},
    {"hello", "JSON"},
    {"{\"accounts\":[}", "JSON"},
    {"{}", "accounts"},
    {"[]", "accounts"},
    {"42", "accounts"},
    {"{\"accounts\":null}", "accounts"},
    {"{\"accounts\":{}}", "accounts"},
    {"{\"accounts\":\"none\"}", "accounts"},
    {"{\"status\":\"ok\",\"Accounts\":[]}", "accounts"},
};

static void test_health_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
        struct ap_quota q = {0};
        char err[160] = "";
        int rc = ap_health_parse(bad_docs[i].doc, strlen(bad_docs[i].doc), &q, err, sizeof(err));
        if (rc != -1)
            fail_msg("doc %zu (%s): rc %d, want -1", i, bad_docs[i].doc, rc);
        if (err[0] == '\0' || strstr(err, bad_docs[i].msg) == NULL)
            fail_msg("doc %zu (%s): message \"%s\" should mention %s", i, bad_docs[i].doc, err, bad_docs[i].msg);
        ap_quota_free(&q);
    }
}

/* The length is honoured: a valid document followed by garbage it must not read. */
static void test_health_length(void **state)
{
    (void)state;
    char *s = dq(DOC(ACCT("ok", MODEL("m", "0.25"))) "GARBAGE");
    struct ap_quota q = {0};
    char err[160] = "";
    assert_int_equal(ap_health_parse(s, strlen(s) - 7, &q, err, sizeof(err)), 0);
    assert_int_equal(q.n, 1);
    assert_float_equal(ap_quota_find(&q, "m")->fraction, 0.25, 1e-12);
    ap_quota_free(&q);
    free(s);
}

/* ---- ap_quota_settle ---- */

enum prev_state { PREV_NULL, PREV_NEW, PREV_AVAIL, PREV_UNAVAIL };

struct settle_case {
    double fraction;
    enum prev_state prev;
    double min, margin;
    int want;
};

static const struct settle_case settle_cases[] = {
    /* available at >= min */
    {0.05, PREV_NULL, 0.05, 0.10, 1},
    {0.0499, PREV_NULL, 0.05, 0.10, 0},
    {0.9, PREV_NULL, 0.05, 0.10, 1},
    {0.0, PREV_NULL, 0.05, 0.10, 0},
    {0.0, PREV_NULL, 0.0, 0.0, 1},
    /* a model new in this poll (prev exists, without it) uses min */
    {0.05, PREV_NEW, 0.05, 0.10, 1},
    {0.06, PREV_NEW, 0.05, 0.10, 1},
    {0.04, PREV_NEW, 0.05, 0.10, 0},
    /* was available: min */
    {0.05, PREV_AVAIL, 0.05, 0.10, 1},
    {0.10, PREV_AVAIL, 0.05, 0.10, 1},
    {0.04, PREV_AVAIL, 0.05, 0.10, 0},
    /* was unavailable: min + margin */
    {0.05, PREV_UNAVAIL, 0.05, 0.10, 0},
    {0.14, PREV_UNAVAIL, 0.05, 0.10, 0},
    {0.16, PREV_UNAVAIL, 0.05, 0.10, 1},
    {0.25, PREV_UNAVAIL, 0.25, 0.25, 0},
    {0.5, PREV_UNAVAIL, 0.25, 0.25, 1},    /* exactly min + margin (exact in binary) */
    {0.05, PREV_UNAVAIL, 0.05, 0.0, 1},    /* no margin: min */
    {0.04, PREV_UNAVAIL, 0.05, 0.0, 0},
};

static void test_settle(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(settle_cases) / sizeof(settle_cases[0]); i++) {
        const struct settle_case *c = &settle_cases[i];
        struct ap_quota q = {0}, prev = {0};
        quota_add(&q, "other", 1.0, 0);
        quota_add(&q, "m", c->fraction, c->prev == PREV_AVAIL ? 0 : 1); /* stale flag: must be overwritten */
        quota_add(&prev, "other", 1.0, 1);
        if (c->prev == PREV_AVAIL)
            quota_add(&prev, "m", 0.9, 1);
        else if (c->prev == PREV_UNAVAIL)
            quota_add(&prev, "m", 0.0, 0);
        ap_quota_settle(&q, c->prev == PREV_NULL ? NULL : &prev, c->min, c->margin);
        const struct ap_quota_model *e = ap_quota_find(&q, "m");
        assert_non_null(e);
        if ((int)e->available != c->want)
            fail_msg("row %zu: fraction %g, prev %d, min %g, margin %g: available %d, want %d", i, c->fraction,
                     (int)c->prev, c->min, c->margin, (int)e->available, c->want);
        assert_int_equal(ap_quota_find(&q, "other")->available, 1);
        ap_quota_free(&q);
        ap_quota_free(&prev);
    }
}

/*
 * Recovery at exactly min + margin with decimal settings as an operator writes
 * them: min_remaining_fraction 0.05 and recovery_margin 0.1, the upstream
 * reporting 0.15. In binary 0.05 + 0.1 is 0.15000000000000002 > 0.15, so a
 * plain `fraction >= min + margin` keeps the tier out at exactly the threshold.
 */
static void test_settle_recovery_exact_decimal(void **state)
{
    (void)state;
    static const struct {
        double min, margin, f;
    } rows[] = {{0.05, 0.10, 0.15}, {0.1, 0.2, 0.3}, {0.05, 0.05, 0.10}, {0.07, 0.01, 0.08}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct ap_quota q = {0}, prev = {0};
        quota_add(&q, "m", rows[i].f, 0);
        quota_add(&prev, "m", 0.0, 0);
        ap_quota_settle(&q, &prev, rows[i].min, rows[i].margin);
        int got = q.m[0].available;
        ap_quota_free(&q);
        ap_quota_free(&prev);
        if (!got)
            fail_msg("min %g + margin %g, fraction %g (was unavailable): still unavailable at the threshold",
                     rows[i].min, rows[i].margin, rows[i].f);
    }
}

/* Hysteresis over a sequence of polls: down below min, back only above min+margin. */
static void test_settle_sequence(void **state)
{
    (void)state;
    static const struct {
        double f;
        int want;
    } polls[] = {{0.50, 1}, {0.10, 1}, {0.04, 0}, {0.06, 0}, {0.12, 0}, {0.20, 1}, {0.06, 1}, {0.01, 0}};
    struct ap_quota prev = {0};
    int have_prev = 0;
    for (size_t i = 0; i < sizeof(polls) / sizeof(polls[0]); i++) {
        struct ap_quota q = {0};
        quota_add(&q, "m", polls[i].f, 0);
        ap_quota_settle(&q, have_prev ? &prev : NULL, 0.05, 0.125);
        if ((int)q.m[0].available != polls[i].want)
            fail_msg("poll %zu (f=%g): available %d, want %d", i, polls[i].f, (int)q.m[0].available,
                     polls[i].want);
        ap_quota_free(&prev);
        prev = q;
        have_prev = 1;
    }
    ap_quota_free(&prev);
}

/* ---- ap_quota_changed ---- */

enum change_kind {
    CH_NONE, CH_PREV_NULL, CH_FRACTION, CH_AVAIL, CH_ADD, CH_REMOVE, CH_RENAME, CH_REORDER, CH_POLL_OK,
    CH_TINY_FRACTION
};

static const struct {
    enum change_kind kind;
    int want;
} change_cases[] = {
    {CH_NONE, 0}, {CH_PREV_NULL, 1}, {CH_FRACTION, 1}, {CH_AVAIL, 1}, {CH_ADD, 1},
    {CH_REMOVE, 1}, {CH_RENAME, 1}, {CH_REORDER, 0}, {CH_POLL_OK, 1}, {CH_TINY_FRACTION, 0},
};

static void test_changed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(change_cases) / sizeof(change_cases[0]); i++) {
        struct ap_quota prev = {0}, q;
        prev.poll_ms = NOW;
        prev.interval_s = 30;
        prev.poll_ok = 1;
        quota_add(&prev, "a", 0.5, 1);
        quota_add(&prev, "b", 0.0, 0);
        quota_add(&prev, "c", 0.25, 1);
        quota_copy(&q, &prev);
        switch (change_cases[i].kind) {
        case CH_NONE: case CH_PREV_NULL: break;
        case CH_FRACTION: q.m[0].fraction = 0.49; break;
        case CH_AVAIL: q.m[1].available = 1; break;
        case CH_ADD: quota_add(&q, "d", 1.0, 1); break;
        case CH_REMOVE: q.n--; break;
        case CH_RENAME: snprintf(q.m[2].model, sizeof(q.m[2].model), "z"); break;
        case CH_REORDER: {
            struct ap_quota_model t = q.m[0];
            q.m[0] = q.m[2];
            q.m[2] = t;
            break;
        }
        case CH_POLL_OK: q.poll_ok = 0; break;
        case CH_TINY_FRACTION: q.m[0].fraction += 1e-12; break;
        }
        int got = ap_quota_changed(&q, change_cases[i].kind == CH_PREV_NULL ? NULL : &prev);
        if (got != change_cases[i].want)
            fail_msg("change kind %d: changed %d, want %d", (int)change_cases[i].kind, got, change_cases[i].want);
        ap_quota_free(&q);
        ap_quota_free(&prev);
    }
}

/* ---- ap_quota_stale ---- */

static const struct {
    int64_t poll_ms;
    double interval_s;
    int64_t now_ms;
    int want;
} stale_cases[] = {
    {0, 10, NOW, 1},                       /* never polled */
    {0, 10, 1, 1},
    {NOW, 10, NOW, 0},                     /* fresh */
    {NOW, 10, NOW + 10000, 0},             /* one interval */
    {NOW, 10, NOW + 29999, 0},
    {NOW, 10, NOW + 30000, 0},             /* exactly 3 intervals: still usable */
    {NOW, 10, NOW + 30001, 1},             /* older */
    {NOW, 10, NOW + 3600000, 1},
    {NOW, 0.5, NOW + 1500, 0},             /* fractional interval */
    {NOW, 0.5, NOW + 1501, 1},
    {NOW, 0, NOW + 90000, 0},              /* no interval known: 30 s */
    {NOW, 0, NOW + 90001, 1},
};

static void test_stale(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(stale_cases) / sizeof(stale_cases[0]); i++) {
        struct ap_quota q = {0};
        q.poll_ms = stale_cases[i].poll_ms;
        q.interval_s = stale_cases[i].interval_s;
        q.poll_ok = 1;
        int got = ap_quota_stale(&q, stale_cases[i].now_ms);
        if (got != stale_cases[i].want)
            fail_msg("row %zu: poll %lld, interval %g, now %lld: stale %d, want %d", i,
                     (long long)stale_cases[i].poll_ms, stale_cases[i].interval_s,
                     (long long)stale_cases[i].now_ms, got, stale_cases[i].want);
    }
}

/* ---- JSON round trip ---- */

static void roundtrip(const struct ap_quota *in)
{
    cJSON *j = ap_quota_to_json(in);
    assert_non_null(j);
    /* Through text, as it travels via Redis and pub/sub. */
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    assert_non_null(text);
    cJSON *back = cJSON_Parse(text);
    cJSON_free(text);
    assert_non_null(back);

    /* The documented field names. */
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(back, "poll_ms")));
    assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(back, "ok")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(back, "interval")));
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(back, "models");
    assert_true(cJSON_IsObject(models));
    assert_int_equal(cJSON_GetArraySize(models), in->n);

    struct ap_quota out = {0};
    quota_add(&out, "left-over-model", 0.5, 1);
    assert_int_equal(ap_quota_from_json(back, &out), 0);
    cJSON_Delete(back);

    assert_int_equal(out.poll_ms, in->poll_ms);
    assert_float_equal(out.interval_s, in->interval_s, 0);
    assert_int_equal(out.poll_ok, in->poll_ok);
    assert_string_equal(out.error, in->error);
    assert_int_equal(out.n, in->n);
    assert_null(ap_quota_find(&out, "left-over-model"));
    for (size_t i = 0; i < in->n; i++) {
        const struct ap_quota_model *e = ap_quota_find(&out, in->m[i].model);
        if (e == NULL)
            fail_msg("model %s lost", in->m[i].model);
        if (e->fraction != in->m[i].fraction)
            fail_msg("model %s: fraction %.17g, want %.17g", e->model, e->fraction, in->m[i].fraction);
        assert_int_equal(e->reset_ms, in->m[i].reset_ms);
        assert_int_equal(e->available, in->m[i].available);
    }
    assert_int_equal(ap_quota_changed(&out, in), 0);
    ap_quota_free(&out);
}

static void test_json_roundtrip(void **state)
{
    (void)state;
    struct ap_quota q = {0};

    /* Never polled, no models. */
    roundtrip(&q);

    q.poll_ms = NOW;
    q.interval_s = 12.5;
    q.poll_ok = 1;
    quota_add(&q, "claude-opus-4-6-thinking", 0.123456789012345, 1);
    q.m[0].reset_ms = MS_1000;
    quota_add(&q, "gemini-3-pro-high", 0.0, 0);
    quota_add(&q, "model \"quoted\" \\ name", 1.0, 1);
    q.m[2].reset_ms = NOW;
    quota_add(&q, "third", 1.0 / 3.0, 0);
    roundtrip(&q);

    q.poll_ok = 0;
    snprintf(q.error, sizeof(q.error), "GET /health: timeout after 10000 ms");
    roundtrip(&q);
    ap_quota_free(&q);
}

static void test_json_invalid(void **state)
{
    (void)state;
    static const char *const docs[] = {"[]", "42", "\"x\"", "{}", "{\"models\":[]}", "{\"models\":null}",
                                       "{\"poll_ms\":1,\"ok\":true}"};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        cJSON *j = cJSON_Parse(docs[i]);
        assert_non_null(j);
        struct ap_quota q = {0};
        if (ap_quota_from_json(j, &q) != -1)
            fail_msg("%s accepted", docs[i]);
        cJSON_Delete(j);
        ap_quota_free(&q);
    }
    struct ap_quota q = {0};
    assert_int_equal(ap_quota_from_json(NULL, &q), -1);
}

/* ---- exhausted marks ---- */

static void test_marks(void **state)
{
    (void)state;
    struct ap_marks k = {0};

    assert_int_equal(ap_marks_until(&k, "a", NOW), 0);
    assert_int_equal(ap_marks_until(NULL, "a", NOW), 0);

    assert_int_equal(ap_marks_set(&k, "a", NOW + 60000), 0);
    assert_int_equal(ap_marks_until(&k, "a", NOW), NOW + 60000);
    assert_int_equal(ap_marks_until(&k, "b", NOW), 0);

    /* An earlier mark does not shorten it; a later one extends it. */
    assert_int_equal(ap_marks_set(&k, "a", NOW + 1000), 0);
    assert_int_equal(ap_marks_until(&k, "a", NOW), NOW + 60000);
    assert_int_equal(ap_marks_set(&k, "a", NOW + 120000), 0);
    assert_int_equal(ap_marks_until(&k, "a", NOW), NOW + 120000);

    /* Independent models. */
    assert_int_equal(ap_marks_set(&k, "b", NOW + 5000), 0);
    assert_int_equal(ap_marks_until(&k, "b", NOW), NOW + 5000);
    assert_int_equal(ap_marks_until(&k, "a", NOW), NOW + 120000);

    /* Expired -> 0. */
    assert_int_equal(ap_marks_until(&k, "b", NOW + 4999), NOW + 5000);
    assert_int_equal(ap_marks_until(&k, "b", NOW + 5001), 0);
    assert_int_equal(ap_marks_until(&k, "b", NOW + 3600000), 0);
    assert_int_equal(ap_marks_until(&k, "a", NOW + 5001), NOW + 120000);

    /* An expired mark can be set again. */
    assert_int_equal(ap_marks_set(&k, "b", NOW + 9000000), 0);
    assert_int_equal(ap_marks_until(&k, "b", NOW + 5001), NOW + 9000000);

    /* Case matters, names are exact. */
    assert_int_equal(ap_marks_until(&k, "A", NOW), 0);
    assert_int_equal(ap_marks_until(&k, "a ", NOW), 0);

    ap_marks_free(&k);
    assert_null(k.m);
    assert_int_equal(k.n, 0);
    assert_int_equal(ap_marks_until(&k, "a", NOW), 0);
}

/* ---- tiers ---- */

#define CHAIN \
    "{'enabled':true,'tiers':[" \
    " {'name':'A','model':'a','type':'antigravity','health_key':'a-quota'}," \
    " {'name':'B','model':'b','type':'upstream'}," \
    " {'name':'C','model':'c','type':'antigravity'}," \
    " {'name':'D','model':'d','type':'external','base_url':'https://x.example/v1','api_key':'k'}]}"

static struct ap_fallback *chain(const char *sq)
{
    char err[256] = "";
    char *s = dq(sq);
    struct ap_fallback *f = ap_fallback_parse(s, strlen(s), err, sizeof(err));
    free(s);
    if (f == NULL)
        fail_msg("chain refused: %s", err);
    return f;
}

enum qstate { Q_FRESH, Q_STALE, Q_NONE };

struct avail_case {
    const char *tier;       /* model of the tier */
    enum qstate qs;
    const char *unavail;    /* quota entries with available=0, comma separated (others listed available) */
    const char *marked;     /* models marked exhausted now, comma separated */
    const char *expired;    /* models with an expired mark */
    int want;
};

static const struct avail_case avail_cases[] = {
    /* quota decides internal tiers, by health_key */
    {"a", Q_FRESH, "", "", "", 1},
    {"a", Q_FRESH, "a-quota", "", "", 0},
    {"a", Q_FRESH, "a", "", "", 1},              /* the model name is not the key */
    {"b", Q_FRESH, "b", "", "", 0},
    {"c", Q_FRESH, "b", "", "", 1},
    {"c", Q_FRESH, "!c", "", "", 1},             /* "!c": c absent from the quota: unknown */
    /* stale or no data: available */
    {"a", Q_STALE, "a-quota", "", "", 1},
    {"b", Q_STALE, "b", "", "", 1},
    {"b", Q_NONE, "", "", "", 1},
    /* external: no quota */
    {"d", Q_FRESH, "d", "", "", 1},
    {"d", Q_FRESH, "", "d", "", 0},
    {"d", Q_FRESH, "", "", "d", 1},
    /* marks, by model */
    {"a", Q_FRESH, "", "a", "", 0},
    {"b", Q_FRESH, "", "b", "", 0},
    {"b", Q_STALE, "", "b", "", 0},
    {"b", Q_NONE, "", "b", "", 0},
    {"b", Q_FRESH, "", "", "b", 1},
    {"b", Q_FRESH, "", "a,c,d", "", 1},
};

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p != '\0';) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, name, n) == 0)
            return 1;
        p += l + (e ? 1 : 0);
    }
    return 0;
}

/* Quota for the CHAIN's keys: every key listed available except those in `unavail` ("!k": absent). */
static void quota_for(struct ap_quota *q, enum qstate qs, const char *unavail)
{
    static const char *const keys[] = {"a-quota", "a", "b", "c", "d"};
    memset(q, 0, sizeof(*q));
    q->interval_s = 30;
    q->poll_ok = 1;
    q->poll_ms = qs == Q_STALE ? NOW - 91000 : NOW - 1000;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char absent[16];
        snprintf(absent, sizeof(absent), "!%s", keys[i]);
        if (in_list(unavail, absent))
            continue;
        int down = in_list(unavail, keys[i]);
        quota_add(q, keys[i], down ? 0.0 : 0.8, !down);
    }
}

static void marks_for(struct ap_marks *k, const char *marked, const char *expired)
{
    static const char *const models[] = {"a", "b", "c", "d"};
    memset(k, 0, sizeof(*k));
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        if (in_list(marked, models[i]))
            assert_int_equal(ap_marks_set(k, models[i], NOW + 60000), 0);
        if (in_list(expired, models[i]))
            assert_int_equal(ap_marks_set(k, models[i], NOW - 1), 0);
    }
}

static void test_tier_available(void **state)
{
    (void)state;
    struct ap_fallback *f = chain(CHAIN);
    for (size_t i = 0; i < sizeof(avail_cases) / sizeof(avail_cases[0]); i++) {
        const struct avail_case *c = &avail_cases[i];
        struct ap_quota q;
        struct ap_marks k;
        quota_for(&q, c->qs, c->unavail);
        marks_for(&k, c->marked, c->expired);
        const struct ap_tier *t = ap_fallback_find(f, c->tier);
        assert_non_null(t);
        int got = ap_tier_available(t, c->qs == Q_NONE ? NULL : &q, &k, NOW);
        if (got != c->want)
            fail_msg("row %zu: tier %s, quota %d, unavail '%s', marked '%s': available %d, want %d", i, c->tier,
                     (int)c->qs, c->unavail, c->marked, got, c->want);
        ap_quota_free(&q);
        ap_marks_free(&k);
    }
    ap_fallback_free(f);
}

/* ---- ap_fallback_plan ---- */

struct plan_case {
    const char *doc;        /* chain (' for ") */
    const char *model;
    enum qstate qs;
    const char *unavail;    /* quota keys unavailable */
    const char *marked;     /* models marked exhausted */
    size_t max;
    const char *want;       /* models, comma separated; "" for 0 (pass through) */
};

#define DISABLED \
    "{'enabled':false,'tiers':[{'name':'A','model':'a','type':'antigravity'}," \
    " {'name':'B','model':'b','type':'upstream'}]}"

static const struct plan_case plan_cases[] = {
    /* pass through */
    {DISABLED, "a", Q_FRESH, "", "", 8, ""},
    {DISABLED, "a", Q_FRESH, "a", "", 8, ""},
    {CHAIN, "gpt-4o", Q_FRESH, "", "", 8, ""},
    {CHAIN, "a-quota", Q_FRESH, "", "", 8, ""},      /* a health key is not a model */
    {CHAIN, "B", Q_FRESH, "", "", 8, ""},            /* a name is not a model */
    /* requested available: it first, then the other available tiers in chain order */
    {CHAIN, "a", Q_FRESH, "", "", 8, "a,b,c,d"},
    {CHAIN, "b", Q_FRESH, "", "", 8, "b,a,c,d"},
    {CHAIN, "c", Q_FRESH, "a-quota", "", 8, "c,b,d"},
    {CHAIN, "d", Q_FRESH, "b", "", 8, "d,a,c"},
    {CHAIN, "c", Q_FRESH, "", "a", 8, "c,b,d"},
    /* requested unavailable: the first other available tier in chain order, before it too */
    {CHAIN, "c", Q_FRESH, "c", "", 8, "a,b,d"},
    {CHAIN, "c", Q_FRESH, "c,a-quota", "", 8, "b,d"},
    {CHAIN, "b", Q_FRESH, "b,a-quota", "", 8, "c,d"},
    {CHAIN, "a", Q_FRESH, "", "a", 8, "b,c,d"},
    {CHAIN, "d", Q_FRESH, "a-quota", "d", 8, "b,c"},
    {CHAIN, "b", Q_FRESH, "b,c", "", 1, "a"},
    {CHAIN, "d", Q_FRESH, "a-quota,b,c", "d", 8, "d"},
    /* nothing available: the requested one alone */
    {CHAIN, "b", Q_FRESH, "a-quota,b,c", "d", 8, "b"},
    {CHAIN, "a", Q_FRESH, "", "a,b,c,d", 8, "a"},
    /* stale quota counts as available; marks still apply */
    {CHAIN, "c", Q_STALE, "a-quota,b,c", "", 8, "c,a,b,d"},
    {CHAIN, "c", Q_STALE, "a-quota,b,c", "c", 8, "a,b,d"},
    {CHAIN, "b", Q_NONE, "", "", 8, "b,a,c,d"},
    /* max limits the count */
    {CHAIN, "b", Q_FRESH, "", "", 1, "b"},
    {CHAIN, "b", Q_FRESH, "", "", 2, "b,a"},
    {CHAIN, "c", Q_FRESH, "c", "", 2, "a,b"},
    {CHAIN, "c", Q_FRESH, "c", "", 1, "a"},
    {CHAIN, "d", Q_FRESH, "", "", 4, "d,a,b,c"},
    {CHAIN, "b", Q_FRESH, "a-quota,b,c", "d", 1, "b"},
};

static void test_plan(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(plan_cases) / sizeof(plan_cases[0]); i++) {
        const struct plan_case *c = &plan_cases[i];
        struct ap_fallback *f = chain(c->doc);
        struct ap_quota q;
        struct ap_marks k;
        quota_for(&q, c->qs, c->unavail);
        marks_for(&k, c->marked, "");

        /* out has room past max: nothing may be written there */
        const struct ap_tier *out[16];
        const struct ap_tier sentinel = {0};
        for (size_t j = 0; j < 16; j++)
            out[j] = &sentinel;
        size_t n = ap_fallback_plan(f, c->qs == Q_NONE ? NULL : &q, &k, c->model, NOW, out, c->max);

        char got[128] = "";
        for (size_t j = 0; j < n && j < 16; j++) {
            assert_ptr_not_equal(out[j], &sentinel);
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", j ? "," : "", out[j]->model);
        }
        if (n > c->max || strcmp(got, c->want) != 0)
            fail_msg("row %zu: model %s, unavail '%s', marked '%s', max %zu: plan [%s] (%zu), want [%s]", i,
                     c->model, c->unavail, c->marked, c->max, got, n, c->want);
        for (size_t j = c->max; j < 16; j++)
            assert_ptr_equal(out[j], &sentinel);
        /* The plan's entries are the chain's own tiers. */
        for (size_t j = 0; j < n; j++)
            assert_ptr_equal(out[j], ap_fallback_find(f, out[j]->model));
        ap_quota_free(&q);
        ap_marks_free(&k);
        ap_fallback_free(f);
    }
}

static void test_plan_null(void **state)
{
    (void)state;
    const struct ap_tier *out[4];
    assert_int_equal(ap_fallback_plan(NULL, NULL, NULL, "a", NOW, out, 4), 0);
    struct ap_fallback *f = chain(CHAIN);
    assert_int_equal(ap_fallback_plan(f, NULL, NULL, NULL, NOW, out, 4), 0);
    assert_int_equal(ap_fallback_plan(f, NULL, NULL, "a", NOW, out, 4), 4);
    ap_fallback_free(f);
}

/* /health to plan, end to end: the original's first-account bug would pick the wrong tier. */
static void test_health_to_plan(void **state)
{
    (void)state;
    struct ap_fallback *f = chain(CHAIN);
    struct ap_quota q = {0};
    char err[160];
    assert_int_equal(health_parse_sq(DOC(ACCT("rate-limited", MODEL("a-quota", "0.0") "," MODEL("b", "0.0"))
                                         "," ACCT("ok", MODEL("a-quota", "0.9") "," MODEL("b", "0.01"))),
                                     &q, err, sizeof(err)),
                     0);
    q.poll_ms = NOW;
    q.interval_s = 30;
    q.poll_ok = 1;
    ap_quota_settle(&q, NULL, f->min_remaining, f->recovery_margin);
    const struct ap_tier *out[4];
    size_t n = ap_fallback_plan(f, &q, NULL, "b", NOW + 1000, out, 4);
    assert_int_equal(n, 3);
    assert_string_equal(out[0]->model, "a");
    assert_string_equal(out[1]->model, "c");
    assert_string_equal(out[2]->model, "d");
    ap_quota_free(&q);
    ap_fallback_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        HEALTH("first account 0, second 0.9 -> 0.9",
               DOC(ACCT("ok", MODEL("m", "0.0")) "," ACCT("ok", MODEL("m", "0.9"))), 1, {"m", 0.9, 0}),
        HEALTH("first 0.9, second 0 -> 0.9",
               DOC(ACCT("ok", MODEL("m", "0.9")) "," ACCT("ok", MODEL("m", "0.0"))), 1, {"m", 0.9, 0}),
        HEALTH("max of three, in the middle",
               DOC(ACCT("ok", MODEL("m", "0.2")) "," ACCT("ok", MODEL("m", "0.7")) "," ACCT("ok", MODEL("m", "0.4"))),
               1, {"m", 0.7, 0}),
        HEALTH("several models over several accounts",
               DOC(ACCT("ok", MODEL("m1", "0.1") "," MODEL("m2", "0.8")) ","
                   ACCT("ok", MODEL("m2", "0.3") "," MODEL("m3", "0.6")) "," ACCT("ok", MODEL("m1", "0.5"))),
               3, {"m1", 0.5, 0}, {"m2", 0.8, 0}, {"m3", 0.6, 0}),
        HEALTH("null fraction counts as 0", DOC(ACCT("ok", MODEL("m", "null"))), 1, {"m", 0.0, 0}),
        HEALTH("null then 0.3", DOC(ACCT("ok", MODEL("m", "null")) "," ACCT("ok", MODEL("m", "0.3"))), 1,
               {"m", 0.3, 0}),
        HEALTH("0.3 then null", DOC(ACCT("ok", MODEL("m", "0.3")) "," ACCT("ok", MODEL("m", "null"))), 1,
               {"m", 0.3, 0}),
        HEALTH("missing fraction counts as 0", DOC(ACCT("ok", "'m':{'remaining':'?'}")), 1, {"m", 0.0, 0}),
        HEALTH("string fraction counts as 0", DOC(ACCT("ok", MODEL("m", "'0.8'"))), 1, {"m", 0.0, 0}),
        HEALTH("above 1 clamped", DOC(ACCT("ok", MODEL("m", "1.5"))), 1, {"m", 1.0, 0}),
        HEALTH("below 0 clamped", DOC(ACCT("ok", MODEL("m", "-0.2"))), 1, {"m", 0.0, 0}),
        HEALTH("clamped values in the max",
               DOC(ACCT("ok", MODEL("m", "-3")) "," ACCT("ok", MODEL("m", "0.1")) "," ACCT("ok", MODEL("n", "7"))),
               2, {"m", 0.1, 0}, {"n", 1.0, 0}),
        HEALTH("invalid account ignored",
               DOC(ACCT("invalid", MODEL("m", "0.9")) "," ACCT("ok", MODEL("m", "0.1"))), 1, {"m", 0.1, 0}),
        HEALTH("error account ignored",
               DOC(ACCT("ok", MODEL("m", "0.1")) "," ACCT("error", MODEL("m", "0.9") "," MODEL("x", "1"))), 1,
               {"m", 0.1, 0}),
        HEALTH("only invalid/error accounts: no models",
               DOC(ACCT("invalid", MODEL("m", "0.9")) "," ACCT("error", MODEL("m", "0.9"))), 0, {NULL, 0, 0}),
        HEALTH("rate-limited account counted",
               DOC(ACCT("rate-limited", MODEL("m", "0.6")) "," ACCT("ok", MODEL("m", "0.2"))), 1, {"m", 0.6, 0}),
        HEALTH("account without status counted", DOC("{'models':{" MODEL("m", "0.4") "}}"), 1, {"m", 0.4, 0}),
        HEALTH("empty accounts", DOC(""), 0, {NULL, 0, 0}),
        HEALTH("account without models", DOC(ACCT("ok", "") ",{'status':'ok'}," ACCT("ok", MODEL("m", "0.5"))), 1,
               {"m", 0.5, 0}),
        HEALTH("resetTime: soonest over accounts",
               DOC(ACCT("ok", MODEL_R("m", "0.9", T_1000)) "," ACCT("ok", MODEL_R("m", "0.1", T_0900)) ","
                   ACCT("ok", MODEL_R("m", "0.5", T_0930))),
               1, {"m", 0.9, MS_0900}),
        HEALTH("resetTime: only one account has one",
               DOC(ACCT("ok", MODEL("m", "0.9")) "," ACCT("ok", MODEL_R("m", "0.1", T_0930))), 1,
               {"m", 0.9, MS_0930}),
        HEALTH("resetTime: unparsable ignored",
               DOC(ACCT("ok", MODEL_R("m", "0.2", "soon")) "," ACCT("ok", MODEL_R("m", "0.1", T_1000))), 1,
               {"m", 0.2, MS_1000}),
        HEALTH("resetTime: with milliseconds", DOC(ACCT("ok", MODEL_R("m", "0.2", "2026-02-11T09:00:00.000Z"))), 1,
               {"m", 0.2, MS_0900}),
        HEALTH("resetTime: invalid account ignored",
               DOC(ACCT("invalid", MODEL_R("m", "0", T_0900)) "," ACCT("ok", MODEL_R("m", "0.5", T_1000))), 1,
               {"m", 0.5, MS_1000}),
        HEALTH("no resetTime: 0", DOC(ACCT("ok", MODEL("m", "0.5"))), 1, {"m", 0.5, 0}),
        /* found by tests/fuzz/fuzz_health.c: a time before 1970 gave a negative reset time */
        HEALTH("resetTime: before 1970 ignored",
               DOC(ACCT("ok", MODEL_R("m", "0.2", "1013-02-10T21:07:33+08:00")) "," ACCT("ok", MODEL_R("m", "0.1", T_1000))),
               1, {"m", 0.2, MS_1000}),
        cmocka_unit_test(test_health_malformed),
        cmocka_unit_test(test_health_length),
        cmocka_unit_test(test_settle),
        cmocka_unit_test(test_settle_recovery_exact_decimal),
        cmocka_unit_test(test_settle_sequence),
        cmocka_unit_test(test_changed),
        cmocka_unit_test(test_stale),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_invalid),
        cmocka_unit_test(test_marks),
        cmocka_unit_test(test_tier_available),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_plan_null),
        cmocka_unit_test(test_health_to_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
