/*
 * ap_time buckets and ISO timestamps, and ap_env's typed getters and UTC
 * offset parser (USAGE_TZ). One cmocka test per table row.
 *
 * Epoch values used below:
 *   1709164800 2024-02-29T00:00:00Z (leap day)    1709136000 2024-02-28T16:00:00Z
 *   1709271000 2024-03-01T05:30:00Z               1704038400 2023-12-31T16:00:00Z
 *   1709211599 2024-02-29T12:59:59Z               4107542400 2100-03-01T00:00:00Z
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_env.h"
#include "ap_time.h"

#define H8 (8 * 3600L)
#define M530 (-(5 * 3600L + 30 * 60L))

/* ---- day and hour buckets ---- */

struct bucket_case {
    long long t;
    long offset;
    const char *day;
    const char *hour;
};

static void run_bucket(void **state)
{
    const struct bucket_case *c = *state;
    char day[11], hour[17];
    memset(day, 'X', sizeof(day));
    memset(hour, 'X', sizeof(hour));
    ap_time_day((time_t)c->t, c->offset, day);
    ap_time_hour((time_t)c->t, c->offset, hour);
    assert_string_equal(day, c->day);
    assert_string_equal(hour, c->hour);
}

#define BUCKET(name, t, off, day, hour) {name, run_bucket, NULL, NULL, &(struct bucket_case){t, off, day, hour}}

/* ---- ISO formatting ---- */

struct iso_case {
    long long t;
    long offset;
    const char *want;
};

static void run_iso(void **state)
{
    const struct iso_case *c = *state;
    char out[40];
    ap_time_iso((time_t)c->t, c->offset, out, sizeof(out));
    assert_string_equal(out, c->want);
    /* And it parses back to the same instant. */
    time_t back = 0;
    assert_int_equal(ap_time_parse_iso(out, &back), 0);
    assert_int_equal((long long)back, c->t);
}

#define ISO(name, t, off, want) {name, run_iso, NULL, NULL, &(struct iso_case){t, off, want}}

/* ---- ISO parsing ---- */

struct parse_case {
    const char *in;
    int rc;
    long long want; /* when rc == 0 */
};

static void run_parse(void **state)
{
    const struct parse_case *c = *state;
    time_t t = 12345;
    int rc = ap_time_parse_iso(c->in, &t);
    if (rc != c->rc)
        fail_msg("ap_time_parse_iso(\"%s\") returned %d, want %d (t=%lld)", c->in, rc, c->rc, (long long)t);
    if (rc == 0)
        assert_int_equal((long long)t, c->want);
}

#define PARSE_OK(in, want) {"parse_iso ok: " in, run_parse, NULL, NULL, &(struct parse_case){in, 0, want}}
#define PARSE_BAD(in) {"parse_iso malformed: " in, run_parse, NULL, NULL, &(struct parse_case){in, -1, 0}}

/* ---- UTC offsets ---- */

struct offset_case {
    const char *in;
    int rc;
    long want;
};

static void run_offset(void **state)
{
    const struct offset_case *c = *state;
    long out = 777;
    int rc = ap_parse_utc_offset(c->in, &out);
    if (rc != c->rc)
        fail_msg("ap_parse_utc_offset(\"%s\") returned %d, want %d", c->in, rc, c->rc);
    if (rc == 0)
        assert_int_equal(out, c->want);
}

#define OFF_OK(in, want) {"utc_offset ok: " in, run_offset, NULL, NULL, &(struct offset_case){in, 0, want}}
#define OFF_BAD(in) {"utc_offset invalid: '" in "'", run_offset, NULL, NULL, &(struct offset_case){in, -1, 0}}

/* ---- env getters ---- */

#define ENV_NAME "AP_UNIT_TEST_VAR"

struct env_long_case {
    const char *value; /* NULL: unset */
    int rc;
    long want;
};

static void run_env_long(void **state)
{
    const struct env_long_case *c = *state;
    if (c->value)
        setenv(ENV_NAME, c->value, 1);
    else
        unsetenv(ENV_NAME);
    long out = -999;
    int rc = ap_env_long(ENV_NAME, 30, 1, 3600, &out);
    unsetenv(ENV_NAME);
    if (rc != c->rc)
        fail_msg("ap_env_long(%s=%s) returned %d, want %d", ENV_NAME, c->value ? c->value : "(unset)", rc, c->rc);
    if (rc == 0)
        assert_int_equal(out, c->want);
}

#define ENV_LONG(name, v, rc, want) {"env_long: " name, run_env_long, NULL, NULL, &(struct env_long_case){v, rc, want}}

struct env_double_case {
    const char *value;
    int rc;
    double want;
};

static void run_env_double(void **state)
{
    const struct env_double_case *c = *state;
    if (c->value)
        setenv(ENV_NAME, c->value, 1);
    else
        unsetenv(ENV_NAME);
    double out = -999;
    int rc = ap_env_double(ENV_NAME, 0.05, 0, 1, &out);
    unsetenv(ENV_NAME);
    if (rc != c->rc)
        fail_msg("ap_env_double(%s=%s) returned %d, want %d", ENV_NAME, c->value ? c->value : "(unset)", rc, c->rc);
    if (rc == 0)
        assert_float_equal(out, c->want, 1e-12);
}

#define ENV_DOUBLE(name, v, rc, want) \
    {"env_double: " name, run_env_double, NULL, NULL, &(struct env_double_case){v, rc, want}}

static void test_env_str(void **state)
{
    (void)state;
    unsetenv(ENV_NAME);
    assert_string_equal(ap_env_str(ENV_NAME, "def"), "def");
    assert_null(ap_env_str(ENV_NAME, NULL));
    setenv(ENV_NAME, "", 1);
    assert_string_equal(ap_env_str(ENV_NAME, "def"), "def"); /* empty counts as unset */
    setenv(ENV_NAME, "value", 1);
    assert_string_equal(ap_env_str(ENV_NAME, "def"), "value");
    unsetenv(ENV_NAME);
}

/* ---- clocks ---- */

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = ap_now_ms();
    /* After 2024-01-01 and before 2100. */
    assert_true(now > 1704067200000LL);
    assert_true(now < 4102444800000LL);
    int64_t a = ap_mono_ms(), b = ap_mono_ms();
    assert_true(b >= a);
}

/* One group, so that TAP output has a single plan. */
/* ---- milliseconds, months, period ends ---- */

static void test_iso_ms(void **state)
{
    (void)state;
    int64_t ms;
    char out[40];
    assert_int_equal(ap_time_parse_iso_ms("2024-02-29T00:00:00.123Z", &ms), 0);
    assert_int_equal(ms, 1709164800123LL);
    assert_int_equal(ap_time_parse_iso_ms("2024-02-29T08:00:00.5+08:00", &ms), 0);
    assert_int_equal(ms, 1709164800500LL);
    assert_int_equal(ap_time_parse_iso_ms("2024-02-29T00:00:00.123456789Z", &ms), 0);
    assert_int_equal(ms, 1709164800123LL);
    assert_int_equal(ap_time_parse_iso_ms("2024-02-29T00:00:00.Z", &ms), -1);
    ap_time_iso_ms_utc(1709164800123LL, out, sizeof(out));
    assert_string_equal(out, "2024-02-29T00:00:00.123Z");
    ap_time_iso_ms_utc(1709164800000LL, out, sizeof(out));
    assert_string_equal(out, "2024-02-29T00:00:00Z");
    /* before 1970, fractions round down like the seconds */
    time_t t;
    assert_int_equal(ap_time_parse_iso("1969-12-31T23:59:59.5Z", &t), 0);
    assert_int_equal((long long)t, -1);
}

static void test_period_ends(void **state)
{
    (void)state;
    int64_t now = 1709224200000LL;
    assert_int_equal(ap_time_next_day_ms(now, 0), 1709251200000LL);       /* 2024-03-01T00:00Z */
    assert_int_equal(ap_time_next_day_ms(now, H8), 1709308800000LL);      /* 2024-03-02T00:00+08:00 */
    assert_int_equal(ap_time_next_month_ms(now, 0), 1709251200000LL);     /* 2024-03-01T00:00Z */
    assert_int_equal(ap_time_next_month_ms(now, H8), 1711900800000LL);    /* 2024-04-01T00:00+08:00 */
    assert_int_equal(ap_time_next_month_ms(1733011200000LL, 0), 1735689600000LL); /* 2024-12-01 -> 2025-01-01 */
    assert_int_equal(ap_time_next_day_ms(1709251200000LL, 0), 1709337600000LL);   /* midnight itself: the next */
}

static const struct CMUnitTest tests[] = {
    {"iso: milliseconds", test_iso_ms, NULL, NULL, NULL},
    {"the ends of days and months", test_period_ends, NULL, NULL, NULL},
    /* UTC */
    BUCKET("bucket +00:00 last second before leap day", 1709164799, 0, "2024-02-28", "2024-02-28 23:00"),
    BUCKET("bucket +00:00 leap day midnight", 1709164800, 0, "2024-02-29", "2024-02-29 00:00"),
    BUCKET("bucket +00:00 hour edge 12:59:59", 1709211599, 0, "2024-02-29", "2024-02-29 12:00"),
    BUCKET("bucket +00:00 hour edge 13:00:00", 1709211600, 0, "2024-02-29", "2024-02-29 13:00"),
    BUCKET("bucket +00:00 epoch", 0, 0, "1970-01-01", "1970-01-01 00:00"),
    BUCKET("bucket +00:00 2100 is not a leap year", 4107542400 - 1, 0, "2100-02-28", "2100-02-28 23:00"),
    /* +08:00 */
    BUCKET("bucket +08:00 local midnight of the leap day", 1709136000, H8, "2024-02-29", "2024-02-29 00:00"),
    BUCKET("bucket +08:00 one second before local midnight", 1709136000 - 1, H8, "2024-02-28", "2024-02-28 23:00"),
    BUCKET("bucket +08:00 UTC midnight is 08:00 local", 1709164800, H8, "2024-02-29", "2024-02-29 08:00"),
    BUCKET("bucket +08:00 new year local", 1704038400, H8, "2024-01-01", "2024-01-01 00:00"),
    BUCKET("bucket +08:00 last second of the old year local", 1704038400 - 1, H8, "2023-12-31", "2023-12-31 23:00"),
    BUCKET("bucket +08:00 leap day ends", 1709222400, H8, "2024-03-01", "2024-03-01 00:00"),
    /* -05:30 */
    BUCKET("bucket -05:30 local midnight of March 1", 1709271000, M530, "2024-03-01", "2024-03-01 00:00"),
    BUCKET("bucket -05:30 one second earlier is still the leap day", 1709271000 - 1, M530, "2024-02-29",
           "2024-02-29 23:00"),
    BUCKET("bucket -05:30 UTC midnight is the previous day 18:30", 1709164800, M530, "2024-02-28",
           "2024-02-28 18:00"),
    BUCKET("bucket -05:30 half-hour offset hour edge (12:59:59Z = 07:29:59)", 1709211599, M530, "2024-02-29",
           "2024-02-29 07:00"),
    BUCKET("bucket -05:30 13:30:00Z = 08:00 local", 1709213400, M530, "2024-02-29", "2024-02-29 08:00"),
    BUCKET("bucket -05:30 13:29:59Z = 07:59:59 local", 1709213399, M530, "2024-02-29", "2024-02-29 07:00"),

    ISO("iso +00:00", 1709164800, 0, "2024-02-29T00:00:00+00:00"),
    ISO("iso +08:00", 1709164800, H8, "2024-02-29T08:00:00+08:00"),
    ISO("iso -05:30", 1709164800, M530, "2024-02-28T18:30:00-05:30"),
    ISO("iso +05:45 (Nepal)", 1709164800, 5 * 3600L + 45 * 60L, "2024-02-29T05:45:00+05:45"),
    ISO("iso seconds kept", 1709211599, 0, "2024-02-29T12:59:59+00:00"),

    PARSE_OK("2024-02-29T00:00:00Z", 1709164800),
    PARSE_OK("2024-02-29T00:00:00z", 1709164800),
    PARSE_OK("2024-02-29T08:00:00+08:00", 1709164800),
    PARSE_OK("2024-02-28T18:30:00-05:30", 1709164800),
    PARSE_OK("2024-02-29T00:00:00+00:00", 1709164800),
    PARSE_OK("2024-02-29T00:00:00-00:00", 1709164800),
    PARSE_OK("2024-02-29T00:00:00.123Z", 1709164800),
    PARSE_OK("2024-02-29T08:00:00.123456+08:00", 1709164800),
    PARSE_OK("2024-02-28T18:30:00.5-05:30", 1709164800),
    PARSE_OK("2026-02-11T10:00:00Z", 1770804000),
    PARSE_OK("2026-02-11T10:00:00+08:00", 1770775200),
    PARSE_OK("2024-03-01T00:00:00+08:00", 1709222400),
    PARSE_OK("1970-01-01T00:00:00Z", 0),
    PARSE_OK("1969-12-31T23:59:59Z", -1),
    PARSE_OK("2100-03-01T00:00:00Z", 4107542400),
    PARSE_BAD(""),
    PARSE_BAD("garbage"),
    PARSE_BAD("2024-02-29"),
    PARSE_BAD("2024-02-29T00:00Z"),
    PARSE_BAD("2024-02-29 00:00:00Z"),
    PARSE_BAD("24-02-29T00:00:00Z"),
    PARSE_BAD("2024-2-29T00:00:00Z"),
    PARSE_BAD("2024-13-01T00:00:00Z"),
    PARSE_BAD("2024-00-10T00:00:00Z"),
    PARSE_BAD("2024-02-00T00:00:00Z"),
    PARSE_BAD("2024-02-32T00:00:00Z"),
    PARSE_BAD("2024-02-29T24:00:00Z"),
    PARSE_BAD("2024-02-29T00:60:00Z"),
    PARSE_BAD("2024-02-29T00:00:61Z"),
    PARSE_BAD("2024-02-29T00:00:00+0800"),
    PARSE_BAD("2024-02-29T00:00:00+08"),
    PARSE_BAD("2024-02-29T00:00:00+8:00"),
    PARSE_BAD("2024-02-29T00:00:00Zjunk"),
    PARSE_BAD("2024-02-29T00:00:00+08:00junk"),
    PARSE_BAD("2024-02-29T00:00:00 "),
    PARSE_BAD("2024-02-29T00:00:00.123x"),
    /* Signs and spaces inside numeric fields (sscanf's %d accepts them). */
    PARSE_BAD("2024-02-29T-1:00:00Z"),
    PARSE_BAD("2024-02-29T00:-1:00Z"),
    PARSE_BAD("2024-+2-29T00:00:00Z"),
    PARSE_BAD("2024-02- 9T00:00:00Z"),
    /* Impossible calendar dates. */
    PARSE_BAD("2023-02-29T00:00:00Z"),
    PARSE_BAD("2024-04-31T00:00:00Z"),

    OFF_OK("+00:00", 0),
    OFF_OK("-00:00", 0),
    OFF_OK("+08:00", 28800),
    OFF_OK("-05:30", -19800),
    OFF_OK("+05:45", 20700),
    OFF_OK("+14:00", 50400),
    OFF_OK("-12:00", -43200),
    OFF_OK("Z", 0),
    OFF_OK("z", 0),
    OFF_OK("UTC", 0),
    OFF_OK("utc", 0),
    OFF_BAD(""),
    OFF_BAD("08:00"),
    OFF_BAD("+8:00"),
    OFF_BAD("+0800"),
    OFF_BAD("+08"),
    OFF_BAD("+08:00:00"),
    OFF_BAD("+08:60"),
    OFF_BAD("+15:00"),
    OFF_BAD("+ab:cd"),
    OFF_BAD("+08-00"),
    OFF_BAD("GMT"),
    OFF_BAD("Asia/Shanghai"),
    OFF_BAD(" +08:00"),

    ENV_LONG("unset -> default", NULL, 0, 30),
    ENV_LONG("empty -> default", "", 0, 30),
    ENV_LONG("42", "42", 0, 42),
    ENV_LONG("min bound 1", "1", 0, 1),
    ENV_LONG("max bound 3600", "3600", 0, 3600),
    ENV_LONG("0 below min", "0", -1, 0),
    ENV_LONG("3601 above max", "3601", -1, 0),
    ENV_LONG("trailing junk 4x", "4x", -1, 0),
    ENV_LONG("not a number", "abc", -1, 0),
    ENV_LONG("decimal 1.5", "1.5", -1, 0),
    ENV_LONG("overflow", "99999999999999999999999", -1, 0),
    ENV_DOUBLE("unset -> default", NULL, 0, 0.05),
    ENV_DOUBLE("0.5", "0.5", 0, 0.5),
    ENV_DOUBLE("1", "1", 0, 1),
    ENV_DOUBLE("1e-2", "1e-2", 0, 0.01),
    ENV_DOUBLE("above max", "1.01", -1, 0),
    ENV_DOUBLE("negative", "-0.1", -1, 0),
    ENV_DOUBLE("nan", "nan", -1, 0),
    ENV_DOUBLE("inf", "inf", -1, 0),
    ENV_DOUBLE("junk", "0.5x", -1, 0),
    {"env_str: default, empty, set", test_env_str, NULL, NULL, NULL},
    {"clocks: wall clock plausible, monotonic non-decreasing", test_clocks, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("time", tests, NULL, NULL);
}
