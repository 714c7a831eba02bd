/* Time buckets; see ap_time.h. */
#include "ap_time.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>

int64_t ap_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ap_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void time_shifted(time_t t, long offset, struct tm *tm)
{
    time_t s = t + offset;
    gmtime_r(&s, tm);
}

void ap_time_day(time_t t, long offset, char *day)
{
    struct tm tm;
    time_shifted(t, offset, &tm);
    strftime(day, 11, "%Y-%m-%d", &tm);
}

void ap_time_hour(time_t t, long offset, char *hour)
{
    struct tm tm;
    time_shifted(t, offset, &tm);
    strftime(hour, 17, "%Y-%m-%d %H:00", &tm);
}

void ap_time_iso(time_t t, long offset, char *out, size_t n)
{
    struct tm tm;
    time_shifted(t, offset, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    long a = offset < 0 ? -offset : offset;
    snprintf(out + l, n - l, "%c%02ld:%02ld", offset < 0 ? '-' : '+', a / 3600, (a % 3600) / 60);
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's algorithm). */
static long time_days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Reads exactly n decimal digits; -1 if any is not a digit. */
static int time_digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int time_days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

int ap_time_parse_day(const char *s, long *days)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    int y = time_digits(s, 4), mo = time_digits(s + 5, 2), d = time_digits(s + 8, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > time_days_in_month(y, mo))
        return -1;
    *days = time_days_from_civil(y, mo, d);
    return 0;
}

void ap_time_day_name(long days, char *day)
{
    ap_time_day((time_t)days * 86400, 0, day);
}

int ap_time_parse_iso_ms(const char *s, int64_t *out)
{
    if (strlen(s) < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return -1;
    int y = time_digits(s, 4), mo = time_digits(s + 5, 2), d = time_digits(s + 8, 2);
    int h = time_digits(s + 11, 2), mi = time_digits(s + 14, 2), sec = time_digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60 ||
        d > time_days_in_month(y, mo))
        return -1;
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        if (p[1] < '0' || p[1] > '9')
            return -1;
        /* Milliseconds kept; finer digits dropped. */
        int scale = 100;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (*p - '0') * scale;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        if (strlen(p) != 6 || p[3] != ':')
            return -1;
        int oh = time_digits(p + 1, 2), om = time_digits(p + 4, 2);
        if (oh < 0 || oh > 14 || om < 0 || om > 59)
            return -1;
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    }
    if (*p != '\0')
        return -1;
    long days = time_days_from_civil(y, mo, d);
    *out = (int64_t)(days * 86400L + h * 3600L + mi * 60L + sec - off) * 1000 + ms;
    return 0;
}

int ap_time_parse_iso(const char *s, time_t *out)
{
    int64_t ms;
    if (ap_time_parse_iso_ms(s, &ms) < 0)
        return -1;
    /* Whole seconds, rounded down (also before 1970). */
    *out = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
    return 0;
}

void ap_time_iso_ms_utc(int64_t ms, char *out, size_t n)
{
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int frac = (int)(ms - sec * 1000);
    struct tm tm;
    time_t t = (time_t)sec;
    gmtime_r(&t, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac != 0)
        snprintf(out + l, n - l, ".%03dZ", frac);
    else
        snprintf(out + l, n - l, "Z");
}

int64_t ap_time_next_day_ms(int64_t now_ms, long offset)
{
    int64_t local = now_ms + (int64_t)offset * 1000;
    int64_t day = local >= 0 ? local / 86400000 : -((-local + 86399999) / 86400000);
    return (day + 1) * 86400000 - (int64_t)offset * 1000;
}

int64_t ap_time_next_month_ms(int64_t now_ms, long offset)
{
    struct tm tm;
    time_shifted((time_t)(now_ms >= 0 ? now_ms / 1000 : -((-now_ms + 999) / 1000)), offset, &tm);
    long y = tm.tm_year + 1900, m = tm.tm_mon + 2; /* the next month, 1-based */
    if (m > 12) {
        m = 1;
        y++;
    }
    return (int64_t)time_days_from_civil(y, m, 1) * 86400000 - (int64_t)offset * 1000;
}
