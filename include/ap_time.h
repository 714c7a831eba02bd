/*
 * ap_time: usage time buckets and timestamps.
 * Buckets are computed in a fixed UTC offset (USAGE_TZ), not a named zone: the
 * original used +08:00 with no DST, and a fixed offset keeps every replica's
 * buckets identical whatever the host's zone.
 */
#ifndef AP_TIME_H
#define AP_TIME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Wall clock in milliseconds since the epoch. */
int64_t ap_now_ms(void);

/* Monotonic clock in milliseconds (for durations and timers). */
int64_t ap_mono_ms(void);

/* "YYYY-MM-DD" of `t` shifted by `offset` seconds into day (>= 11 bytes). */
void ap_time_day(time_t t, long offset, char *day);

/* "YYYY-MM-DD HH:00" of `t` shifted by `offset` into hour (>= 17 bytes). */
void ap_time_hour(time_t t, long offset, char *hour);

/* ISO 8601 with the offset, e.g. "2026-02-11T10:00:00+08:00" (>= 26 bytes). */
void ap_time_iso(time_t t, long offset, char *out, size_t n);

/* Parses "YYYY-MM-DD" (a real calendar date) to days since 1970-01-01; 0, or -1 if malformed. */
int ap_time_parse_day(const char *s, long *days);

/* "YYYY-MM-DD" of a day number (days since 1970-01-01) into day (>= 11 bytes). */
void ap_time_day_name(long days, char *day);

/* Parses ISO 8601 ("...Z", "...+08:00", fractional seconds allowed) to epoch seconds; -1 if malformed. */
int ap_time_parse_iso(const char *s, time_t *out);

/* The same to epoch milliseconds (fractions past the millisecond dropped). No offset means UTC. */
int ap_time_parse_iso_ms(const char *s, int64_t *out);

/* UTC ISO 8601, milliseconds only when not zero: "2026-03-01T00:00:00Z", "...:00.250Z" (>= 25 bytes). */
void ap_time_iso_ms_utc(int64_t ms, char *out, size_t n);

/* Epoch ms at which the next day (month) begins in the offset. */
int64_t ap_time_next_day_ms(int64_t now_ms, long offset);
int64_t ap_time_next_month_ms(int64_t now_ms, long offset);

#endif
