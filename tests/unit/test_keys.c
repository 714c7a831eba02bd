/*
 * ap_keys (masking, generation, SHA-256, secret comparison) and ap_redis's
 * pure helper ap_redis_url_parse. One cmocka test per table row.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_keys.h"
#include "ap_redis.h"

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* ---- masking ---- */

struct mask_case {
    const char *key;
    const char *want;
};

static void run_mask(void **state)
{
    const struct mask_case *c = *state;
    char out[AP_MASK_LEN];
    memset(out, 'X', sizeof(out));
    ap_key_mask(c->key, out, sizeof(out));
    assert_string_equal(out, c->want);
}

#define MASK(name, key, want) {"mask: " name, run_mask, NULL, NULL, &(struct mask_case){key, want}}

static void test_mask_small_buffer(void **state)
{
    (void)state;
    char out[8];
    ap_key_mask("sk-abcdefghijklmnopqrstuvwxyz", out, sizeof(out));
    assert_int_equal(strlen(out), 7); /* truncated, still terminated */
    assert_memory_equal(out, "sk-abcd", 7);
}

/* ---- generation ---- */

static void test_key_generate_format(void **state)
{
    (void)state;
    char k[64];
    assert_int_equal(ap_key_generate(k, sizeof(k)), 0);
    assert_int_equal(strlen(k), 51);
    assert_memory_equal(k, "sk-", 3);
    assert_true(is_lower_hex(k + 3, 48));

    char exact[52];
    assert_int_equal(ap_key_generate(exact, sizeof(exact)), 0);
    assert_int_equal(strlen(exact), 51);

    char small[51];
    assert_int_equal(ap_key_generate(small, sizeof(small)), -1);
}

static void test_key_generate_unique(void **state)
{
    (void)state;
    enum { N = 200 };
    char keys[N][52];
    for (int i = 0; i < N; i++) {
        assert_int_equal(ap_key_generate(keys[i], sizeof(keys[i])), 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(keys[i], keys[j]);
    }
    /* Not a constant pattern: the 48 digits use more than a few distinct values. */
    int seen[16] = {0}, distinct = 0;
    for (int i = 3; i < 51; i++)
        seen[keys[0][i] <= '9' ? keys[0][i] - '0' : keys[0][i] - 'a' + 10] = 1;
    for (int i = 0; i < 16; i++)
        distinct += seen[i];
    assert_true(distinct >= 4);
}

static void test_key_id_and_random_hex(void **state)
{
    (void)state;
    char id1[AP_KEY_ID_LEN], id2[AP_KEY_ID_LEN];
    assert_int_equal(ap_key_id_generate(id1), 0);
    assert_int_equal(ap_key_id_generate(id2), 0);
    assert_int_equal(strlen(id1), 16);
    assert_true(is_lower_hex(id1, 16));
    assert_string_not_equal(id1, id2);

    char hex[129];
    assert_int_equal(ap_random_hex(hex, 64), 0);
    assert_int_equal(strlen(hex), 128);
    assert_true(is_lower_hex(hex, 128));
    char big[200];
    assert_int_equal(ap_random_hex(big, 65), -1);
}

/* Bytes in order, most significant nibble first, lowercase; nothing written past the NUL. */
static void test_hex(void **state)
{
    (void)state;
    const unsigned char b[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff};
    char out[20];
    memset(out, 'x', sizeof(out));
    ap_hex(b, sizeof(b), out);
    assert_string_equal(out, "00017f80abcdefff");
    assert_int_equal(out[17], 'x');
    ap_hex(b, 0, out);
    assert_string_equal(out, "");
}

/* ---- SHA-256 ---- */

struct sha_case {
    const char *in;
    size_t len;
    const char *want;
};

static void run_sha(void **state)
{
    const struct sha_case *c = *state;
    char out[AP_SHA256_HEX];
    ap_sha256_hex(c->in, c->len, out);
    assert_string_equal(out, c->want);

    unsigned char raw[32];
    ap_sha256(c->in, c->len, raw);
    char again[65];
    for (int i = 0; i < 32; i++) {
        static const char hx[] = "0123456789abcdef";
        again[2 * i] = hx[raw[i] >> 4];
        again[2 * i + 1] = hx[raw[i] & 15];
    }
    again[64] = '\0';
    assert_string_equal(again, c->want);
}

#define SHA(name, in, len, want) {"sha256: " name, run_sha, NULL, NULL, &(struct sha_case){in, len, want}}

/* ---- secret comparison ---- */

struct eq_case {
    const char *a;
    const char *b;
    int want;
};

static void run_eq(void **state)
{
    const struct eq_case *c = *state;
    assert_int_equal(ap_secret_equal(c->a, c->b), c->want);
    assert_int_equal(ap_secret_equal(c->b, c->a), c->want);
}

#define EQ(name, a, b, want) {"secret_equal: " name, run_eq, NULL, NULL, &(struct eq_case){a, b, want}}

/* ---- REDIS_URL ---- */

struct url_case {
    const char *url;
    int rc;
    const char *host;
    int port;
    const char *user;
    const char *password;
    int db;
};

static void run_url(void **state)
{
    const struct url_case *c = *state;
    struct ap_redis_url u;
    memset(&u, 0x5a, sizeof(u));
    int rc = ap_redis_url_parse(c->url, &u);
    if (rc != c->rc)
        fail_msg("ap_redis_url_parse(\"%s\") returned %d, want %d", c->url, rc, c->rc);
    if (rc != 0)
        return;
    assert_string_equal(u.host, c->host);
    assert_int_equal(u.port, c->port);
    assert_string_equal(u.user, c->user);
    assert_string_equal(u.password, c->password);
    assert_int_equal(u.db, c->db);
}

#define URL_OK(url, host, port, user, pw, db) \
    {"redis url ok: " url, run_url, NULL, NULL, &(struct url_case){url, 0, host, port, user, pw, db}}
#define URL_BAD(name, url) {"redis url bad: " name, run_url, NULL, NULL, &(struct url_case){url, -1, NULL, 0, NULL, NULL, 0}}

#define K64 "sk-0123456789abcdef0123456789abcdef0123456789abcdef"

/* One group, so that TAP output has a single plan. */
static void test_mask_path(void **state)
{
    (void)state;
    static const struct { const char *path, *want; } rows[] = {
        {"/v1/messages", "/v1/messages"},
        {"/admin/keys/sk-abcdefghijklmnopqrstuvwxyz0123/usage", "/admin/keys/sk-abcde...0123/usage"},
        {"/admin/keys/sk-short/disable", "/admin/keys/***/disable"},
        {"/v1/models?key=sk-secret", "/v1/models"},
        {"/x/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "/x/aaaaaaaa...aaaa"},
        {"/a\"b", "/a\"b"}, /* kept as is here; the log escapes it */
    };
    char out[128];
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        ap_mask_path(rows[i].path, out, sizeof(out));
        assert_string_equal(out, rows[i].want);
    }
    ap_mask_path("/v1/messages", out, 4);
    assert_string_equal(out, "/v1");
}

static void test_url_redact(void **state)
{
    (void)state;
    static const struct { const char *url, *want; } rows[] = {
        {"http://localhost:8080", "http://localhost:8080"},
        {"https://user:secret@api.example.com/v1?key=k", "https://api.example.com/v1"},
        {"http://:tok@h:1/p", "http://h:1/p"},
        {"http://h/p@q", "http://h/p@q"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        ap_url_redact(rows[i].url, out, sizeof(out));
        assert_string_equal(out, rows[i].want);
    }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_mask_path),
    cmocka_unit_test(test_url_redact),
    MASK("generated-length key: 8 chars ... last 4", K64, "sk-01234...cdef"),
    MASK("exactly 13 chars is masked", "abcdefghijklm", "abcdefgh...jklm"),
    MASK("exactly 12 chars -> ***", "abcdefghijkl", "***"),
    MASK("short key -> ***", "sk-1", "***"),
    MASK("empty key -> ***", "", "***"),
    {"mask: small output buffer truncates safely", test_mask_small_buffer, NULL, NULL, NULL},
    {"generate: sk- + 48 lower hex, buffer checks", test_key_generate_format, NULL, NULL, NULL},
    {"generate: 200 keys all distinct", test_key_generate_unique, NULL, NULL, NULL},
    {"key id: 16 hex, distinct; random_hex bounds", test_key_id_and_random_hex, NULL, NULL, NULL},
    {"hex: bytes in order, lowercase, NUL-terminated", test_hex, NULL, NULL, NULL},
    SHA("abc", "abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    SHA("empty", "", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    SHA("448-bit message", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    SHA("embedded NUL counts", "a\0b", 3, "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138"),
    EQ("same", "admin-secret", "admin-secret", 1),
    EQ("different", "admin-secret", "admin-secreT", 0),
    EQ("prefix is not equal", "admin", "admin-secret", 0),
    EQ("empty vs empty", "", "", 1),
    EQ("empty vs non-empty", "", "x", 0),
    URL_OK("redis://127.0.0.1", "127.0.0.1", 6379, "", "", 0),
    URL_OK("redis://localhost:6380", "localhost", 6380, "", "", 0),
    URL_OK("redis://localhost:6380/3", "localhost", 6380, "", "", 3),
    URL_OK("redis://localhost/5", "localhost", 6379, "", "", 5),
    URL_OK("redis://localhost/", "localhost", 6379, "", "", 0),
    URL_OK("redis://127.0.0.1:6379/0", "127.0.0.1", 6379, "", "", 0),
    URL_OK("redis://:s3cret@redis.internal:6379/1", "redis.internal", 6379, "", "s3cret", 1),
    URL_OK("redis://alice:s3cret@redis.internal/2", "redis.internal", 6379, "alice", "s3cret", 2),
    URL_OK("redis://:p@ss@host", "host", 6379, "", "p@ss", 0),
    URL_OK("redis://:pa:ss@host", "host", 6379, "", "pa:ss", 0),
    URL_OK("redis://[::1]", "::1", 6379, "", "", 0),
    URL_OK("redis://[::1]:6390/4", "::1", 6390, "", "", 4),
    URL_OK("redis://:pw@[fe80::1]:7000", "fe80::1", 7000, "", "pw", 0),
    URL_OK("redis://h:65535", "h", 65535, "", "", 0),
    URL_BAD("http scheme", "http://localhost:6379"),
    URL_BAD("rediss scheme", "rediss://localhost:6379"),
    URL_BAD("no scheme", "localhost:6379"),
    URL_BAD("empty", ""),
    URL_BAD("empty host", "redis://"),
    URL_BAD("port without host", "redis://:6379"),
    URL_BAD("empty port", "redis://localhost:"),
    URL_BAD("port 0", "redis://localhost:0"),
    URL_BAD("port 65536", "redis://localhost:65536"),
    URL_BAD("port not a number", "redis://localhost:abc"),
    URL_BAD("port with junk", "redis://localhost:6379x"),
    URL_BAD("negative port", "redis://localhost:-1"),
    URL_BAD("db not a number", "redis://localhost:6379/abc"),
    URL_BAD("db with junk", "redis://localhost:6379/1x"),
    URL_BAD("negative db", "redis://localhost/-1"),
    URL_BAD("query after db", "redis://localhost/1?timeout=1"),
    URL_BAD("userinfo without colon", "redis://password@localhost"),
    URL_BAD("unterminated IPv6", "redis://[::1:6379"),
    URL_BAD("junk after IPv6", "redis://[::1]x"),
    URL_BAD("empty IPv6", "redis://[]:6379"),
};

int main(void)
{
    return cmocka_run_group_tests_name("keys", tests, NULL, NULL);
}
