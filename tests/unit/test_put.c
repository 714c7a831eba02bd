/*
 * ap_put.h: the buffer appenders that build HTTP heads and chunk-size lines
 * without snprintf. Each is checked against snprintf's own output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ap_put.h"

static const unsigned long long values[] = {
    0, 1, 9, 10, 15, 16, 99, 100, 255, 256, 4095, 4096, 6724, 65535, 1000000, 4294967295ULL,
    4294967296ULL, 1234567890123456789ULL, 18446744073709551615ULL,
};

/* Both digit writers, each beside snprintf's rendering of the same value. */
static void test_digits_match_printf(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char dec[32], hex[32], want_dec[32], want_hex[32];
        dec[ap_put_dec(dec, 0, values[i])] = '\0';
        hex[ap_put_hex(hex, 0, values[i])] = '\0';
        snprintf(want_dec, sizeof(want_dec), "%llu", values[i]);
        snprintf(want_hex, sizeof(want_hex), "%llx", values[i]);
        assert_string_equal(dec, want_dec);
        assert_string_equal(hex, want_hex);
    }
}

static void test_appends_at_the_offset(void **state)
{
    (void)state;
    char buf[64];
    memset(buf, '#', sizeof(buf));
    size_t o = AP_PUT_LIT(buf, 0, "HTTP/1.1 ");
    o = ap_put_dec(buf, o, 200);
    buf[o++] = ' ';
    o = ap_put_str(buf, o, "OK");
    o = AP_PUT_LIT(buf, o, "\r\n");
    o = ap_put_hex(buf, o, 0x1a44);
    o = ap_put(buf, o, "xyz", 0);
    assert_int_equal(o, strlen("HTTP/1.1 200 OK\r\n1a44"));
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n1a44", o);
    assert_int_equal(buf[o], '#'); /* nothing written past the end */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digits_match_printf),
        cmocka_unit_test(test_appends_at_the_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
