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

int ap_time_parse_iso(const char *s, time_t *out)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5)
            return -1;
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    }
    if (*p != '\0')
        return -1;
    long days = time_days_from_civil(y, mo, d);
    *out = (time_t)(days * 86400L + h * 3600L + mi * 60L + sec - off);
    return 0;
}
