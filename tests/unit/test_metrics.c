/*
 * ap_metrics: the Prometheus registry and its text exposition (format 0.0.4).
 *
 * Counters and gauges are checked against their complete expected text
 * (families sorted by name, # HELP and # TYPE once per family, label sets
 * sorted). Histograms are checked by rule, whatever the bucket bounds: one
 * _bucket line per bound, bounds increasing, each count equal to the number of
 * observations <= its bound (so cumulative), le="+Inf" equal to _count, and
 * _sum the sum of the observations. Then unknown families, label escaping
 * (a table) and number formatting (a table).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include "ap_metrics.h"

/* Renders m into a new string. */
static char *render(const struct ap_metrics *m)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    assert_int_equal(ap_metrics_render(m, b), 0);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    assert_int_equal(evbuffer_remove(b, s, n), (int)n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void assert_text(const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        print_error("--- want\n%s--- got\n%s---\n", want, got);
        fail_msg("exposition text differs");
    }
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ---- counters and gauges: complete text ---- */

static void test_counter(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_requests_total", AP_COUNTER, "Requests answered."), 0);
    ap_metrics_add(m, "ap_requests_total", "route=\"messages\",status=\"200\"", 1);
    ap_metrics_add(m, "ap_requests_total", "route=\"chat\",status=\"500\"", 1);
    ap_metrics_add(m, "ap_requests_total", "route=\"messages\",status=\"200\"", 2);
    ap_metrics_add(m, "ap_requests_total", "route=\"chat\",status=\"200\"", 4);
    ap_metrics_add(m, "ap_requests_total", "route=\"messages\",status=\"429\"", 0);
    char *s = render(m);
    assert_text(s, "# HELP ap_requests_total Requests answered.\n"
                   "# TYPE ap_requests_total counter\n"
                   "ap_requests_total{route=\"chat\",status=\"200\"} 4\n"
                   "ap_requests_total{route=\"chat\",status=\"500\"} 1\n"
                   "ap_requests_total{route=\"messages\",status=\"200\"} 3\n"
                   "ap_requests_total{route=\"messages\",status=\"429\"} 0\n");
    free(s);
    ap_metrics_free(m);
}

/* A handle feeds the same series as the name and labels it was taken for, and stays valid. */
static void test_series_handles(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_requests_total", AP_COUNTER, "Requests answered."), 0);
    assert_int_equal(ap_metrics_define(m, "ap_upstream_seconds", AP_HISTOGRAM, "Upstream duration."), 0);
    struct ap_metrics_series *ok = ap_metrics_series(m, "ap_requests_total", "status=\"200\"");
    assert_non_null(ok);
    assert_ptr_equal(ap_metrics_series(m, "ap_requests_total", "status=\"200\""), ok);
    ap_metrics_series_add(ok, 2);
    ap_metrics_add(m, "ap_requests_total", "status=\"200\"", 1);
    ap_metrics_add(m, "ap_requests_total", "status=\"500\"", 1); /* new series: the handle stays good */
    ap_metrics_series_add(ok, 4);
    struct ap_metrics_series *up = ap_metrics_series(m, "ap_upstream_seconds", "");
    ap_metrics_series_observe(up, 0.2);
    ap_metrics_observe(m, "ap_upstream_seconds", "", 0.3);
    assert_null(ap_metrics_series(m, "no_such_family", ""));
    ap_metrics_series_add(NULL, 1); /* ignored, as an unknown family is */
    ap_metrics_series_observe(NULL, 1);
    char *s = render(m);
    assert_int_equal(count_of(s, "ap_requests_total{status=\"200\"} 7\n"), 1);
    assert_int_equal(count_of(s, "ap_requests_total{status=\"500\"} 1\n"), 1);
    assert_int_equal(count_of(s, "ap_upstream_seconds_count 2\n"), 1);
    assert_int_equal(count_of(s, "ap_upstream_seconds_sum 0.5\n"), 1);
    free(s);
    ap_metrics_free(m);
}

static void test_gauge(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_up", AP_GAUGE, "1 while serving."), 0);
    assert_int_equal(ap_metrics_define(m, "ap_quota_fraction", AP_GAUGE, "Remaining quota fraction."), 0);
    ap_metrics_set(m, "ap_up", "", 5);
    ap_metrics_set(m, "ap_up", "", 1);
    ap_metrics_set(m, "ap_quota_fraction", "model=\"b\"", 0.25);
    ap_metrics_set(m, "ap_quota_fraction", "model=\"a\"", 0.5);
    ap_metrics_set(m, "ap_quota_fraction", "model=\"a\"", -1.5);
    ap_metrics_set(m, "ap_quota_fraction", "model=\"c\"", 0);
    char *s = render(m);
    assert_text(s, "# HELP ap_quota_fraction Remaining quota fraction.\n"
                   "# TYPE ap_quota_fraction gauge\n"
                   "ap_quota_fraction{model=\"a\"} -1.5\n"
                   "ap_quota_fraction{model=\"b\"} 0.25\n"
                   "ap_quota_fraction{model=\"c\"} 0\n"
                   "# HELP ap_up 1 while serving.\n"
                   "# TYPE ap_up gauge\n"
                   "ap_up 1\n");
    free(s);
    ap_metrics_free(m);
}

/* Families whose names prefix one another must not interleave, whatever the order of use. */
static void test_families_sorted(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_b", AP_GAUGE, "B."), 0);
    assert_int_equal(ap_metrics_define(m, "ap_a_total", AP_COUNTER, "A total."), 0);
    assert_int_equal(ap_metrics_define(m, "ap_a", AP_GAUGE, "A."), 0);
    assert_int_equal(ap_metrics_define(m, "ap_never_used", AP_COUNTER, "Not used."), 0);
    ap_metrics_set(m, "ap_b", "", 2);
    ap_metrics_add(m, "ap_a_total", "z=\"1\"", 1);
    ap_metrics_set(m, "ap_a", "z=\"2\"", 3);
    ap_metrics_add(m, "ap_a_total", "a=\"1\"", 1);
    ap_metrics_set(m, "ap_a", "", 4);
    ap_metrics_set(m, "ap_a", "a=\"1\"", 5);
    char *s = render(m);
    assert_text(s, "# HELP ap_a A.\n"
                   "# TYPE ap_a gauge\n"
                   "ap_a 4\n"
                   "ap_a{a=\"1\"} 5\n"
                   "ap_a{z=\"2\"} 3\n"
                   "# HELP ap_a_total A total.\n"
                   "# TYPE ap_a_total counter\n"
                   "ap_a_total{a=\"1\"} 1\n"
                   "ap_a_total{z=\"1\"} 1\n"
                   "# HELP ap_b B.\n"
                   "# TYPE ap_b gauge\n"
                   "ap_b 2\n");
    free(s);
    ap_metrics_free(m);
}

static void test_empty_and_unknown(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    char *s = render(m);
    assert_string_equal(s, "");
    free(s);

    /* Nothing defined: every use is ignored. */
    ap_metrics_add(m, "ap_x_total", "", 1);
    ap_metrics_set(m, "ap_x", "a=\"b\"", 1);
    ap_metrics_observe(m, "ap_x_seconds", "", 0.1);
    s = render(m);
    assert_string_equal(s, "");
    free(s);

    /* One family defined: only it shows. */
    assert_int_equal(ap_metrics_define(m, "ap_known_total", AP_COUNTER, "Known."), 0);
    ap_metrics_add(m, "ap_unknown_total", "", 7);
    ap_metrics_add(m, "ap_known_tota", "", 7);
    ap_metrics_add(m, "ap_known_total_", "", 7);
    ap_metrics_add(m, "ap_known_total", "", 2);
    ap_metrics_set(m, "AP_KNOWN_TOTAL", "", 9);
    s = render(m);
    assert_text(s, "# HELP ap_known_total Known.\n"
                   "# TYPE ap_known_total counter\n"
                   "ap_known_total 2\n");
    free(s);
    ap_metrics_free(m);
    ap_metrics_free(NULL);
}

/* ---- histograms, by rule ---- */

struct series {
    const char *labels;          /* "" or `k="v"` */
    const double *obs;
    size_t nobs;
};

/* Checks one histogram series in text s. */
static void check_histogram(const char *s, const char *name, const struct series *se)
{
    char prefix[256];
    const char *sep = se->labels[0] ? "," : "";
    snprintf(prefix, sizeof(prefix), "%s_bucket{%s%sle=\"", name, se->labels, sep);

    double last_le = -INFINITY;
    unsigned long long last_count = 0;
    int nbuckets = 0, inf_seen = 0;
    unsigned long long inf_count = 0;
    for (const char *p = s; (p = strstr(p, prefix)) != NULL;) {
        if (p != s && p[-1] != '\n') {
            p += strlen(prefix);
            continue;
        }
        p += strlen(prefix);
        const char *q = strchr(p, '"');
        assert_non_null(q);
        char le_text[64];
        snprintf(le_text, sizeof(le_text), "%.*s", (int)(q - p), p);
        if (strncmp(q, "\"} ", 3) != 0)
            fail_msg("%s: bucket le=\"%s\" line malformed", name, le_text);
        char *end;
        unsigned long long c = strtoull(q + 3, &end, 10);
        if (*end != '\n')
            fail_msg("%s: bucket le=\"%s\" count not an integer", name, le_text);
        if (strcmp(le_text, "+Inf") == 0) {
            assert_false(inf_seen);
            inf_seen = 1;
            inf_count = c;
            if (c < last_count)
                fail_msg("%s: +Inf count %llu below the last bucket's %llu", name, c, last_count);
            p = end;
            continue;
        }
        assert_false(inf_seen); /* +Inf comes last */
        double le = strtod(le_text, &end);
        if (*end != '\0')
            fail_msg("%s: le \"%s\" is not a number", name, le_text);
        if (!(le > last_le))
            fail_msg("%s: le %s not increasing", name, le_text);
        unsigned long long want = 0;
        for (size_t i = 0; i < se->nobs; i++)
            if (se->obs[i] <= le)
                want++;
        if (c != want)
            fail_msg("%s{%s}: le=\"%s\" count %llu, want %llu (cumulative)", name, se->labels, le_text, c, want);
        last_le = le;
        last_count = c;
        nbuckets++;
        p = q;
    }
    if (nbuckets < 2 || !inf_seen)
        fail_msg("%s{%s}: %d buckets, +Inf %s", name, se->labels, nbuckets, inf_seen ? "seen" : "missing");
    assert_int_equal(inf_count, se->nobs);

    char line[256];
    if (se->labels[0])
        snprintf(line, sizeof(line), "\n%s_count{%s} %zu\n", name, se->labels, se->nobs);
    else
        snprintf(line, sizeof(line), "\n%s_count %zu\n", name, se->nobs);
    if (count_of(s, line) != 1)
        fail_msg("missing or repeated: [%s]", line + 1);

    if (se->labels[0])
        snprintf(line, sizeof(line), "\n%s_sum{%s} ", name, se->labels);
    else
        snprintf(line, sizeof(line), "\n%s_sum ", name);
    const char *p = strstr(s, line);
    if (p == NULL)
        fail_msg("missing: [%s]", line + 1);
    double sum = 0;
    for (size_t i = 0; i < se->nobs; i++)
        sum += se->obs[i];
    char *end;
    double got = strtod(p + strlen(line), &end);
    assert_true(*end == '\n');
    if (fabs(got - sum) > 1e-9 * (fabs(sum) + 1))
        fail_msg("%s{%s}: _sum %.17g, want %.17g", name, se->labels, got, sum);
}

static void test_histogram(void **state)
{
    (void)state;
    /* Observations on and around typical bounds, below the first, above the last. */
    static const double obs_a[] = {0.0, 0.0005, 0.001, 0.003, 0.1, 0.2, 0.2, 1, 7, 10, 1000};
    static const double obs_b[] = {0.25};
    static const double obs_none[] = {0.05, 2.5, 30};
    const struct series sa = {"route=\"messages\"", obs_a, sizeof(obs_a) / sizeof(obs_a[0])};
    const struct series sb = {"route=\"chat\"", obs_b, 1};
    const struct series sn = {"", obs_none, 3};

    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_request_seconds", AP_HISTOGRAM, "Request duration."), 0);
    assert_int_equal(ap_metrics_define(m, "ap_upstream_seconds", AP_HISTOGRAM, "Upstream duration."), 0);
    for (size_t i = 0; i < sa.nobs; i++)
        ap_metrics_observe(m, "ap_request_seconds", sa.labels, obs_a[i]);
    ap_metrics_observe(m, "ap_request_seconds", sb.labels, obs_b[0]);
    for (size_t i = 0; i < sn.nobs; i++)
        ap_metrics_observe(m, "ap_upstream_seconds", "", obs_none[i]);
    char *s = render(m);

    check_histogram(s, "ap_request_seconds", &sa);
    check_histogram(s, "ap_request_seconds", &sb);
    check_histogram(s, "ap_upstream_seconds", &sn);

    /* One HELP/TYPE per family, before its samples; label sets sorted (chat before messages). */
    assert_int_equal(count_of(s, "# HELP ap_request_seconds "), 1);
    assert_int_equal(count_of(s, "# TYPE ap_request_seconds histogram\n"), 1);
    assert_int_equal(count_of(s, "# HELP ap_upstream_seconds "), 1);
    assert_int_equal(count_of(s, "# TYPE ap_upstream_seconds histogram\n"), 1);
    assert_true(strncmp(s, "# HELP ap_request_seconds Request duration.\n# TYPE ap_request_seconds histogram\n",
                        strlen("# HELP ap_request_seconds Request duration.\n# TYPE ap_request_seconds histogram\n")) ==
                0);
    const char *chat = strstr(s, "route=\"chat\"");
    const char *msgs = strstr(s, "route=\"messages\"");
    const char *up = strstr(s, "# HELP ap_upstream_seconds");
    assert_non_null(chat);
    assert_non_null(msgs);
    assert_non_null(up);
    assert_true(chat < msgs && msgs < up);
    assert_null(strstr(up, "route="));
    /* No sample line without its family's name. */
    for (const char *line = s; *line != '\0'; line = strchr(line, '\n') + 1) {
        if (line[0] == '#')
            continue;
        assert_true(strncmp(line, "ap_request_seconds_", 19) == 0 || strncmp(line, "ap_upstream_seconds_", 20) == 0);
    }
    free(s);
    ap_metrics_free(m);
}

/* ---- label escaping ---- */

static const struct {
    const char *in;
    const char *want;
} label_cases[] = {
    {"plain", "plain"},
    {"", ""},
    {"back\\slash", "back\\\\slash"},
    {"say \"hi\"", "say \\\"hi\\\""},
    {"line1\nline2", "line1\\nline2"},
    {"\\\"\n", "\\\\\\\"\\n"},
    {"claude-opus-4-6-thinking", "claude-opus-4-6-thinking"},
    {"caf\xc3\xa9 \xe2\x98\x95", "caf\xc3\xa9 \xe2\x98\x95"}, /* UTF-8 kept */
    {"tab\there", "tab\there"},
    {"{a=\"b\"}", "{a=\\\"b\\\"}"},
};

static void test_label_escape(void **state)
{
    (void)state;
    char out[128];
    for (size_t i = 0; i < sizeof(label_cases) / sizeof(label_cases[0]); i++) {
        memset(out, 'X', sizeof(out));
        char *r = ap_metrics_label(out, sizeof(out), label_cases[i].in);
        assert_ptr_equal(r, out);
        if (strcmp(out, label_cases[i].want) != 0)
            fail_msg("row %zu: [%s] -> [%s], want [%s]", i, label_cases[i].in, out, label_cases[i].want);
    }
    memset(out, 'X', sizeof(out));
    assert_string_equal(ap_metrics_label(out, sizeof(out), NULL), "");
}

/* A short buffer: always terminated, never past n, never half an escape. */
static void test_label_truncate(void **state)
{
    (void)state;
    static const char *const inputs[] = {"abcdefghijklmnop", "\"\"\"\"\"\"\"\"", "a\\b\\c\\d\\e", "\n\n\n\n\n\n"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        for (size_t n = 1; n <= 12; n++) {
            char buf[32];
            memset(buf, 'X', sizeof(buf));
            ap_metrics_label(buf, n, inputs[i]);
            size_t len = strnlen(buf, n);
            if (len >= n)
                fail_msg("[%s] into %zu bytes: not terminated within n", inputs[i], n);
            for (size_t j = n; j < sizeof(buf); j++)
                if (buf[j] != 'X')
                    fail_msg("[%s] into %zu bytes: wrote byte %zu", inputs[i], n, j);
            /* The output is a prefix of the full escape, cut between escapes. */
            char full[64];
            ap_metrics_label(full, sizeof(full), inputs[i]);
            assert_memory_equal(buf, full, len);
            size_t bs = 0;
            for (size_t j = len; j > 0 && buf[j - 1] == '\\'; j--)
                bs++;
            if (bs % 2 != 0)
                fail_msg("[%s] into %zu bytes: ends in half an escape [%s]", inputs[i], n, buf);
        }
    }
}

/* n == 0: there is no room even for the terminator, so nothing may be written. */
static void test_label_zero_size(void **state)
{
    (void)state;
    char buf[4] = {'X', 'X', 'X', 'X'};
    ap_metrics_label(buf, 0, "abc");
    if (buf[0] != 'X')
        fail_msg("ap_metrics_label(out, 0, ...) wrote out[0] (0x%02x): one byte past the buffer it was given",
                 (unsigned char)buf[0]);
}

/* ---- number formatting ---- */

static const struct {
    enum ap_metric_type type;
    double v;
    const char *want; /* the sample's value text */
} value_cases[] = {
    {AP_COUNTER, 0, "0"},
    {AP_COUNTER, 1, "1"},
    {AP_COUNTER, 1795694105135.0, "1795694105135"},       /* a ms timestamp: integer, no exponent */
    {AP_GAUGE, 1795694105.135, "1795694105.135"},         /* with its decimals */
    {AP_GAUGE, 1795694105135.0, "1795694105135"},
    {AP_COUNTER, 123456789012345.0, "123456789012345"},
    {AP_COUNTER, 4294967296.0, "4294967296"},             /* past 32 bits */
    {AP_COUNTER, 1e12, "1000000000000"},
    {AP_GAUGE, -1795694105135.0, "-1795694105135"},
    {AP_GAUGE, 0.5, "0.5"},
    {AP_GAUGE, 0.05, "0.05"},
    {AP_GAUGE, 1.25, "1.25"},
    {AP_GAUGE, -0.125, "-0.125"},
    {AP_GAUGE, 12345.678, "12345.678"},
};

static void test_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(value_cases) / sizeof(value_cases[0]); i++) {
        struct ap_metrics *m = ap_metrics_new();
        assert_non_null(m);
        assert_int_equal(ap_metrics_define(m, "ap_v", value_cases[i].type, "V."), 0);
        if (value_cases[i].type == AP_COUNTER)
            ap_metrics_add(m, "ap_v", "", value_cases[i].v);
        else
            ap_metrics_set(m, "ap_v", "", value_cases[i].v);
        char *s = render(m);
        char want[256];
        snprintf(want, sizeof(want), "# HELP ap_v V.\n# TYPE ap_v %s\nap_v %s\n",
                 value_cases[i].type == AP_COUNTER ? "counter" : "gauge", value_cases[i].want);
        if (strcmp(s, want) != 0)
            fail_msg("row %zu (%.17g): got [%s], want [%s]", i, value_cases[i].v, s, want);
        free(s);
        ap_metrics_free(m);
    }
}

/* Summed counters stay exact integers. */
static void test_counter_accumulates(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_tokens_total", AP_COUNTER, "Tokens."), 0);
    for (int i = 0; i < 1000; i++)
        ap_metrics_add(m, "ap_tokens_total", "dir=\"in\"", 1795694105.0);
    for (int i = 0; i < 10; i++)
        ap_metrics_add(m, "ap_tokens_total", "dir=\"out\"", 0.1);
    char *s = render(m);
    assert_non_null(strstr(s, "\nap_tokens_total{dir=\"in\"} 1795694105000\n"));
    assert_non_null(strstr(s, "\nap_tokens_total{dir=\"out\"} 1\n"));
    free(s);
    ap_metrics_free(m);
}

/* Label sets from outside cannot grow the registry without bound: past the cap they share one series. */
static void test_series_are_bounded(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_requests_total", AP_COUNTER, "Requests."), 0);
    char labels[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(labels, sizeof(labels), "model=\"m%d\"", i);
        ap_metrics_add(m, "ap_requests_total", labels, 1);
    }
    char *s = render(m);
    size_t lines = 0;
    for (const char *p = s; (p = strstr(p, "\nap_requests_total{")) != NULL; p++)
        lines++;
    assert_in_range(lines, 999, 1001);
    assert_non_null(strstr(s, "\nap_requests_total{overflow=\"true\"} 2000\n"));
    assert_non_null(strstr(s, "\nap_requests_total{model=\"m0\"} 1\n"));
    assert_null(strstr(s, "model=\"m2999\""));
    free(s);
    ap_metrics_free(m);
}

/*
 * An integer counter past 1e15 (2^53, the last exactly representable run of
 * integers) is printed as an integer too, not as 9.00719925474099e+15, which is
 * both in exponent form and a different number.
 */
static void test_value_2p53(void **state)
{
    (void)state;
    struct ap_metrics *m = ap_metrics_new();
    assert_non_null(m);
    assert_int_equal(ap_metrics_define(m, "ap_bytes_total", AP_COUNTER, "Bytes."), 0);
    ap_metrics_add(m, "ap_bytes_total", "", 9007199254740992.0);
    char *s = render(m);
    const char *p = strstr(s, "\nap_bytes_total ");
    assert_non_null(p);
    p += strlen("\nap_bytes_total ");
    char *end;
    double back = strtod(p, &end);
    char got[64];
    snprintf(got, sizeof(got), "%.*s", (int)(end - p), p);
    free(s);
    ap_metrics_free(m);
    if (back != 9007199254740992.0 || strchr(got, 'e') != NULL)
        fail_msg("2^53 rendered as [%s], want 9007199254740992", got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter),
        cmocka_unit_test(test_series_handles),
        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_families_sorted),
        cmocka_unit_test(test_empty_and_unknown),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_label_escape),
        cmocka_unit_test(test_label_truncate),
        cmocka_unit_test(test_label_zero_size),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_counter_accumulates),
        cmocka_unit_test(test_series_are_bounded),
        cmocka_unit_test(test_value_2p53),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
