/*
 * ap_lark: request signatures, decryption of {"encrypt": ...} bodies,
 * classification of callbacks, HTML escaping and command splitting.
 *
 * The vectors were computed outside this code:
 *   signatures:  hashlib.sha256(TS + NONCE + KEY + BODY).hexdigest() in Python
 *   ciphertexts: openssl enc -aes-256-cbc -K <sha256(KEY) in hex> -iv <IV in hex> < PLAIN,
 *                then base64(IV + ciphertext); -nopad for the bad-padding vectors, whose
 *                one block was chosen to decrypt to an invalid PKCS7 padding (last bytes
 *                00, 11, and 02 03 03); the wrong-key case was checked to fail in
 *                `openssl enc -d` too ("bad decrypt")
 *   Lark's own documentation example: key "test key",
 *                "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=" -> "hello world".
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

#include "ap_lark.h"

#define KEY "test-encrypt-key"

/* ---- signatures ---- */

static const char SIG_BODY[] = "{\"schema\":\"2.0\",\"header\":{\"event_id\":\"e1\"}}";
static const char SIG_HEX[] = "3218f7bf4e8df7b7fc50aac85cd0fa9afff52ddc71a25ebcb98b80503432f56c";

static void sig_vector(void **state)
{
    (void)state;
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, strlen(SIG_BODY), SIG_HEX), 1);
}

static void sig_uppercase_hex(void **state)
{
    (void)state;
    char up[65];
    for (int i = 0; i < 65; i++)
        up[i] = (char)((SIG_HEX[i] >= 'a' && SIG_HEX[i] <= 'f') ? SIG_HEX[i] - 32 : SIG_HEX[i]);
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, strlen(SIG_BODY), up), 1);
}

static void sig_empty_body(void **state)
{
    (void)state;
    assert_int_equal(ap_lark_signature_ok("1609929100", "a1b2c3", "k", "", 0,
                                          "4ba79ca790b481e3f15ac476e96e9d4e057761b18ff4e11bd11be0f937315643"),
                     1);
}

static void sig_uses_len_not_nul(void **state)
{
    (void)state;
    /* The body holds a NUL: the digest covers all `len` bytes. */
    const char body[] = {'a', 'b', '\0', 'c', 'd'};
    const char *want = "7c905bb779499ae4124e009c5e9be2e16d9649241989deea738133b4fd4cd543";
    assert_int_equal(ap_lark_signature_ok("1", "n", "key", body, sizeof(body), want), 1);
    assert_int_equal(ap_lark_signature_ok("1", "n", "key", body, 2, want), 0);
}

static void sig_mismatches(void **state)
{
    (void)state;
    size_t n = strlen(SIG_BODY);
    char bad[65];
    memcpy(bad, SIG_HEX, sizeof(bad));
    bad[63] = bad[63] == '0' ? '1' : '0';
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n, bad), 0);
    /* each input matters */
    assert_int_equal(ap_lark_signature_ok("1700000001", "nonce-42", KEY, SIG_BODY, n, SIG_HEX), 0);
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-43", KEY, SIG_BODY, n, SIG_HEX), 0);
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", "other-key", SIG_BODY, n, SIG_HEX), 0);
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n - 1, SIG_HEX), 0);
    /* wrong lengths, not hex, missing parts */
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n, ""), 0);
    char shortsig[64];
    memcpy(shortsig, SIG_HEX, 63);
    shortsig[63] = '\0';
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n, shortsig), 0);
    char longsig[66];
    memcpy(longsig, SIG_HEX, 64);
    longsig[64] = '0';
    longsig[65] = '\0';
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n, longsig), 0);
    char nothex[65];
    memset(nothex, 'z', 64);
    nothex[64] = '\0';
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n, nothex), 0);
    assert_int_equal(ap_lark_signature_ok(NULL, "nonce-42", KEY, SIG_BODY, n, SIG_HEX), 0);
    assert_int_equal(ap_lark_signature_ok("1700000000", NULL, KEY, SIG_BODY, n, SIG_HEX), 0);
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", NULL, SIG_BODY, n, SIG_HEX), 0);
    assert_int_equal(ap_lark_signature_ok("1700000000", "nonce-42", KEY, SIG_BODY, n, NULL), 0);
}

/* ---- decryption ---- */

/* IV 000102...0f, key KEY, plaintext CHALLENGE_PLAIN (openssl enc -aes-256-cbc). */
static const char CHALLENGE_PLAIN[] = "{\"challenge\":\"ch-123\",\"token\":\"vt\",\"type\":\"url_verification\"}";
static const char CHALLENGE_ENC[] =
    "AAECAwQFBgcICQoLDA0OD5OvMiWSFJvmDWXcLMiX3eAyxTcmW4GbsB0+sN8wleQELmEK4ByJ1kItZoITE+tvWoeSKj9oJMgBXdabatmDkQk=";

static void decrypt_openssl_vector(void **state)
{
    (void)state;
    size_t n = 0;
    char *p = ap_lark_decrypt(KEY, CHALLENGE_ENC, &n);
    assert_non_null(p);
    assert_int_equal(n, strlen(CHALLENGE_PLAIN));
    assert_string_equal(p, CHALLENGE_PLAIN);
    free(p);
    p = ap_lark_decrypt(KEY, CHALLENGE_ENC, NULL); /* out_len is optional */
    assert_non_null(p);
    assert_string_equal(p, CHALLENGE_PLAIN);
    free(p);
}

static void decrypt_lark_doc_vector(void **state)
{
    (void)state;
    size_t n = 0;
    char *p = ap_lark_decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=", &n);
    assert_non_null(p);
    assert_int_equal(n, 11);
    assert_string_equal(p, "hello world");
    free(p);
}

static void decrypt_wrong_key(void **state)
{
    (void)state;
    /* Checked with openssl: this key yields "bad decrypt" (invalid padding) on the vector. */
    assert_null(ap_lark_decrypt("wrong-key", CHALLENGE_ENC, NULL));
}

static void decrypt_bad_padding(void **state)
{
    (void)state;
    /* One block each, encrypted with -nopad; the plaintext's last bytes are 00, 11, and 02 03 03. */
    assert_null(ap_lark_decrypt(KEY, "paWlpaWlpaWlpaWlpaWlpXrEXwGJxFCklV+Fb+jGulI=", NULL));
    assert_null(ap_lark_decrypt(KEY, "paWlpaWlpaWlpaWlpaWlpZ4IkcJwv1brkMmeaudu9ZE=", NULL));
    assert_null(ap_lark_decrypt(KEY, "paWlpaWlpaWlpaWlpaWlpYGdSCiywmW5raDhdza1r3A=", NULL));
}

static void decrypt_short_or_malformed(void **state)
{
    (void)state;
    assert_null(ap_lark_decrypt(KEY, "", NULL));
    /* 16 bytes: an IV and no ciphertext */
    assert_null(ap_lark_decrypt(KEY, "AAECAwQFBgcICQoLDA0ODw==", NULL));
    /* 20 bytes: IV + 4, not a whole block */
    assert_null(ap_lark_decrypt(KEY, "AAECAwQFBgcICQoLDA0ODxAREhM=", NULL));
    /* 31 bytes: IV + 15 */
    assert_null(ap_lark_decrypt(KEY, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", NULL));
    /* length not a multiple of 4, characters outside base64 */
    assert_null(ap_lark_decrypt(KEY, "AAECAwQFBgcICQoLDA0OD5OvMiWSFJvmDWXcLMiX3eAy", NULL));
    assert_null(ap_lark_decrypt(KEY, "AAECAwQFBgcICQoLDA0OD5OvMiWSFJvmDWXc!!!!3eAyxTcmW4GbsB0+sN8wleQE", NULL));
    /* the good vector without its last block: the block before it ends in 'v', not a padding */
    assert_null(ap_lark_decrypt(
        KEY, "AAECAwQFBgcICQoLDA0OD5OvMiWSFJvmDWXcLMiX3eAyxTcmW4GbsB0+sN8wleQELmEK4ByJ1kItZoITE+tvWg==", NULL));
}

static void encrypt_round_trip(void **state)
{
    (void)state;
    static const unsigned char iv[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa};
    char plain[200];
    for (size_t i = 0; i < sizeof(plain); i++)
        plain[i] = (char)('A' + i % 26);
    size_t lens[] = {0, 1, 15, 16, 17, 31, 32, 33, 100, 199};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t len = lens[k];
        char *b64 = ap_lark_encrypt("round-trip key", plain, len, iv);
        assert_non_null(b64);
        /* IV + padded ciphertext, base64 */
        size_t raw = 16 + (len / 16 + 1) * 16;
        assert_int_equal(strlen(b64), 4 * ((raw + 2) / 3));
        size_t n = 12345;
        char *back = ap_lark_decrypt("round-trip key", b64, &n);
        if (len == 0) {
            /* all padding: decrypts to the empty string */
            assert_non_null(back);
            assert_int_equal(n, 0);
        } else {
            assert_non_null(back);
            assert_int_equal(n, len);
            assert_memory_equal(back, plain, len);
            assert_int_equal(back[len], '\0');
        }
        free(back);
        /* another key: almost always a padding error; never the plaintext */
        char *other = ap_lark_decrypt("another key", b64, &n);
        if (other != NULL && len > 0)
            assert_false(n == len && memcmp(other, plain, len) == 0);
        free(other);
        free(b64);
    }
}

static void encrypt_matches_openssl(void **state)
{
    (void)state;
    /* Same key, IV and plaintext as the openssl vector: the same bytes. */
    static const unsigned char iv[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    char *b64 = ap_lark_encrypt(KEY, CHALLENGE_PLAIN, strlen(CHALLENGE_PLAIN), iv);
    assert_non_null(b64);
    assert_string_equal(b64, CHALLENGE_ENC);
    free(b64);
}

/* ---- classification ---- */

static cJSON *parse(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    return j;
}

static void classify_v1_challenge(void **state)
{
    (void)state;
    cJSON *j = parse("{\"challenge\":\"c1\",\"token\":\"tok\",\"type\":\"url_verification\"}");
    struct ap_lark_event ev;
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_CHALLENGE);
    assert_string_equal(ev.challenge, "c1");
    assert_string_equal(ev.token, "tok");
    assert_string_equal(ev.event_type, "url_verification");
    assert_null(ev.event_id);
    assert_null(ev.action);
    cJSON_Delete(j);
}

static void classify_bare_challenge(void **state)
{
    (void)state;
    cJSON *j = parse("{\"challenge\":\"only\"}");
    struct ap_lark_event ev;
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_CHALLENGE);
    assert_string_equal(ev.challenge, "only");
    assert_null(ev.token);
    cJSON_Delete(j);
}

static void classify_not_challenges(void **state)
{
    (void)state;
    struct ap_lark_event ev;
    /* url_verification without a challenge */
    cJSON *j = parse("{\"type\":\"url_verification\",\"token\":\"t\"}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    cJSON_Delete(j);
    /* a challenge field in a v2 event (with a header) is not a URL verification */
    j = parse("{\"schema\":\"2.0\",\"header\":{\"event_type\":\"im.message.receive_v1\"},\"challenge\":\"x\"}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    cJSON_Delete(j);
    /* a challenge that is not a string */
    j = parse("{\"challenge\":42}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    assert_null(ev.challenge);
    cJSON_Delete(j);
}

static void classify_v2_card_action(void **state)
{
    (void)state;
    cJSON *j = parse("{\"schema\":\"2.0\",\"token\":\"top-level\","
                     "\"header\":{\"event_id\":\"ev-9\",\"token\":\"hdr-tok\",\"create_time\":\"1\","
                     "\"event_type\":\"card.action.trigger\",\"tenant_key\":\"tk\",\"app_id\":\"cli_x\"},"
                     "\"event\":{\"operator\":{\"open_id\":\"ou_1\"},\"token\":\"c-1\","
                     "\"action\":{\"value\":{\"action\":\"refresh_dashboard\",\"x\":1},\"tag\":\"button\"}}}");
    struct ap_lark_event ev;
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_CARD_ACTION);
    assert_string_equal(ev.event_id, "ev-9");
    assert_string_equal(ev.event_type, "card.action.trigger");
    assert_string_equal(ev.token, "hdr-tok"); /* the header's token wins */
    assert_string_equal(ev.action, "refresh_dashboard");
    assert_null(ev.challenge);
    cJSON_Delete(j);
}

static void classify_card_action_variants(void **state)
{
    (void)state;
    struct ap_lark_event ev;
    /* a suffixed type still counts (prefix match) */
    cJSON *j = parse("{\"header\":{\"event_id\":\"e\",\"event_type\":\"card.action.trigger_v1\"},"
                     "\"event\":{\"action\":{\"value\":{\"action\":\"approve\"}}}}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_CARD_ACTION);
    assert_string_equal(ev.action, "approve");
    cJSON_Delete(j);
    /* no action value */
    j = parse("{\"header\":{\"event_type\":\"card.action.trigger\"},\"event\":{\"action\":{\"tag\":\"button\"}}}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_CARD_ACTION);
    assert_null(ev.action);
    assert_null(ev.event_id);
    assert_null(ev.token);
    cJSON_Delete(j);
    /* action that is not a string */
    j = parse("{\"header\":{\"event_type\":\"card.action.trigger\"},\"event\":{\"action\":{\"value\":{\"action\":7}}}}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_CARD_ACTION);
    assert_null(ev.action);
    cJSON_Delete(j);
    /* "card.action" alone is not the trigger */
    j = parse("{\"header\":{\"event_type\":\"card.action\"}}");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    cJSON_Delete(j);
}

static void classify_v1_event(void **state)
{
    (void)state;
    cJSON *j = parse("{\"uuid\":\"u-1\",\"token\":\"v1tok\",\"ts\":\"1.0\",\"type\":\"event_callback\","
                     "\"event\":{\"type\":\"message\"}}");
    struct ap_lark_event ev;
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    assert_string_equal(ev.event_id, "u-1");
    assert_string_equal(ev.token, "v1tok");
    assert_string_equal(ev.event_type, "event_callback");
    cJSON_Delete(j);
}

static void classify_v2_other(void **state)
{
    (void)state;
    cJSON *j = parse("{\"schema\":\"2.0\",\"header\":{\"event_id\":\"m1\",\"token\":\"t\","
                     "\"event_type\":\"im.message.receive_v1\"},\"event\":{}}");
    struct ap_lark_event ev;
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    assert_string_equal(ev.event_id, "m1");
    assert_string_equal(ev.event_type, "im.message.receive_v1");
    assert_null(ev.action);
    cJSON_Delete(j);
    /* not even an object's fields: an array */
    j = parse("[1,2]");
    ap_lark_classify(j, &ev);
    assert_int_equal(ev.kind, AP_LARK_OTHER);
    cJSON_Delete(j);
}

/* ---- HTML escape ---- */

/* When the poller refreshes the user token: at once when due, else at expiry - before. */
static void refresh_in_ms_cases(void **state)
{
    (void)state;
    const int64_t now = 1700000000000LL;
    /* Due: inside the window, exactly at its edge, already expired. */
    assert_int_equal(ap_lark_refresh_in_ms(now + 60 * 1000, now, 300), 0);
    assert_int_equal(ap_lark_refresh_in_ms(now + 300 * 1000, now, 300), 0);
    assert_int_equal(ap_lark_refresh_in_ms(now - 5000, now, 300), 0);
    /* Not due: scheduled from the expiry, to the millisecond. */
    assert_int_equal(ap_lark_refresh_in_ms(now + 303 * 1000 + 7, now, 300), 3007);
    assert_int_equal(ap_lark_refresh_in_ms(now + 7200 * 1000, now, 5400), 1800 * 1000);
    /* before 0: right at expiry. */
    assert_int_equal(ap_lark_refresh_in_ms(now + 1500, now, 0), 1500);
    /* Far away: at most the safety-net wait. */
    assert_int_equal(ap_lark_refresh_in_ms(now + 30LL * 86400 * 1000, now, 900), AP_LARK_MAX_WAIT_MS);
}

static void html_escape_cases(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", ""},
        {"plain text 123", "plain text 123"},
        {"<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"},
        {"<a href=\"x\">Tom & Jerry's</a>", "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"},
        {"&amp;", "&amp;amp;"},
        {"\"\"''&&<<>>", "&quot;&quot;&#39;&#39;&amp;&amp;&lt;&lt;&gt;&gt;"},
        {"caf\xc3\xa9 \xe2\x9c\x85", "caf\xc3\xa9 \xe2\x9c\x85"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = ap_html_escape(cases[i][0]);
        assert_non_null(out);
        assert_string_equal(out, cases[i][1]);
        free(out);
    }
    /* a long run of the widest replacement */
    char in[1001], want[6001];
    memset(in, '"', 1000);
    in[1000] = '\0';
    for (int i = 0; i < 1000; i++)
        memcpy(want + 6 * i, "&quot;", 6);
    want[6000] = '\0';
    char *out = ap_html_escape(in);
    assert_string_equal(out, want);
    free(out);
}

/* ---- argv split ---- */

static void argv_split_basic(void **state)
{
    (void)state;
    char **a = ap_argv_split("  /usr/bin/env  a\tb   c  ");
    assert_non_null(a);
    assert_string_equal(a[0], "/usr/bin/env");
    assert_string_equal(a[1], "a");
    assert_string_equal(a[2], "b");
    assert_string_equal(a[3], "c");
    assert_null(a[4]);
    ap_argv_free(a);
}

static void argv_split_no_shell(void **state)
{
    (void)state;
    /* Shell syntax stays literal; quotes are not interpreted. */
    char **a = ap_argv_split("/bin/run $HOME;rm|x \"a b\" `id`");
    assert_non_null(a);
    assert_string_equal(a[0], "/bin/run");
    assert_string_equal(a[1], "$HOME;rm|x");
    assert_string_equal(a[2], "\"a");
    assert_string_equal(a[3], "b\"");
    assert_string_equal(a[4], "`id`");
    assert_null(a[5]);
    ap_argv_free(a);
}

static void argv_split_single_and_empty(void **state)
{
    (void)state;
    char **a = ap_argv_split("cmd");
    assert_non_null(a);
    assert_string_equal(a[0], "cmd");
    assert_null(a[1]);
    ap_argv_free(a);
    assert_null(ap_argv_split(""));
    assert_null(ap_argv_split("   \t  "));
    ap_argv_free(NULL); /* harmless */
}

static void argv_split_many(void **state)
{
    (void)state;
    /* more arguments than the initial capacity: the array grows */
    char cmd[400] = "prog";
    for (int i = 0; i < 40; i++) {
        char w[16];
        snprintf(w, sizeof(w), " w%d", i);
        strcat(cmd, w);
    }
    char **a = ap_argv_split(cmd);
    assert_non_null(a);
    assert_string_equal(a[0], "prog");
    for (int i = 0; i < 40; i++) {
        char w[16];
        snprintf(w, sizeof(w), "w%d", i);
        assert_non_null(a[i + 1]);
        assert_string_equal(a[i + 1], w);
    }
    assert_null(a[41]);
    ap_argv_free(a);
    /* exactly at the boundaries of growth */
    for (int n = 1; n <= 17; n++) {
        char c[200] = "";
        for (int i = 0; i < n; i++)
            strcat(c, "x ");
        char **b = ap_argv_split(c);
        assert_non_null(b);
        int k = 0;
        while (b[k] != NULL)
            k++;
        assert_int_equal(k, n);
        ap_argv_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sig_vector),
        cmocka_unit_test(sig_uppercase_hex),
        cmocka_unit_test(sig_empty_body),
        cmocka_unit_test(sig_uses_len_not_nul),
        cmocka_unit_test(sig_mismatches),
        cmocka_unit_test(decrypt_openssl_vector),
        cmocka_unit_test(decrypt_lark_doc_vector),
        cmocka_unit_test(decrypt_wrong_key),
        cmocka_unit_test(decrypt_bad_padding),
        cmocka_unit_test(decrypt_short_or_malformed),
        cmocka_unit_test(encrypt_round_trip),
        cmocka_unit_test(encrypt_matches_openssl),
        cmocka_unit_test(classify_v1_challenge),
        cmocka_unit_test(classify_bare_challenge),
        cmocka_unit_test(classify_not_challenges),
        cmocka_unit_test(classify_v2_card_action),
        cmocka_unit_test(classify_card_action_variants),
        cmocka_unit_test(classify_v1_event),
        cmocka_unit_test(classify_v2_other),
        cmocka_unit_test(refresh_in_ms_cases),
        cmocka_unit_test(html_escape_cases),
        cmocka_unit_test(argv_split_basic),
        cmocka_unit_test(argv_split_no_shell),
        cmocka_unit_test(argv_split_single_and_empty),
        cmocka_unit_test(argv_split_many),
    };
    return cmocka_run_group_tests_name("lark", tests, NULL, NULL);
}
