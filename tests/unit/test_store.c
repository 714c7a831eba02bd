/*
 * ap_delta (the usage delta accumulator and its batches) and ap_store's pure
 * parts: the usage journal line of finished requests (ap_store_usage_line),
 * model name sanitising, key references, new keys and key names. What a line
 * becomes in Redis (the fold) is tested against a real redis-server:
 * tests/integration/test_usage_fold.py.
 *
 * Batches are checked by scanning their argv for op/key/field/value quads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_delta.h"
#include "ap_keys.h"
#include "ap_store.h"
#include "ap_time.h"

/* ---- batch helpers ---- */

struct quad {
    const char *op;
    const char *key;
    const char *field;
    const char *value;
};

/* Checks the batch's invariants: argc, lens, one-char ops, numeric values. */
static void check_batch_shape(const struct ap_batch *b)
{
    assert_int_equal((size_t)b->argc, (size_t)b->nhead + 4 * (b->nops - b->nlines));
    for (int i = 0; i < b->argc; i++) {
        assert_non_null(b->argv[i]);
        assert_int_equal(b->lens[i], strlen(b->argv[i]));
    }
    for (int i = b->nhead; i + 3 < b->argc; i += 4) {
        const char *op = b->argv[i];
        assert_int_equal(strlen(op), 1);
        assert_true(op[0] == 'i' || op[0] == 'm' || op[0] == 's' || op[0] == 'p');
        char *end;
        strtoll(b->argv[i + 3], &end, 10);
        assert_true(b->argv[i + 3][0] != '\0' && *end == '\0');
    }
}

/* Number of quads matching (op, key, field); *value gets the last match's value. */
static int find_quad(const struct ap_batch *b, const char *op, const char *key, const char *field,
                     const char **value)
{
    int n = 0;
    for (int i = b->nhead; i + 3 < b->argc; i += 4)
        if (strcmp(b->argv[i], op) == 0 && strcmp(b->argv[i + 1], key) == 0 &&
            strcmp(b->argv[i + 2], field) == 0) {
            n++;
            if (value)
                *value = b->argv[i + 3];
        }
    return n;
}

static void assert_quad(const struct ap_batch *b, const char *op, const char *key, const char *field,
                        const char *value)
{
    const char *v = NULL;
    int n = find_quad(b, op, key, field, &v);
    if (n != 1)
        fail_msg("quad %s %s %s: found %d times, want once", op, key, field, n);
    if (strcmp(v, value) != 0)
        fail_msg("quad %s %s %s: value %s, want %s", op, key, field, v, value);
}

/* The batch holds exactly `want` (in any order) and nothing else. */
static void assert_batch_exactly(const struct ap_batch *b, const struct quad *want, size_t n)
{
    check_batch_shape(b);
    for (size_t i = 0; i < n; i++)
        assert_quad(b, want[i].op, want[i].key, want[i].field, want[i].value);
    if (b->nops - b->nlines != n) {
        for (int i = b->nhead; i + 3 < b->argc; i += 4) {
            int expected = 0;
            for (size_t k = 0; k < n && !expected; k++)
                expected = strcmp(b->argv[i], want[k].op) == 0 && strcmp(b->argv[i + 1], want[k].key) == 0 &&
                           strcmp(b->argv[i + 2], want[k].field) == 0;
            if (!expected)
                print_error("unexpected quad: %s | %s | %s | %s\n", b->argv[i], b->argv[i + 1], b->argv[i + 2],
                            b->argv[i + 3]);
        }
        fail_msg("batch has %zu operations, want %zu", b->nops - b->nlines, n);
    }
}

static const char *const HEAD[] = {"EVAL", "return 1", "0", "extra"};

static struct ap_batch *take_all(struct ap_delta *d)
{
    struct ap_batch *b = ap_delta_take(d, SIZE_MAX, HEAD, 4);
    assert_non_null(b);
    return b;
}

/* ---- ap_delta ---- */

static void test_delta_incr_merges(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    assert_int_equal(ap_delta_incr(d, "k", "f", 5), 0);
    assert_int_equal(ap_delta_incr(d, "k", "f", 7), 0);
    assert_int_equal(ap_delta_incr(d, "k", "g", -3), 0);
    assert_int_equal(ap_delta_incr(d, "k2", "f", 1), 0);
    assert_int_equal(ap_delta_count(d), 3);
    struct ap_batch *b = take_all(d);
    const struct quad want[] = {{"i", "k", "f", "12"}, {"i", "k", "g", "-3"}, {"i", "k2", "f", "1"}};
    assert_batch_exactly(b, want, 3);
    assert_int_equal(ap_delta_count(d), 0);
    ap_batch_free(b);
    ap_delta_free(d);
}

static void test_delta_incr_zero_is_nothing(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    assert_int_equal(ap_delta_incr(d, "k", "f", 0), 0);
    assert_int_equal(ap_delta_count(d), 0);
    /* Increments that cancel out still leave an entry (value 0): harmless. */
    ap_delta_incr(d, "k", "f", 4);
    ap_delta_incr(d, "k", "f", -4);
    assert_int_equal(ap_delta_count(d), 1);
    struct ap_batch *b = take_all(d);
    assert_quad(b, "i", "k", "f", "0");
    ap_batch_free(b);
    ap_delta_free(d);
}

static void test_delta_max_keeps_max(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    ap_delta_max(d, "k", "last_used_ms", 10);
    ap_delta_max(d, "k", "last_used_ms", 5);
    ap_delta_max(d, "k", "last_used_ms", 1709224200000LL);
    ap_delta_max(d, "k", "last_used_ms", 15);
    ap_delta_max(d, "k", "other", -7);
    assert_int_equal(ap_delta_count(d), 2);
    struct ap_batch *b = take_all(d);
    const struct quad want[] = {{"m", "k", "last_used_ms", "1709224200000"}, {"m", "k", "other", "-7"}};
    assert_batch_exactly(b, want, 2);
    ap_batch_free(b);
    ap_delta_free(d);
}

static void test_delta_sadd_dedups(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    ap_delta_sadd(d, "days", "2024-02-29");
    ap_delta_sadd(d, "days", "2024-02-29");
    ap_delta_sadd(d, "days", "2024-03-01");
    ap_delta_sadd(d, "hours", "2024-03-01 00:00");
    assert_int_equal(ap_delta_count(d), 3);
    struct ap_batch *b = take_all(d);
    const struct quad want[] = {{"s", "days", "2024-02-29", "0"},
                                {"s", "days", "2024-03-01", "0"},
                                {"s", "hours", "2024-03-01 00:00", "0"}};
    assert_batch_exactly(b, want, 3);
    ap_batch_free(b);
    ap_delta_free(d);
}

static void test_delta_ops_are_distinct(void **state)
{
    (void)state;
    /* The same key and field under different operations are separate entries. */
    struct ap_delta *d = ap_delta_new();
    ap_delta_incr(d, "k", "f", 2);
    ap_delta_max(d, "k", "f", 9);
    ap_delta_sadd(d, "k", "f");
    assert_int_equal(ap_delta_count(d), 3);
    struct ap_batch *b = take_all(d);
    const struct quad want[] = {{"i", "k", "f", "2"}, {"m", "k", "f", "9"}, {"s", "k", "f", "0"}};
    assert_batch_exactly(b, want, 3);
    ap_batch_free(b);
    ap_delta_free(d);
}

static void test_delta_head_arguments(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    ap_delta_incr(d, "key with spaces", "field:with:colons", 1);
    struct ap_batch *b = take_all(d);
    assert_int_equal(b->nhead, 4);
    assert_int_equal(b->nops, 1);
    assert_int_equal(b->argc, 8);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(b->argv[i], HEAD[i]);
        assert_ptr_not_equal(b->argv[i], HEAD[i]); /* copied, owned by the batch */
        assert_int_equal(b->lens[i], strlen(HEAD[i]));
    }
    assert_string_equal(b->argv[4], "i");
    assert_string_equal(b->argv[5], "key with spaces");
    assert_string_equal(b->argv[6], "field:with:colons");
    assert_string_equal(b->argv[7], "1");
    ap_batch_free(b);
    ap_delta_free(d);
}

static void test_delta_take_splits(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    char f[16];
    for (int i = 0; i < 10; i++) {
        snprintf(f, sizeof(f), "f%d", i);
        ap_delta_incr(d, "k", f, i + 1);
    }
    assert_int_equal(ap_delta_count(d), 10);

    struct ap_batch *b1 = ap_delta_take(d, 3, HEAD, 4);
    assert_non_null(b1);
    check_batch_shape(b1);
    assert_int_equal(b1->nops, 3);
    assert_int_equal(b1->argc, 4 + 12);
    assert_int_equal(ap_delta_count(d), 7);

    struct ap_batch *b2 = ap_delta_take(d, 3, HEAD, 4);
    check_batch_shape(b2);
    assert_int_equal(b2->nops, 3);
    assert_int_equal(ap_delta_count(d), 4);

    struct ap_batch *b3 = ap_delta_take(d, 100, HEAD, 4);
    check_batch_shape(b3);
    assert_int_equal(b3->nops, 4);
    assert_int_equal(ap_delta_count(d), 0);

    /* Together the batches hold every entry exactly once, with its value. */
    for (int i = 0; i < 10; i++) {
        char want[8];
        snprintf(f, sizeof(f), "f%d", i);
        snprintf(want, sizeof(want), "%d", i + 1);
        const char *v = NULL, *v1 = NULL, *v2 = NULL, *v3 = NULL;
        int n = find_quad(b1, "i", "k", f, &v1) + find_quad(b2, "i", "k", f, &v2) + find_quad(b3, "i", "k", f, &v3);
        v = v1 ? v1 : v2 ? v2 : v3;
        if (n != 1)
            fail_msg("field %s is in %d batches", f, n);
        assert_string_equal(v, want);
    }

    /* An empty accumulator gives an empty batch (head only). */
    struct ap_batch *b4 = ap_delta_take(d, 100, HEAD, 4);
    assert_non_null(b4);
    assert_int_equal(b4->nops, 0);
    assert_int_equal(b4->argc, 4);

    /* max_ops 0 takes nothing and leaves everything. */
    ap_delta_incr(d, "k", "x", 1);
    struct ap_batch *b5 = ap_delta_take(d, 0, HEAD, 4);
    assert_int_equal(b5->nops, 0);
    assert_int_equal(ap_delta_count(d), 1);

    ap_batch_free(b1);
    ap_batch_free(b2);
    ap_batch_free(b3);
    ap_batch_free(b4);
    ap_batch_free(b5);
    ap_delta_free(d);
}

static void test_delta_take_flush(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    assert_null(ap_delta_take_flush(d, 100, "ap:flush:r:abc", 1, "ap:", NULL, 0));

    /* With a settlement: the script, checking the replica's script mark. */
    ap_delta_settle(d, "ap:pl:k:", "a.1", 12);
    const char *lines[] = {"line one", "line two"};
    struct ap_batch *b = ap_delta_take_flush(d, 100, "ap:flush:r:abc", 7, "ap:", lines, 2);
    assert_non_null(b);
    check_batch_shape(b);
    assert_int_equal(b->journal, 0);
    assert_int_equal(b->nhead, 9);
    const char *head[] = {"EVAL", ap_script_flush, "0", "ap:flush:r:abc:s", "7", "ap:", "2", "line one", "line two"};
    for (int i = 0; i < 9; i++)
        assert_string_equal(b->argv[i], head[i]);
    assert_true(b->argv[7] != lines[0]); /* copied: the caller's buffer may go */
    const struct quad want[] = {{"p", "ap:pl:k:", "a.1", "12"}};
    assert_batch_exactly(b, want, 1);
    assert_int_equal(b->nops, 3); /* two lines and a settlement */
    assert_int_equal(b->nlines, 2);
    assert_int_equal(ap_delta_count(d), 0);
    assert_null(ap_delta_take_flush(d, 100, "ap:flush:r:abc", 8, "ap:", NULL, 0));
    ap_batch_free(b);

    /* Lines alone are a plain append behind a header (the journal mark, the number, the
     * count); max_ops 0 leaves the settlements for the next one. */
    ap_delta_settle(d, "ap:pl:k:", "a.2", 5);
    b = ap_delta_take_flush(d, 0, "ap:flush:r:abc", 18446744073709551615ULL, "ap:", lines, 2);
    assert_non_null(b);
    assert_int_equal(b->journal, 1);
    const char *plain[] = {"RPUSH", "ap:u:journal", "#ap:flush:r:abc:j\t18446744073709551615\t2", "line one",
                           "line two"};
    assert_int_equal(b->argc, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(b->argv[i], plain[i]);
        assert_int_equal(b->lens[i], strlen(plain[i]));
    }
    assert_int_equal(b->nops, 2);
    assert_int_equal(b->nlines, 2);
    assert_int_equal(ap_delta_count(d), 1);
    ap_batch_free(b);

    /* A mark its header could not carry goes as the script. */
    struct ap_delta *e = ap_delta_new();
    b = ap_delta_take_flush(e, 100, "ap:flush:a\tb", 1, "ap:", lines, 1);
    assert_non_null(b);
    assert_int_equal(b->journal, 0);
    assert_string_equal(b->argv[0], "EVAL");
    assert_string_equal(b->argv[3], "ap:flush:a\tb:s");
    ap_batch_free(b);
    ap_delta_free(e);
    ap_delta_free(d);
}

static void test_delta_put_back(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    ap_delta_incr(d, "k", "in", 12);
    ap_delta_max(d, "k", "last", 100);
    ap_delta_sadd(d, "s", "a");
    struct ap_batch *b = take_all(d);
    assert_int_equal(ap_delta_count(d), 0);

    /* Meanwhile, new deltas arrive. */
    ap_delta_incr(d, "k", "in", 3);
    ap_delta_max(d, "k", "last", 150);
    ap_delta_sadd(d, "s", "a");
    ap_delta_incr(d, "k", "out", 1);

    assert_int_equal(ap_delta_put_back(d, b), 0);
    assert_int_equal(ap_delta_count(d), 4);
    struct ap_batch *b2 = take_all(d);
    const struct quad want[] = {
        {"i", "k", "in", "15"}, {"m", "k", "last", "150"}, {"s", "s", "a", "0"}, {"i", "k", "out", "1"}};
    assert_batch_exactly(b2, want, 4);

    /* Put back into an empty accumulator restores the batch as it was. */
    assert_int_equal(ap_delta_put_back(d, b), 0);
    struct ap_batch *b3 = take_all(d);
    const struct quad want3[] = {{"i", "k", "in", "12"}, {"m", "k", "last", "100"}, {"s", "s", "a", "0"}};
    assert_batch_exactly(b3, want3, 3);

    ap_batch_free(b);
    ap_batch_free(b2);
    ap_batch_free(b3);
    ap_delta_free(d);
}

static void test_delta_free_null(void **state)
{
    (void)state;
    ap_delta_free(NULL);
    ap_batch_free(NULL);
    /* Freeing an accumulator with pending entries frees them. */
    struct ap_delta *d = ap_delta_new();
    ap_delta_incr(d, "k", "f", 1);
    ap_delta_sadd(d, "s", "m");
    ap_delta_free(d);
}

/* ---- usage journal lines ---- */

#define ID "0123456789abcdef"
#define DAY "2024-03-01"
#define HOUR "2024-03-01 00:00"
/* 2024-02-29T16:30:00Z: in +08:00 that is 2024-03-01 00:30, so the day and hour depend on the offset. */
#define WHEN_MS 1709224200000LL
#define P "t:"

static int store_setup(void **state)
{
    (void)state;
    ap_store_set_prefix(P);
    return 0;
}

static int store_teardown(void **state)
{
    (void)state;
    ap_store_set_prefix("ap:");
    return 0;
}

/* Line fields by position: 0 id, 1 outcome, 2 hour, 3 model, 4 count, 5 input, 6 output, 7 cache_creation,
 * 8 cache_read, 9 cost, 10 when_ms. */
static struct ap_usage_rec rec(const char *model, int ok, int64_t in, int64_t out, int64_t cc, int64_t cr)
{
    struct ap_usage_rec r = {0};
    r.key_id = ID;
    r.model = model;
    r.usage.input = in;
    r.usage.output = out;
    r.usage.cache_creation = cc;
    r.usage.cache_read = cr;
    r.usage.seen = 1;
    r.when_ms = WHEN_MS;
    r.tz_offset = 8 * 3600;
    r.ok = ok;
    return r;
}

static void test_line_ok(void **state)
{
    (void)state;
    char out[AP_STORE_LINE_MAX];
    struct ap_usage_rec r = rec("claude-x", AP_REC_OK, 100, 50, 10, 20);
    r.cost_nano = 4500;
    int n = ap_store_usage_line(out, sizeof(out), &r);
    const char *want = ID "\t1\t" HOUR "\tclaude-x\t1\t100\t50\t10\t20\t4500\t1709224200000";
    assert_string_equal(out, want);
    assert_int_equal(n, (int)strlen(want));
}

static void test_line_outcomes_and_count(void **state)
{
    (void)state;
    char out[AP_STORE_LINE_MAX];
    struct ap_usage_rec r = rec("m", AP_REC_ERROR, 0, 0, 0, 0);
    ap_store_usage_line(out, sizeof(out), &r);
    assert_string_equal(out, ID "\t0\t" HOUR "\tm\t1\t0\t0\t0\t0\t0\t1709224200000");
    r = rec("m", AP_REC_REFUSED, 0, 0, 0, 0);
    r.count = 7; /* merged requests keep their number; 0 means one */
    ap_store_usage_line(out, sizeof(out), &r);
    assert_string_equal(out, ID "\t2\t" HOUR "\tm\t7\t0\t0\t0\t0\t0\t1709224200000");
}

static void test_line_unknown_model_and_utc(void **state)
{
    (void)state;
    char out[AP_STORE_LINE_MAX];
    struct ap_usage_rec r = rec(NULL, AP_REC_OK, 1, 0, 0, 0);
    r.tz_offset = 0; /* the hour follows USAGE_TZ: 16:30 UTC is 00:30 the next day at +08:00 */
    ap_store_usage_line(out, sizeof(out), &r);
    assert_string_equal(out, ID "\t1\t2024-02-29 16:00\tunknown\t1\t1\t0\t0\t0\t0\t1709224200000");
}

static void test_line_model_sanitized(void **state)
{
    (void)state;
    char out[AP_STORE_LINE_MAX];
    struct ap_usage_rec r = rec("evil\tmodel\n\x01\x7f", AP_REC_OK, 1, 1, 0, 0);
    ap_store_usage_line(out, sizeof(out), &r);
    /* Tabs and newlines would split the line: the model keeps its place as field 3. */
    assert_string_equal(out, ID "\t1\t" HOUR "\tevil_model___\t1\t1\t1\t0\t0\t0\t1709224200000");
    for (const char *c = out; *c; c++)
        assert_true(*c == '\t' || ((unsigned char)*c >= 0x20 && *c != 0x7f));
}

static void test_line_longest_fits(void **state)
{
    (void)state;
    char model[400], out[AP_STORE_LINE_MAX];
    memset(model, 'm', sizeof(model) - 1);
    model[sizeof(model) - 1] = '\0';
    struct ap_usage_rec r = rec(model, AP_REC_REFUSED, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN);
    r.count = INT64_MAX;
    r.cost_nano = INT64_MIN;
    r.when_ms = INT64_MAX / 1000 / 1000; /* a time gmtime can still place */
    int n = ap_store_usage_line(out, sizeof(out), &r);
    assert_true(n > 0 && n < AP_STORE_LINE_MAX);
    /* A buffer too small is refused, not cut. */
    assert_int_equal(ap_store_usage_line(out, (size_t)n, &r), -1);
}

static void test_delta_settle(void **state)
{
    (void)state;
    struct ap_delta *d = ap_delta_new();
    assert_int_equal(ap_delta_settle(d, "t:pl:k1:", "a.1", 120), 0);
    assert_int_equal(ap_delta_settle(d, "t:pl:k1:", "a.2", 0), 0);
    assert_int_equal(ap_delta_settle(d, "t:pl:k1:", "a.1", -1), 0); /* the last word counts */
    assert_int_equal(ap_delta_count(d), 2);
    struct ap_batch *b = take_all(d);
    const struct quad want[] = {{"p", "t:pl:k1:", "a.1", "-1"}, {"p", "t:pl:k1:", "a.2", "0"}};
    assert_batch_exactly(b, want, 2);
    /* A batch put back keeps its settlements. */
    assert_int_equal(ap_delta_put_back(d, b), 0);
    assert_int_equal(ap_delta_count(d), 2);
    ap_batch_free(b);
    ap_delta_free(d);
}

/* ---- model names ---- */

struct model_case {
    const char *in;
    size_t n;
    const char *want;
};

static void run_model(void **state)
{
    const struct model_case *c = *state;
    char out[AP_MODEL_MAX];
    memset(out, 'X', sizeof(out));
    ap_store_model_name(c->in, out, c->n);
    assert_string_equal(out, c->want);
}

#define MODEL(name, in, n, want) {"model name: " name, run_model, NULL, NULL, &(struct model_case){in, n, want}}

static void test_model_name_long(void **state)
{
    (void)state;
    char in[300], out[AP_MODEL_MAX];
    memset(in, 'a', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    ap_store_model_name(in, out, sizeof(out));
    assert_int_equal(strlen(out), AP_MODEL_MAX - 1);
}

/* ---- key references ---- */

struct ref_case {
    const char *in;
    const char *want_id;
};

static void run_ref(void **state)
{
    const struct ref_case *c = *state;
    char id[17], hash[65], want_hash[65];
    memset(id, 'X', sizeof(id));
    ap_store_key_ref(c->in, id, hash);
    assert_string_equal(id, c->want_id);
    ap_sha256_hex(c->in, strlen(c->in), want_hash);
    assert_string_equal(hash, want_hash);
}

#define REF(name, in, id) {"key ref: " name, run_ref, NULL, NULL, &(struct ref_case){in, id}}

/* ---- new keys and key names ---- */

static void test_new_key(void **state)
{
    (void)state;
    struct ap_new_key k;
    int64_t before = ap_now_ms();
    assert_int_equal(ap_store_new_key(&k, "alice", 8 * 3600), 0);
    int64_t after = ap_now_ms();

    assert_int_equal(strlen(k.secret), 51);
    assert_memory_equal(k.secret, "sk-", 3);
    assert_int_equal(strlen(k.id), 16);
    char h[65], m[32];
    ap_sha256_hex(k.secret, strlen(k.secret), h);
    assert_string_equal(k.hash, h);
    ap_key_mask(k.secret, m, sizeof(m));
    assert_string_equal(k.masked, m);
    assert_string_equal(k.name, "alice");
    long long ms = strtoll(k.created_ms, NULL, 10);
    assert_true(ms >= before && ms <= after);
    assert_int_equal(strlen(k.created), 25);
    assert_string_equal(k.created + 19, "+08:00");
    time_t t;
    assert_int_equal(ap_time_parse_iso(k.created, &t), 0);
    assert_int_equal((long long)t, ms / 1000);

    const char *args[6];
    ap_store_new_key_args(&k, args);
    assert_ptr_equal(args[0], k.hash);
    assert_ptr_equal(args[1], k.id);
    assert_ptr_equal(args[2], k.name);
    assert_ptr_equal(args[3], k.created);
    assert_ptr_equal(args[4], k.masked);
    assert_ptr_equal(args[5], k.created_ms);

    struct ap_new_key k2;
    assert_int_equal(ap_store_new_key(&k2, NULL, 0), 0);
    assert_string_equal(k2.name, "unnamed");
    assert_string_not_equal(k2.secret, k.secret);
    assert_string_not_equal(k2.id, k.id);
    assert_string_equal(k2.created + 19, "+00:00");
    assert_int_equal(ap_store_new_key(&k2, "", 0), 0);
    assert_string_equal(k2.name, "unnamed");
}

static void test_store_key_names(void **state)
{
    (void)state;
    char k[AP_STORE_KEY_MAX];
    assert_string_equal(ap_store_prefix(), "ap:");
    assert_string_equal(ap_store_key(k, sizeof(k), "u:k:%s", "abc"), "ap:u:k:abc");
    ap_store_set_prefix("myapp:");
    assert_string_equal(ap_store_prefix(), "myapp:");
    assert_ptr_equal(ap_store_key(k, sizeof(k), "u:d:%s", "2024-02-29"), k);
    assert_string_equal(k, "myapp:u:d:2024-02-29");
    char small[8];
    ap_store_key(small, sizeof(small), "keys");
    assert_string_equal(small, "myapp:k");
    ap_store_set_prefix("ap:");
}

/* One group, so that TAP output has a single plan. */
static const struct CMUnitTest tests[] = {
    {"delta: incr merges per key and field", test_delta_incr_merges, NULL, NULL, NULL},
    {"delta: incr by 0 adds nothing", test_delta_incr_zero_is_nothing, NULL, NULL, NULL},
    {"delta: max keeps the max", test_delta_max_keeps_max, NULL, NULL, NULL},
    {"delta: sadd dedups", test_delta_sadd_dedups, NULL, NULL, NULL},
    {"delta: incr, max and sadd on one field are distinct", test_delta_ops_are_distinct, NULL, NULL, NULL},
    {"delta: head arguments copied, then quads", test_delta_head_arguments, NULL, NULL, NULL},
    {"delta: take with max_ops splits and leaves the rest", test_delta_take_splits, NULL, NULL, NULL},
    {"delta: take_flush head, NULL when empty", test_delta_take_flush, NULL, NULL, NULL},
    {"delta: put_back merges a batch back", test_delta_put_back, NULL, NULL, NULL},
    {"delta: free NULL and free with entries", test_delta_free_null, NULL, NULL, NULL},
    {"line: one ok request, every field", test_line_ok, store_setup, store_teardown, NULL},
    {"line: errors, refusals and merged counts", test_line_outcomes_and_count, store_setup, store_teardown, NULL},
    {"line: no model -> unknown; hour in USAGE_TZ", test_line_unknown_model_and_utc, store_setup, store_teardown,
     NULL},
    {"line: tab, newline and control bytes in the model", test_line_model_sanitized, store_setup, store_teardown,
     NULL},
    {"line: the longest line fits AP_STORE_LINE_MAX", test_line_longest_fits, store_setup, store_teardown, NULL},
    {"delta: policy settlements, last word wins", test_delta_settle, NULL, NULL, NULL},
    MODEL("plain", "claude-sonnet-4-5", AP_MODEL_MAX, "claude-sonnet-4-5"),
    MODEL("NULL -> unknown", NULL, AP_MODEL_MAX, "unknown"),
    MODEL("empty -> unknown", "", AP_MODEL_MAX, "unknown"),
    MODEL("newline, tab, CR", "a\nb\tc\rd", AP_MODEL_MAX, "a_b_c_d"),
    MODEL("unit separator 0x1f and DEL", "a\x1f" "b\x7f", AP_MODEL_MAX, "a_b_"),
    MODEL("UTF-8 kept", "mod\xc3\xa8le", AP_MODEL_MAX, "mod\xc3\xa8le"),
    MODEL("colons and slashes kept", "org/model:v1", AP_MODEL_MAX, "org/model:v1"),
    MODEL("bounded by n", "abcdefgh", 5, "abcd"),
    {"model name: 300 chars bounded to AP_MODEL_MAX-1", test_model_name_long, NULL, NULL, NULL},
    REF("16 lower hex is an id", "0123456789abcdef", "0123456789abcdef"),
    REF("a full key is not an id", "sk-0123456789abcdef0123456789abcdef0123456789abcdef", ""),
    REF("upper-case hex is not an id", "0123456789ABCDEF", ""),
    REF("15 hex digits is not an id", "0123456789abcde", ""),
    REF("17 hex digits is not an id", "0123456789abcdef0", ""),
    REF("16 chars with a non-hex is not an id", "0123456789abcdeg", ""),
    REF("empty", "", ""),
    {"new key: fields, args, defaults", test_new_key, NULL, NULL, NULL},
    {"key names: prefix and formatting", test_store_key_names, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
