/*
 * ap_range: the date range of the usage views (GET /admin/usage/daily and
 * /hourly with from=, to= or days=), and the bucket names it covers, so a view
 * reads exactly the buckets of the range instead of scanning every bucket
 * ever written. Days are in USAGE_TZ, like the buckets themselves. Pure.
 */
#ifndef AP_RANGE_H
#define AP_RANGE_H

#include <stddef.h>

struct ap_range {
    long first, last;   /* day numbers (days since 1970-01-01), inclusive */
};

/*
 * The range from the query parameters (NULL when absent): `from` and/or `to`
 * (YYYY-MM-DD; a missing `to` is today, a missing `from` is `to`), or `days`
 * (the N days ending today). `today` is today's day number in USAGE_TZ; a
 * range longer than max_days is refused. Returns 1 with r set, 0 when no
 * range parameter is present, -1 with a message in err.
 */
int ap_range_parse(const char *from, const char *to, const char *days, long today, long max_days,
                   struct ap_range *r, char *err, size_t errlen);

/*
 * The bucket names of r, oldest first: days ("YYYY-MM-DD") or, when hourly,
 * hours ("YYYY-MM-DD HH:00"). One allocation (free() it) holding *count
 * pointers and their strings; NULL when out of memory.
 */
char **ap_range_buckets(const struct ap_range *r, int hourly, size_t *count);

#endif
