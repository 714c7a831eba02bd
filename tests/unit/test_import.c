/*
 * ap_import: the original keys.json turned into one EVAL of
 * ap_script_import_key per key. Checks the argv head (EVAL, script, "0",
 * prefix, sha256, id, name, enabled, created, masked, created_ms) and the
 * complete list of usage quads for a key with daily, hourly and
 * total_by_model history (legacy by_model entries included).
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
#include <unistd.h>
#include <cmocka.h>

#include "ap_delta.h"
#include "ap_import.h"
#include "ap_keys.h"
#include "ap_store.h"

static char *dq(const char *sq)
{
    char *s = strdup(sq);
    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

static int parse(const char *sq, struct ap_import *imp, char *err, size_t errlen)
{
    char *s = dq(sq);
    int rc = ap_import_parse(s, strlen(s), imp, err, errlen);
    free(s);
    return rc;
}

#define KA "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KB "sk-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define KC "sk-cccccccccccccccccccccccccccccccccccccccccccccccc"
#define KD "sk-dddddddddddddddddddddddddddddddddddddddddddddddd"
#define KE "sk-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
#define KF "sk-ffffffffffffffffffffffffffffffffffffffffffffffff"
#define KG "sk-gggggggggggggggggggggggggggggggggggggggggggggggg"

#define KEYS_JSON \
    "{'admin_key':'admin-secret-123','keys':{" \
    "'" KA "':{'name':'alice','enabled':1,'created':'2026-02-11T10:00:00+08:00'," \
    "  'usage':{'total_input':100,'total_output':50,'total_requests':3,'last_used':'2026-02-11T12:00:00+08:00'," \
    "    'daily':{'2026-02-11':{'input':100,'output':50,'requests':3,'by_model':{" \
    "        'claude-x':{'total':120,'requests':2},'old-model':{'input':20,'output':10,'requests':1}}}," \
    "      'not-a-day':{'input':999}}," \
    "    'hourly':{'2026-02-11 10:00':{'by_model':{'claude-x':{'total':120,'requests':2}}},'bad hour':{}}," \
    "    'total_by_model':{'claude-x':{'total':120,'requests':2}}}}," \
    "'" KB "':{'name':'bob','enabled':true}," \
    "'" KE "':'not an object'," \
    "'" KC "':{'name':'carol','enabled':false,'created':'2026-01-01T00:00:00.123456Z'}," \
    "'" KF "':42," \
    "'" KD "':{'name':'dave'}," \
    "'" KG "':{'enabled':0,'name':7}" \
    "}}"

#define P "imp:"

static int imp_setup(void **state)
{
    (void)state;
    ap_store_set_prefix(P);
    return 0;
}

static int imp_teardown(void **state)
{
    (void)state;
    ap_store_set_prefix("ap:");
    return 0;
}

static int count_quad(const struct ap_batch *b, const char *op, const char *key, const char *field,
                      const char **value)
{
    int n = 0;
    for (int i = b->nhead; i + 3 < b->argc; i += 4)
        if (strcmp(b->argv[i], op) == 0 && strcmp(b->argv[i + 1], key) == 0 && strcmp(b->argv[i + 2], field) == 0) {
            n++;
            *value = b->argv[i + 3];
        }
    return n;
}

/* Checks the head of one import EVAL. */
static void check_head(const struct ap_batch *b, const char *key, const char *name, const char *enabled,
                       const char *created, const char *created_ms)
{
    char hash[AP_SHA256_HEX], masked[AP_MASK_LEN];
    ap_sha256_hex(key, strlen(key), hash);
    ap_key_mask(key, masked, sizeof(masked));
    assert_int_equal(b->nhead, 12);
    assert_true(b->argc >= 12);
    assert_int_equal((size_t)b->argc, 12 + 4 * b->nops);
    assert_string_equal(b->argv[0], "EVAL");
    assert_string_equal(b->argv[1], ap_script_import_key);
    assert_string_equal(b->argv[2], "0");
    assert_string_equal(b->argv[3], P);
    assert_string_equal(b->argv[4], hash);
    assert_int_equal(strlen(b->argv[5]), 16);
    assert_string_equal(b->argv[6], name);
    assert_string_equal(b->argv[7], enabled);
    assert_string_equal(b->argv[8], created);
    assert_string_equal(b->argv[9], masked);
    assert_string_equal(b->argv[10], created_ms);
    assert_string_equal(b->argv[11], ""); /* no policy in the original's files */
    for (int i = 0; i < b->argc; i++)
        assert_int_equal(b->lens[i], strlen(b->argv[i]));
    /* The full key never appears in the command. */
    for (int i = 0; i < b->argc; i++)
        assert_null(strstr(b->argv[i], key));
}

static void test_import_heads(void **state)
{
    (void)state;
    struct ap_import imp;
    char err[200] = "";
    assert_int_equal(parse(KEYS_JSON, &imp, err, sizeof(err)), 0);
    assert_string_equal(imp.admin_key, "admin-secret-123");
    assert_int_equal(imp.ncmds, 5);
    assert_int_equal(imp.skipped, 2);

    /* File order; created_ms = created * 1000 + position among the objects. */
    /* The order score: creation ms * 1000 + position in the file. */
    check_head(imp.cmds[0], KA, "alice", "1", "2026-02-11T10:00:00+08:00", "1770775200000000");
    check_head(imp.cmds[1], KB, "bob", "1", "", "1");
    check_head(imp.cmds[2], KC, "carol", "0", "2026-01-01T00:00:00.123456Z", "1767225600000002");
    check_head(imp.cmds[3], KD, "dave", "1", "", "3");
    check_head(imp.cmds[4], KG, "unnamed", "0", "", "4");

    /* Keys without usage carry no quads. */
    for (size_t i = 1; i < imp.ncmds; i++)
        assert_int_equal(imp.cmds[i]->nops, 0);

    /* Ids are fresh and distinct. */
    for (size_t i = 0; i < imp.ncmds; i++)
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(imp.cmds[i]->argv[5], imp.cmds[j]->argv[5]);
    ap_import_free(&imp);
    assert_null(imp.cmds);
    assert_int_equal(imp.ncmds, 0);
}

struct quad {
    const char *op;
    const char *key;
    const char *field;
    const char *value;
};

static void test_import_usage_quads(void **state)
{
    (void)state;
    struct ap_import imp;
    char err[200] = "";
    assert_int_equal(parse(KEYS_JSON, &imp, err, sizeof(err)), 0);
    const struct ap_batch *b = imp.cmds[0];
    const char *id = b->argv[5];

    char kk[64], kd[80], kh[80], km[64], kdays[64], khours[64], kin[40], kout[40], kreq[40];
    char kmt[80], kmr[80], kot[80], kor[80];
    snprintf(kk, sizeof(kk), P "u:k:%s", id);
    snprintf(kd, sizeof(kd), P "u:kd:%s:2026-02-11", id);
    snprintf(kh, sizeof(kh), P "u:kh:%s:2026-02-11 10:00", id);
    snprintf(km, sizeof(km), P "u:km:%s", id);
    snprintf(kdays, sizeof(kdays), P "u:kdays:%s", id);
    snprintf(khours, sizeof(khours), P "u:khours:%s", id);
    snprintf(kin, sizeof(kin), "k:%s:input", id);
    snprintf(kout, sizeof(kout), "k:%s:output", id);
    snprintf(kreq, sizeof(kreq), "k:%s:requests", id);
    snprintf(kmt, sizeof(kmt), "k:%s:m:claude-x:total", id);
    snprintf(kmr, sizeof(kmr), "k:%s:m:claude-x:requests", id);
    snprintf(kot, sizeof(kot), "k:%s:m:old-model:total", id);
    snprintf(kor, sizeof(kor), "k:%s:m:old-model:requests", id);
    const char *D = P "u:d:2026-02-11", *H = P "u:h:2026-02-11 10:00", *ALL = P "u:all";

    const struct quad want[] = {
        /* totals */
        {"i", kk, "input", "100"}, {"i", kk, "output", "50"}, {"i", kk, "requests", "3"},
        {"i", ALL, "input", "100"}, {"i", ALL, "output", "50"}, {"i", ALL, "requests", "3"},
        {"m", kk, "last_used_ms", "1770782400000"},
        /* per key day (legacy entry: total = input + output, input/output kept) */
        {"i", kd, "input", "100"}, {"i", kd, "output", "50"}, {"i", kd, "requests", "3"},
        {"i", kd, "m:claude-x:total", "120"}, {"i", kd, "m:claude-x:requests", "2"},
        {"i", kd, "m:old-model:total", "30"}, {"i", kd, "m:old-model:requests", "1"},
        {"i", kd, "m:old-model:input", "20"}, {"i", kd, "m:old-model:output", "10"},
        /* day rollup */
        {"i", D, "input", "100"}, {"i", D, "output", "50"}, {"i", D, "requests", "3"},
        {"i", D, "m:claude-x:total", "120"}, {"i", D, "m:claude-x:requests", "2"},
        {"i", D, "m:old-model:total", "30"}, {"i", D, "m:old-model:requests", "1"},
        {"i", D, "m:old-model:input", "20"}, {"i", D, "m:old-model:output", "10"},
        {"i", D, kmt, "120"}, {"i", D, kmr, "2"}, {"i", D, kot, "30"}, {"i", D, kor, "1"},
        {"i", D, kin, "100"}, {"i", D, kout, "50"}, {"i", D, kreq, "3"},
        {"s", kdays, "2026-02-11", "0"}, {"s", P "u:days", "2026-02-11", "0"},
        /* per key hour and hour rollup */
        {"i", kh, "requests", "2"}, {"i", kh, "m:claude-x:total", "120"}, {"i", kh, "m:claude-x:requests", "2"},
        {"i", H, "requests", "2"}, {"i", H, "m:claude-x:total", "120"}, {"i", H, "m:claude-x:requests", "2"},
        {"i", H, kmt, "120"}, {"i", H, kmr, "2"},
        {"s", khours, "2026-02-11 10:00", "0"}, {"s", P "u:hours", "2026-02-11 10:00", "0"},
        /* total_by_model */
        {"i", km, "m:claude-x:total", "120"}, {"i", km, "m:claude-x:requests", "2"},
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    for (size_t i = 0; i < n; i++) {
        const char *v = NULL;
        int c = count_quad(b, want[i].op, want[i].key, want[i].field, &v);
        if (c != 1)
            fail_msg("quad %s %s %s: found %d times", want[i].op, want[i].key, want[i].field, c);
        if (strcmp(v, want[i].value) != 0)
            fail_msg("quad %s %s %s: value %s, want %s", want[i].op, want[i].key, want[i].field, v, want[i].value);
    }
    if (b->nops != n) {
        for (int i = b->nhead; i + 3 < b->argc; i += 4)
            print_error("%s | %s | %s | %s\n", b->argv[i], b->argv[i + 1], b->argv[i + 2], b->argv[i + 3]);
        fail_msg("%zu quads, want %zu", b->nops, n);
    }
    /* "not-a-day" and "bad hour" were ignored. */
    for (int i = b->nhead; i < b->argc; i++) {
        assert_null(strstr(b->argv[i], "not-a-day"));
        assert_null(strstr(b->argv[i], "bad hour"));
    }
    ap_import_free(&imp);
}

struct err_case {
    const char *json; /* ' for " */
    const char *msg;  /* the message must contain this */
};

static void run_err(void **state)
{
    const struct err_case *c = *state;
    struct ap_import imp;
    char err[200] = "";
    assert_int_equal(parse(c->json, &imp, err, sizeof(err)), -1);
    if (strstr(err, c->msg) == NULL)
        fail_msg("message \"%s\" does not contain \"%s\"", err, c->msg);
    assert_int_equal(imp.ncmds, 0);
    ap_import_free(&imp); /* harmless after a failure */
}

#define ERR(name, json, msg) {"error: " name, run_err, NULL, NULL, &(struct err_case){json, msg}}

static void test_import_empty_and_admin(void **state)
{
    (void)state;
    struct ap_import imp;
    char err[200] = "";
    assert_int_equal(parse("{'keys':{}}", &imp, err, sizeof(err)), 0);
    assert_int_equal(imp.ncmds, 0);
    assert_int_equal(imp.skipped, 0);
    assert_null(imp.admin_key);
    ap_import_free(&imp);

    assert_int_equal(parse("{'admin_key':'','keys':{'':{'name':'x'}}}", &imp, err, sizeof(err)), 0);
    assert_null(imp.admin_key); /* empty admin key ignored */
    assert_int_equal(imp.ncmds, 0);
    assert_int_equal(imp.skipped, 1); /* empty key string skipped */
    ap_import_free(&imp);

    assert_int_equal(parse("{'admin_key':42,'keys':{'" KA "':{}}}", &imp, err, sizeof(err)), 0);
    assert_null(imp.admin_key);
    assert_int_equal(imp.ncmds, 1);
    check_head(imp.cmds[0], KA, "unnamed", "1", "", "0");
    ap_import_free(&imp);
}

static void test_import_negative_and_bad_values(void **state)
{
    (void)state;
    struct ap_import imp;
    char err[200] = "";
    /* Negative and non-numeric counts are 0 (no quad); an unparsable last_used is dropped. */
    assert_int_equal(parse("{'keys':{'" KA "':{'usage':{'total_input':-5,'total_output':'7','total_requests':2,"
                           "'last_used':'yesterday'}}}}",
                           &imp, err, sizeof(err)),
                     0);
    const struct ap_batch *b = imp.cmds[0];
    const char *id = b->argv[5], *v = NULL;
    char kk[64];
    snprintf(kk, sizeof(kk), P "u:k:%s", id);
    assert_int_equal(count_quad(b, "i", kk, "input", &v), 0);
    assert_int_equal(count_quad(b, "i", kk, "output", &v), 0);
    assert_int_equal(count_quad(b, "i", kk, "requests", &v), 1);
    assert_string_equal(v, "2");
    assert_int_equal(count_quad(b, "m", kk, "last_used_ms", &v), 0);
    assert_int_equal(b->nops, 2); /* requests on u:k and u:all */
    ap_import_free(&imp);
}

static void test_import_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ap_test_import_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *s = dq(KEYS_JSON);
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
    free(s);

    struct ap_import imp;
    char err[300] = "";
    assert_int_equal(ap_import_file(path, &imp, err, sizeof(err)), 0);
    assert_int_equal(imp.ncmds, 5);
    ap_import_free(&imp);
    unlink(path);

    assert_int_equal(ap_import_file("/nonexistent/keys.json", &imp, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/keys.json"));
    ap_import_free(&imp);
}

/* One group, so that TAP output has a single plan. */
/* Our own export: hashed keys keep their hash, id, masked form and policy; costs come back too. */
static void test_import_export_entries(void **state)
{
    (void)state;
    struct ap_import imp;
    char err[200] = "";
    const char *H = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char doc[2048];
    snprintf(doc, sizeof(doc),
             "{'format':'api-proxy-export','keys':{"
             "'sha256:%s':{'id':'00000000000000aa','name':'n','enabled':true,'masked':'sk-abcde...wxyz',"
             "'policy':{'rpm':10,'daily_usd':1.5},'usage':{'total_input':1,'total_output':2,'total_requests':1,"
             "'cost_usd':0.000123,'daily':{'2026-02-11':{'input':1,'output':2,'requests':1,'cost_usd':0.000123,"
             "'by_model':{'m':{'total':3,'requests':1,'cost_usd':0.000123}}}}}},"
             "'sha256:%s':{'name':'bad','policy':{'rpm':-1}},"
             "'sha256:nothex':{'name':'plain key that looks odd'}}}", H, "1111111111111111111111111111111111111111111111111111111111111111");
    assert_int_equal(parse(doc, &imp, err, sizeof(err)), 0);
    assert_int_equal(imp.ncmds, 2);  /* the bad policy is skipped, with the reason */
    assert_int_equal(imp.skipped, 1);
    assert_non_null(strstr(imp.problem, "rpm: must be an integer"));
    const struct ap_batch *b = imp.cmds[0];
    assert_string_equal(b->argv[4], H);                 /* the hash as is */
    assert_string_equal(b->argv[5], "00000000000000aa"); /* the id kept */
    assert_string_equal(b->argv[9], "sk-abcde...wxyz");
    assert_string_equal(b->argv[11], "{\"rpm\":10,\"daily_usd\":1.5}");
    const char *v = NULL;
    assert_int_equal(count_quad(b, "i", P "u:kd:00000000000000aa:2026-02-11", "cost", &v), 1);
    assert_string_equal(v, "123000");
    assert_int_equal(count_quad(b, "i", P "u:all", "cost", &v), 1);
    assert_int_equal(count_quad(b, "i", P "u:kd:00000000000000aa:2026-02-11", "m:m:cost", &v), 1);
    /* "sha256:nothex" is not a hash: an ordinary (odd) key, hashed */
    char hash[AP_SHA256_HEX];
    ap_sha256_hex("sha256:nothex", 13, hash);
    assert_string_equal(imp.cmds[1]->argv[4], hash);
    ap_import_free(&imp);
}

static const struct CMUnitTest tests[] = {
    {"export entries: hash, id, policy, costs", test_import_export_entries, imp_setup, imp_teardown, NULL},
    {"heads: names, enabled 1/true/false/missing/0, created, masked, order", test_import_heads, imp_setup,
     imp_teardown, NULL},
    {"usage: exact quads of a key with daily, hourly, total_by_model", test_import_usage_quads, imp_setup,
     imp_teardown, NULL},
    {"empty keys, admin_key variants, empty key name", test_import_empty_and_admin, imp_setup, imp_teardown, NULL},
    {"negative, non-numeric and unparsable values", test_import_negative_and_bad_values, imp_setup, imp_teardown,
     NULL},
    {"ap_import_file: reads a file; missing file names the path", test_import_file, imp_setup, imp_teardown, NULL},
    ERR("not JSON", "this is not json", "not valid JSON"),
    ERR("truncated JSON", "{'keys':{", "not valid JSON"),
    ERR("no keys member", "{'admin_key':'x'}", "keys"),
    ERR("keys is an array", "{'keys':[]}", "keys"),
    ERR("keys is a string", "{'keys':'sk-1'}", "keys"),
    ERR("top level is an array", "[{'keys':{}}]", "keys"),
};

int main(void)
{
    return cmocka_run_group_tests_name("import", tests, NULL, NULL);
}
