/* Date ranges of the usage views; see ap_range.h. */
#include "ap_range.h"

#include "ap_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int range_day(const char *name, const char *v, long *out, char *err, size_t errlen)
{
    if (ap_time_parse_day(v, out) == 0)
        return 0;
    snprintf(err, errlen, "%s must be a date YYYY-MM-DD", name);
    return -1;
}

int ap_range_parse(const char *from, const char *to, const char *days, long today, long max_days,
                   struct ap_range *r, char *err, size_t errlen)
{
    if (from == NULL && to == NULL && days == NULL)
        return 0;
    if (days != NULL) {
        char *end;
        long n = strtol(days, &end, 10);
        if (from != NULL || to != NULL) {
            snprintf(err, errlen, "days cannot be combined with from or to");
            return -1;
        }
        if (days[0] < '0' || days[0] > '9' || *end != '\0' || n < 1 || n > max_days) {
            snprintf(err, errlen, "days must be a whole number from 1 to %ld", max_days);
            return -1;
        }
        r->last = today;
        r->first = today - (n - 1);
        return 1;
    }
    r->last = today;
    if (to != NULL && range_day("to", to, &r->last, err, errlen) < 0)
        return -1;
    r->first = r->last;
    if (from != NULL && range_day("from", from, &r->first, err, errlen) < 0)
        return -1;
    if (r->first > r->last) {
        snprintf(err, errlen, "from must not be after to");
        return -1;
    }
    if (r->last - r->first + 1 > max_days) {
        snprintf(err, errlen, "the range is longer than %ld days", max_days);
        return -1;
    }
    return 1;
}

char **ap_range_buckets(const struct ap_range *r, int hourly, size_t *count)
{
    size_t days = (size_t)(r->last - r->first + 1), per = hourly ? 24 : 1, len = hourly ? 17 : 11;
    size_t n = days * per;
    char **out = malloc(n * (sizeof(char *) + len));
    if (out == NULL)
        return NULL;
    char *s = (char *)(out + n);
    for (size_t d = 0; d < days; d++) {
        char day[11];
        ap_time_day_name(r->first + (long)d, day);
        for (size_t h = 0; h < per; h++, s += len) {
            out[d * per + h] = s;
            if (hourly)
                snprintf(s, len, "%s %02zu:00", day, h);
            else
                memcpy(s, day, len);
        }
    }
    *count = n;
    return out;
}
