/*
 * ap_jscan: validity must match a real parser's, the captured members must be
 * right, and the body must read as the upstream reads it: duplicated member
 * names refused anywhere, names compared decoded.
 */
#include "ap_jscan.h"

#include <cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

static const char *const valid_docs[] = {
    "{}", "[]", "0", "-0", "1.5e-3", "\"s\"", "true", "false", "null", " \t\r\n{ } ",
    "{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\\n\\\"\"}", "[[[[[]]]]]", "{\"model\":\"m\",\"mode\":1}",
    "-12.5E+10", "[\"\\/\\b\\f\\r\\t\"]", "{\"k\":\"caf\xc3\xa9\"}",
};

static const char *const invalid_docs[] = {
    "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "1e", "-", "+1",
    "\"unterminated", "\"bad \\x escape\"", "\"\\u12g4\"", "tru", "nul", "{} {}", "[1 2]", "\"ctl \x01\"",
    "{\"a\":1}x", "NaN", "[,]", "{\"a\":}",
    /* what cJSON refuses is refused: lone or reversed surrogates, numbers of 64+ characters */
    "\"\\ud800\"", "\"\\udc00\\ud800\"", "\"\\ud800\\u0041\"", "\"\\ud800x\"",
    "1234567890123456789012345678901234567890123456789012345678901234",
};

static void test_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        struct ap_jscan js;
        cJSON *ref = cJSON_Parse(valid_docs[i]);
        assert_non_null(ref);
        cJSON_Delete(ref);
        if (ap_jscan(valid_docs[i], strlen(valid_docs[i]), &js) != 0)
            fail_msg("rejected valid JSON: %s", valid_docs[i]);
    }
}

static void test_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(invalid_docs) / sizeof(invalid_docs[0]); i++) {
        struct ap_jscan js;
        if (ap_jscan(invalid_docs[i], strlen(invalid_docs[i]), &js) == 0)
            fail_msg("accepted invalid JSON: %s", invalid_docs[i]);
    }
}

static void test_depth_limit(void **state)
{
    (void)state;
    size_t n = 1001;
    char *deep = malloc(2 * n + 1);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    struct ap_jscan js;
    assert_int_equal(ap_jscan(deep, 2 * n, &js), -1);
    assert_int_equal(ap_jscan(deep + 1, 2 * n - 2, &js), 0);
    free(deep);
}

static void test_members(void **state)
{
    (void)state;
    const char *doc = "{\"messages\":[{\"model\":\"inner\",\"stream\":true}],\"model\":\"claude-x\","
                      "\"stream\":true,\"stream_options\":{\"x\":{\"include_usage\":false},\"include_usage\":true},"
                      "\"modal\":\"second\"}";
    struct ap_jscan js;
    assert_int_equal(ap_jscan(doc, strlen(doc), &js), 0);
    assert_int_equal(js.root, AP_J_OBJECT);
    assert_int_equal(js.model, AP_J_STRING);
    assert_int_equal(js.model_len, 8);
    assert_memory_equal(js.model_raw, "claude-x", 8);
    assert_int_equal(js.model_escaped, 0);
    assert_int_equal(js.stream, AP_J_TRUE);
    assert_int_equal(js.stream_options, AP_J_OBJECT);
    assert_int_equal(js.include_usage, AP_J_TRUE);
}

static void test_member_types(void **state)
{
    (void)state;
    struct { const char *doc; enum ap_jtype model, stream; int escaped; } cases[] = {
        {"{\"model\":1}", AP_J_NUMBER, AP_J_ABSENT, 0},
        {"{\"model\":null,\"stream\":\"yes\"}", AP_J_NULL, AP_J_STRING, 0},
        {"{\"model\":[\"a\"],\"stream\":false}", AP_J_ARRAY, AP_J_FALSE, 0},
        {"{\"model\":\"a\\u002db\"}", AP_J_STRING, AP_J_ABSENT, 1},
        {"{\"mod\\u0065l\":\"x\"}", AP_J_STRING, AP_J_ABSENT, 0},
        {"[{\"model\":\"x\"}]", AP_J_ABSENT, AP_J_ABSENT, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ap_jscan js;
        assert_int_equal(ap_jscan(cases[i].doc, strlen(cases[i].doc), &js), 0);
        assert_int_equal(js.model, cases[i].model);
        assert_int_equal(js.stream, cases[i].stream);
        assert_int_equal(js.model_escaped, cases[i].escaped);
    }
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    /* The scan must stop at len: the bytes after it are not part of the document. */
    const char buf[] = "{\"model\":\"m\"}GARBAGE";
    struct ap_jscan js;
    assert_int_equal(ap_jscan(buf, 13, &js), 0);
    assert_int_equal(ap_jscan(buf, 12, &js), -1);
}

/* Scans a document written with ' for " (no test string holds an apostrophe). */
static int scan_sq(const char *sq, struct ap_jscan *js)
{
    char *d = strdup(sq);
    for (char *p = d; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    int rc = ap_jscan(d, strlen(d), js);
    free(d);
    return rc;
}

/*
 * Item 1 of the front-door issue: {"model":"cheap","model":"expensive"} routed
 * one model while the upstream (last one wins) served the other. Any object,
 * at any depth, naming a member twice is refused; names compare decoded.
 */
static void test_duplicates_refused(void **state)
{
    (void)state;
    static const char *const dups[] = {
        "{'model':'cheap','model':'expensive'}",
        "{'model':'cheap','mod\\u0065l':'expensive'}",
        "{'mod\\u0065l':'a','model':'b'}",
        "{'model':'m','stream':false,'stre\\u0061m':true}",
        "{'model':'m','stream':true,'stream_options':{'include_usage':true,'include_usage':false}}",
        "{'model':'m','messages':[{'role':'user','role':'assistant','content':'x'}]}",
        "{'a':{'b':{'c':{'d':1,'d':2}}}}",
        "[1,{'x':1,'x':1}]",
        "{'a\\/b':1,'a/b':2}",
        "{'\\ud83d\\ude00':1,'\xf0\x9f\x98\x80':2}",
        "{'\\u00e9':1,'\xc3\xa9':2}",
        "{'\\u00E9':1,'\\u00e9':2}",
        "{'a\\nb':1,'a\\u000ab':2}",
        "{'':1,'':2}",
        /* past the pair-by-pair size: the sorted check */
        "{'k0':0,'k1':1,'k2':2,'k3':3,'k4':4,'k5':5,'k6':6,'k7':7,'k8':8,'k9':9,'k0':10}",
        "{'k0':0,'k1':1,'k2':2,'k3':3,'k4':4,'k5':5,'k6':6,'k7':7,'k8':8,'k9':9,'k\\u0039':10}",
    };
    for (size_t i = 0; i < sizeof(dups) / sizeof(dups[0]); i++) {
        struct ap_jscan js;
        int rc = scan_sq(dups[i], &js);
        if (rc != AP_JSCAN_DUPLICATE)
            fail_msg("%s: %d, want AP_JSCAN_DUPLICATE", dups[i], rc);
        assert_non_null(js.dup_name);
    }
    struct ap_jscan js;
    assert_int_equal(scan_sq("{'model':'cheap','model':'expensive'}", &js), AP_JSCAN_DUPLICATE);
    assert_int_equal(js.dup_len, 5);
    assert_memory_equal(js.dup_name, "model", 5);
    assert_string_equal(ap_jscan_strerror(AP_JSCAN_DUPLICATE), "duplicate member name");
}

static void test_distinct_names_accepted(void **state)
{
    (void)state;
    static const char *const ok[] = {
        /* the same name in different objects, before and after a nested one */
        "{'a':{'a':1,'b':{'a':2}},'b':[{'a':1},{'a':2}],'c':{'b':1}}",
        "{'model':'m','messages':[{'role':'user','content':[{'type':'text','text':'x'}]},"
        "{'role':'assistant','content':'y'}],'stream':true}",
        "{'Model':1,'model':2,'MODEL':3}",
        "{'a':1,'a ':2,' a':3,'a\\u0001':4}",
        "{'k0':0,'k1':1,'k2':2,'k3':3,'k4':4,'k5':5,'k6':6,'k7':7,'k8':8,'k9':9,'k10':10,'k11':11}",
        "{'\\u00e9':1,'e\\u0301':2}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct ap_jscan js;
        int rc = scan_sq(ok[i], &js);
        if (rc != AP_JSCAN_OK)
            fail_msg("%s: %d, want AP_JSCAN_OK", ok[i], rc);
    }
}

/* Escaped names with many objects around them: decoded bytes live in an arena that grows. */
static void test_escaped_names_many(void **state)
{
    (void)state;
    size_t n = 3000, cap = n * 80 + 64, len = 0;
    char *doc = malloc(cap);
    len += (size_t)sprintf(doc + len, "{");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(doc + len, "%s\"n\\u0061me%zu\":{\"x\\u0079\":%zu,\"y\":1}", i ? "," : "", i, i);
    len += (size_t)sprintf(doc + len, "}");
    struct ap_jscan js;
    assert_int_equal(ap_jscan(doc, len, &js), AP_JSCAN_OK);
    /* now repeat the first name at the end, escaped differently */
    len--;
    len += (size_t)sprintf(doc + len, ",\"\\u006eame0\":2}");
    assert_int_equal(ap_jscan(doc, len, &js), AP_JSCAN_DUPLICATE);
    assert_int_equal(js.dup_len, 10);
    assert_memory_equal(js.dup_name, "\\u006eame0", 10);
    free(doc);
}

/* Routed on what the upstream reads: decoded names, the decoded model. */
static void test_escaped_members_recognised(void **state)
{
    (void)state;
    struct ap_jscan js;
    assert_int_equal(scan_sq("{'mod\\u0065l':'claude-\\u006fpus','stre\\u0061m':true,"
                             "'stream_\\u006fptions':{'include_\\u0075sage':true},'max_t\\u006fkens':12}", &js),
                     AP_JSCAN_OK);
    assert_int_equal(js.model, AP_J_STRING);
    assert_string_equal(js.model_str, "claude-opus");
    assert_int_equal(js.model_str_len, 11);
    assert_int_equal(js.model_escaped, 1);
    assert_int_equal(js.model_nul, 0);
    assert_int_equal(js.stream, AP_J_TRUE);
    assert_int_equal(js.stream_options, AP_J_OBJECT);
    assert_int_equal(js.include_usage, AP_J_TRUE);
    assert_int_equal(js.max_tokens.type, AP_J_NUMBER);
    assert_int_equal(js.max_tokens.in_range, 1);
    assert_int_equal(js.max_tokens.value, 12);

    assert_int_equal(scan_sq("{'model':'a\\/b\\u00e9\\ud83d\\ude00\\\\\\''}", &js), AP_JSCAN_OK);
    assert_string_equal(js.model_str, "a/b\xc3\xa9\xf0\x9f\x98\x80\\\"");
    assert_int_equal(js.model_str_len, 11);
}

static void test_model_cut_and_nul(void **state)
{
    (void)state;
    struct ap_jscan js;
    char doc[700];
    int n = snprintf(doc, sizeof(doc), "{\"model\":\"");
    for (int i = 0; i < 300; i++)
        doc[n++] = 'x';
    n += snprintf(doc + n, sizeof(doc) - (size_t)n, "\"}");
    assert_int_equal(ap_jscan(doc, (size_t)n, &js), AP_JSCAN_OK);
    assert_int_equal(js.model_str_len, 300);
    assert_int_equal(strlen(js.model_str), AP_JSCAN_MODEL_MAX - 1);

    assert_int_equal(scan_sq("{'model':'cheap\\u0000expensive'}", &js), AP_JSCAN_OK);
    assert_int_equal(js.model_nul, 1);
    assert_int_equal(js.has_nul, 1);
    assert_int_equal(js.model_str_len, 15);
    assert_memory_equal(js.model_str, "cheap\0expensive", 16);
}

/* cJSON cuts names at U+0000: "model\u0000x" would print as a second "model". */
static void test_nul_in_names_and_values(void **state)
{
    (void)state;
    struct ap_jscan js;
    assert_int_equal(scan_sq("{'model':'a','model\\u0000x':'b'}", &js), AP_JSCAN_NUL_NAME);
    assert_int_equal(scan_sq("[{'a':{'\\u0000':1}}]", &js), AP_JSCAN_NUL_NAME);
    assert_string_equal(ap_jscan_strerror(AP_JSCAN_NUL_NAME), "member name holds U+0000");
    assert_int_equal(scan_sq("{'model':'m','messages':[{'content':'a\\u0000b'}]}", &js), AP_JSCAN_OK);
    assert_int_equal(js.has_nul, 1);
    assert_int_equal(js.model_nul, 0);
    assert_int_equal(scan_sq("{'model':'m','messages':[{'content':'a\\\\u0000b'}]}", &js), AP_JSCAN_OK);
    assert_int_equal(js.has_nul, 0); /* an escaped backslash, then text */
}

/* Item 14: max_tokens 1e300 was cast to long. The scan says whether it is a sane integer. */
static void test_token_limits(void **state)
{
    (void)state;
    static const struct { const char *v; enum ap_jtype type; int in_range; long value; } cases[] = {
        {"100", AP_J_NUMBER, 1, 100},
        {"1", AP_J_NUMBER, 1, 1},
        {"2147483647", AP_J_NUMBER, 1, 2147483647L},
        {"2147483648", AP_J_NUMBER, 0, 0},
        {"1e300", AP_J_NUMBER, 0, 0},
        {"-1e300", AP_J_NUMBER, 0, 0},
        {"1e3", AP_J_NUMBER, 1, 1000},
        {"5.0", AP_J_NUMBER, 1, 5},
        {"5.5", AP_J_NUMBER, 0, 0},
        {"0", AP_J_NUMBER, 0, 0},
        {"-0", AP_J_NUMBER, 0, 0},
        {"-5", AP_J_NUMBER, 0, 0},
        {"0.0000001", AP_J_NUMBER, 0, 0},
        {"99999999999999999999999999999", AP_J_NUMBER, 0, 0},
        {"\"100\"", AP_J_STRING, 0, 0},
        {"null", AP_J_NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char doc[200];
        struct ap_jscan js;
        int n = snprintf(doc, sizeof(doc), "{\"max_tokens\":%s,\"max_completion_tokens\":%s}", cases[i].v, cases[i].v);
        assert_int_equal(ap_jscan(doc, (size_t)n, &js), AP_JSCAN_OK);
        if (js.max_tokens.type != cases[i].type || js.max_tokens.in_range != cases[i].in_range ||
            js.max_tokens.value != cases[i].value)
            fail_msg("max_tokens %s: type %d in_range %d value %ld", cases[i].v, js.max_tokens.type,
                     js.max_tokens.in_range, js.max_tokens.value);
        assert_int_equal(js.max_completion_tokens.type, cases[i].type);
        assert_int_equal(js.max_completion_tokens.in_range, cases[i].in_range);
        assert_int_equal(js.max_completion_tokens.value, cases[i].value);
    }
    /* only top-level members count */
    struct ap_jscan js;
    assert_int_equal(scan_sq("{'x':{'max_tokens':5}}", &js), AP_JSCAN_OK);
    assert_int_equal(js.max_tokens.type, AP_J_ABSENT);
}

/* What the scan accepts, cJSON parses (the tree is built from the same bytes later). */
static void test_agrees_with_cjson(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{'model':'a\\u002db','stream':true}", "{'x':'\\ud83d\\ude00'}", "[1e308,-1e-308,0.5]",
        "123456789012345678901234567890123456789012345678901234567890123", "{'a':'\\u0000'}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        struct ap_jscan js;
        char *d = strdup(docs[i]);
        for (char *p = d; *p != '\0'; p++)
            if (*p == '\'')
                *p = '"';
        assert_int_equal(ap_jscan(d, strlen(d), &js), AP_JSCAN_OK);
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(d, strlen(d), &end, 0);
        if (j == NULL || end != d + strlen(d))
            fail_msg("cJSON refuses what the scan accepts: %s", d);
        cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
        if (cJSON_IsString(m))
            assert_string_equal(m->valuestring, js.model_str);
        cJSON_Delete(j);
        free(d);
    }
}

static void test_error_offset(void **state)
{
    (void)state;
    struct ap_jscan js;
    assert_int_equal(scan_sq("{'a':[1,2,x]}", &js), AP_JSCAN_INVALID);
    assert_int_equal(js.error_offset, 10);
    assert_int_equal(scan_sq("{'a':1,'b':2,'a':3}", &js), AP_JSCAN_DUPLICATE);
    assert_int_equal(js.error_offset, 14);
    assert_string_equal(ap_jscan_strerror(AP_JSCAN_INVALID), "not valid JSON");
}

/*
 * Found by tests/fuzz/fuzz_jscan.c: a duplicate followed by garbage was
 * reported as a duplicate; malformed JSON is malformed, whatever else it holds.
 */
static void test_malformed_wins_over_duplicate(void **state)
{
    (void)state;
    struct ap_jscan js;
    static const char dup_then_garbage[] = "{\"model\":\"cheap\",\"messages\":[],\"model\":\"expensive\"}\x01\0\0\0";
    assert_int_equal(ap_jscan(dup_then_garbage, sizeof(dup_then_garbage) - 1, &js), AP_JSCAN_INVALID);
    assert_null(js.dup_name);
    assert_int_equal(scan_sq("[{'a':1,'a':2},x]", &js), AP_JSCAN_INVALID);
    assert_int_equal(scan_sq("[{'\\u0000':1},x]", &js), AP_JSCAN_INVALID);
    /* the first of two faults in a valid document is the one reported */
    assert_int_equal(scan_sq("[{'\\u0000':1},{'a':1,'a':2}]", &js), AP_JSCAN_NUL_NAME);
    assert_int_equal(scan_sq("[{'a':1,'a':2},{'\\u0000':1}]", &js), AP_JSCAN_DUPLICATE);
}

/* CPU time of one scan, best of a few (ratios of these are robust to the machine's speed). */
static double scan_seconds(const char *doc, size_t len, int want)
{
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        struct timespec a, b;
        struct ap_jscan js;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
        assert_int_equal(ap_jscan(doc, len, &js), want);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
        double t = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        if (t < best)
            best = t;
    }
    return best;
}

/* One object with n members named k0..kn-1, the last one repeating k0 when dup. */
static char *wide_object(size_t n, int dup, size_t *len)
{
    char *doc = malloc(n * 24 + 64);
    size_t l = 0;
    doc[l++] = '{';
    for (size_t i = 0; i < n; i++)
        l += (size_t)sprintf(doc + l, "%s\"k%zu\":%zu", i ? "," : "", dup && i == n - 1 ? (size_t)0 : i, i);
    doc[l++] = '}';
    *len = l;
    return doc;
}

/* The duplicate check stays O(n log n) on one huge object: 10x the members costs far less than 100x. */
static void test_wide_object_scales(void **state)
{
    (void)state;
    size_t l1, l2;
    char *small = wide_object(20000, 0, &l1), *big = wide_object(200000, 0, &l2);
    double t1 = scan_seconds(small, l1, AP_JSCAN_OK), t2 = scan_seconds(big, l2, AP_JSCAN_OK);
    if (t2 > 40 * t1 + 0.002)
        fail_msg("scan of 200k members took %.4f s, 20k %.4f s: not n log n", t2, t1);
    free(big);
    big = wide_object(200000, 1, &l2);
    scan_seconds(big, l2, AP_JSCAN_DUPLICATE);
    free(small);
    free(big);
}

/* An upstream's answer: is it one (content / choices), and where is its usage. */
static void test_answer_members(void **state)
{
    (void)state;
    struct ap_jscan js;
    const char *a = "{\"id\":\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"hi\",\"usage\":1}],"
                    "\"usage\": {\"input_tokens\":3,\"output_tokens\":{\"x\":[1,2]}} ,\"stop_reason\":null}";
    assert_int_equal(ap_jscan(a, strlen(a), &js), AP_JSCAN_OK);
    assert_int_equal(js.content, AP_J_ARRAY);
    assert_int_equal(js.choices, AP_J_ABSENT);
    assert_int_equal(js.usage, AP_J_OBJECT); /* the top-level one, not the nested "usage":1 */
    assert_int_equal(js.usage_len, strlen("{\"input_tokens\":3,\"output_tokens\":{\"x\":[1,2]}}"));
    assert_memory_equal(js.usage_raw, "{\"input_tokens\":3,\"output_tokens\":{\"x\":[1,2]}}", js.usage_len);

    const char *o = "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":null}";
    assert_int_equal(ap_jscan(o, strlen(o), &js), AP_JSCAN_OK);
    assert_int_equal(js.choices, AP_J_ARRAY);
    assert_int_equal(js.content, AP_J_ABSENT); /* only message.content, nested */
    assert_int_equal(js.usage, AP_J_NULL);

    const char *e = "{\"c\\u006fntent\":\"text\",\"usage\":[]}"; /* escaped name, wrong types */
    assert_int_equal(ap_jscan(e, strlen(e), &js), AP_JSCAN_OK);
    assert_int_equal(js.content, AP_J_STRING);
    assert_int_equal(js.usage, AP_J_ARRAY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),          cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_depth_limit),    cmocka_unit_test(test_members),
        cmocka_unit_test(test_member_types),   cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_duplicates_refused), cmocka_unit_test(test_distinct_names_accepted),
        cmocka_unit_test(test_escaped_names_many), cmocka_unit_test(test_escaped_members_recognised),
        cmocka_unit_test(test_model_cut_and_nul), cmocka_unit_test(test_nul_in_names_and_values),
        cmocka_unit_test(test_token_limits),    cmocka_unit_test(test_agrees_with_cjson),
        cmocka_unit_test(test_error_offset),    cmocka_unit_test(test_wide_object_scales),
        cmocka_unit_test(test_malformed_wins_over_duplicate), cmocka_unit_test(test_answer_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
