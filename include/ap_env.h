/*
 * ap_env: typed, validated reads of environment variables.
 * A malformed value is a startup error (docs/contract.md section 2), never a silent
 * default: the getters report it and return -1 so main() can exit non-zero.
 */
#ifndef AP_ENV_H
#define AP_ENV_H

/* Returns the value, or `def` when unset or empty. */
const char *ap_env_str(const char *name, const char *def);

/* Parses an integer in [min, max]; 0 on success (or unset: *out = def), -1 on a bad value (logged). */
int ap_env_long(const char *name, long def, long min, long max, long *out);

/* Same for a number (seconds, fractions). */
int ap_env_double(const char *name, double def, double min, double max, double *out);

/* Parses "+08:00", "-05:30", "Z", "UTC" into seconds east of UTC; -1 if malformed. */
int ap_parse_utc_offset(const char *s, long *out_seconds);

#endif
