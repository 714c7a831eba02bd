/*
 * ap_range: the usage views' date ranges (from=, to=, days=) and the buckets
 * they cover, and the calendar-day helpers of ap_time they rest on. One
 * cmocka test per table row.
 *
 * Day numbers used below (days since 1970-01-01):
 *   19782 2024-02-29 (leap day)   19781 2024-02-28   19783 2024-03-01
 *   19722 2023-12-31              19723 2024-01-01   0 1970-01-01
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_range.h"
#include "ap_time.h"

#define TODAY 19782L /* 2024-02-29 */

/* ---- calendar days ---- */

struct day_case {
    const char *s;
    int rc;
    long days;
};

static void run_day(void **state)
{
    const struct day_case *c = *state;
    long d = -12345;
    assert_int_equal(ap_time_parse_day(c->s, &d), c->rc);
    if (c->rc == 0) {
        char back[11];
        assert_int_equal(d, c->days);
        ap_time_day_name(d, back);
        assert_string_equal(back, c->s);
    } else {
        assert_int_equal(d, -12345); /* untouched on error */
    }
}

#define DAY(name, s, rc, days) {name, run_day, NULL, NULL, &(struct day_case){s, rc, days}}

/* ---- parsing ---- */

struct parse_case {
    const char *from, *to, *days;
    long max;
    int rc;
    long first, last;
    const char *err; /* a part of the message */
};

static void run_parse(void **state)
{
    const struct parse_case *c = *state;
    struct ap_range r = {-1, -1};
    char err[128] = "";
    assert_int_equal(ap_range_parse(c->from, c->to, c->days, TODAY, c->max, &r, err, sizeof(err)), c->rc);
    if (c->rc == 1) {
        assert_int_equal(r.first, c->first);
        assert_int_equal(r.last, c->last);
    }
    if (c->err != NULL && strstr(err, c->err) == NULL)
        fail_msg("error \"%s\" does not say \"%s\"", err, c->err);
}

#define PARSE(name, from, to, days, max, rc, first, last, err) \
    {name, run_parse, NULL, NULL, &(struct parse_case){from, to, days, max, rc, first, last, err}}

/* ---- buckets ---- */

static void test_buckets_days(void **state)
{
    (void)state;
    struct ap_range r = {19781, 19783};
    size_t n = 0;
    char **b = ap_range_buckets(&r, 0, &n);
    assert_non_null(b);
    assert_int_equal(n, 3);
    assert_string_equal(b[0], "2024-02-28");
    assert_string_equal(b[1], "2024-02-29");
    assert_string_equal(b[2], "2024-03-01");
    free(b);
}

static void test_buckets_hours(void **state)
{
    (void)state;
    struct ap_range r = {19722, 19723}; /* across a year end */
    size_t n = 0;
    char **b = ap_range_buckets(&r, 1, &n);
    assert_non_null(b);
    assert_int_equal(n, 48);
    assert_string_equal(b[0], "2023-12-31 00:00");
    assert_string_equal(b[9], "2023-12-31 09:00");
    assert_string_equal(b[23], "2023-12-31 23:00");
    assert_string_equal(b[24], "2024-01-01 00:00");
    assert_string_equal(b[47], "2024-01-01 23:00");
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(b[i - 1], b[i]) < 0); /* oldest first, no duplicates */
    free(b);
}

static void test_buckets_one_day(void **state)
{
    (void)state;
    struct ap_range r = {0, 0};
    size_t n = 0;
    char **b = ap_range_buckets(&r, 0, &n);
    assert_non_null(b);
    assert_int_equal(n, 1);
    assert_string_equal(b[0], "1970-01-01");
    free(b);
}

static const struct CMUnitTest tests[] = {
    DAY("1970-01-01 is day 0", "1970-01-01", 0, 0),
    DAY("leap day 2024-02-29", "2024-02-29", 0, 19782),
    DAY("2024-03-01 follows the leap day", "2024-03-01", 0, 19783),
    DAY("2023-12-31", "2023-12-31", 0, 19722),
    DAY("1969-12-31 is day -1", "1969-12-31", 0, -1),
    DAY("no 2023-02-29", "2023-02-29", -1, 0),
    DAY("no 2100-02-29 (century)", "2100-02-29", -1, 0),
    DAY("2000-02-29 exists (400 years)", "2000-02-29", 0, 11016),
    DAY("month 13", "2024-13-01", -1, 0),
    DAY("month 0", "2024-00-10", -1, 0),
    DAY("day 0", "2024-01-00", -1, 0),
    DAY("day 31 of a 30-day month", "2024-04-31", -1, 0),
    DAY("one-digit month", "2024-1-01", -1, 0),
    DAY("trailing text", "2024-01-01x", -1, 0),
    DAY("a time is not a day", "2024-01-01T00", -1, 0),
    DAY("slashes", "2024/01/01", -1, 0),
    DAY("sign", "+024-01-01", -1, 0),
    DAY("empty", "", -1, 0),

    PARSE("nothing: no range", NULL, NULL, NULL, 100, 0, 0, 0, NULL),
    PARSE("from and to", "2024-02-01", "2024-02-29", NULL, 100, 1, 19782 - 28, 19782, NULL),
    PARSE("one day", "2024-02-29", "2024-02-29", NULL, 100, 1, 19782, 19782, NULL),
    PARSE("from alone: up to today", "2024-02-28", NULL, NULL, 100, 1, 19781, 19782, NULL),
    PARSE("to alone: that day", NULL, "2023-12-31", NULL, 100, 1, 19722, 19722, NULL),
    PARSE("to in the future is allowed", "2024-02-29", "2024-03-01", NULL, 100, 1, 19782, 19783, NULL),
    PARSE("days=1 is today", NULL, NULL, "1", 100, 1, 19782, 19782, NULL),
    PARSE("days=14 ends today", NULL, NULL, "14", 100, 1, 19782 - 13, 19782, NULL),
    PARSE("days at the limit", NULL, NULL, "100", 100, 1, 19782 - 99, 19782, NULL),
    PARSE("days past the limit", NULL, NULL, "101", 100, -1, 0, 0, "from 1 to 100"),
    PARSE("days=0", NULL, NULL, "0", 100, -1, 0, 0, "whole number"),
    PARSE("days negative", NULL, NULL, "-3", 100, -1, 0, 0, "whole number"),
    PARSE("days with junk", NULL, NULL, "3d", 100, -1, 0, 0, "whole number"),
    PARSE("days empty", NULL, NULL, "", 100, -1, 0, 0, "whole number"),
    PARSE("days with a space", NULL, NULL, " 3", 100, -1, 0, 0, "whole number"),
    PARSE("days and from", "2024-02-01", NULL, "3", 100, -1, 0, 0, "cannot be combined"),
    PARSE("days and to", NULL, "2024-02-01", "3", 100, -1, 0, 0, "cannot be combined"),
    PARSE("from after to", "2024-03-01", "2024-02-29", NULL, 100, -1, 0, 0, "after"),
    PARSE("range at the limit", "2024-02-20", "2024-02-29", NULL, 10, 1, 19773, 19782, NULL),
    PARSE("range past the limit", "2024-02-19", "2024-02-29", NULL, 10, -1, 0, 0, "longer than 10 days"),
    PARSE("bad from", "2024-02-30", "2024-03-01", NULL, 100, -1, 0, 0, "from must be a date"),
    PARSE("bad to", "2024-02-01", "tomorrow", NULL, 100, -1, 0, 0, "to must be a date"),
    PARSE("empty from", "", "2024-03-01", NULL, 100, -1, 0, 0, "from must be a date"),

    {"buckets: days, across a month end", test_buckets_days, NULL, NULL, NULL},
    {"buckets: 24 hours a day, across a year end", test_buckets_hours, NULL, NULL, NULL},
    {"buckets: one day", test_buckets_one_day, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("range", tests, NULL, NULL);
}
