/* Environment parsing; see ap_env.h. */
#include "ap_env.h"

#include "ap_log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *ap_env_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return (v != NULL && v[0] != '\0') ? v : def;
}

int ap_env_long(const char *name, long def, long min, long max, long *out)
{
    const char *v = ap_env_str(name, NULL);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
        ap_error(NULL, "config: %s=%s is not an integer in [%ld, %ld]", name, v, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

int ap_env_double(const char *name, double def, double min, double max, double *out)
{
    const char *v = ap_env_str(name, NULL);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || isnan(d) || d < min || d > max) {
        ap_error(NULL, "config: %s=%s is not a number in [%g, %g]", name, v, min, max);
        return -1;
    }
    *out = d;
    return 0;
}

int ap_parse_utc_offset(const char *s, long *out_seconds)
{
    if (strcasecmp(s, "Z") == 0 || strcasecmp(s, "UTC") == 0) {
        *out_seconds = 0;
        return 0;
    }
    if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || s[3] != ':')
        return -1;
    for (int i = 1; i < 6; i++)
        if (i != 3 && (s[i] < '0' || s[i] > '9'))
            return -1;
    long h = (s[1] - '0') * 10 + (s[2] - '0');
    long m = (s[4] - '0') * 10 + (s[5] - '0');
    if (h > 14 || m > 59)
        return -1;
    long off = h * 3600 + m * 60;
    *out_seconds = s[0] == '-' ? -off : off;
    return 0;
}
