/*
 * ap_log: one JSON object per line on stderr.
 *
 * {"ts":"2026-11-26T11:00:00.123Z","level":"info","svc":"proxy","rid":"...","msg":"..."}
 * plus the caller's extra fields. Messages are JSON-escaped here, so callers
 * format plain text. Secrets (keys, tokens) must never be passed in: callers
 * log ids and masked forms only.
 */
#ifndef AP_LOG_H
#define AP_LOG_H

#include <stddef.h>

enum ap_log_level { AP_LOG_DEBUG, AP_LOG_INFO, AP_LOG_WARN, AP_LOG_ERROR };

/* Sets the "svc" field and the minimum level (LOG_LEVEL=debug|info|warn|error). */
void ap_log_init(const char *svc);

int ap_log_enabled(enum ap_log_level level);

/* Logs `fmt` (printf-style) as "msg"; rid may be NULL. */
void ap_log(enum ap_log_level level, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Logs with extra fields: `fields` is a JSON fragment without braces, e.g.
 * "\"status\":200,\"ms\":12.5", built by the caller with ap_log_json_str for
 * strings. May be NULL.
 */
void ap_log_fields(enum ap_log_level level, const char *rid, const char *msg, const char *fields);

/*
 * Writes `s` JSON-escaped (without quotes) into dst of size n; always
 * NUL-terminates; returns the length written (truncated if too small).
 */
size_t ap_log_json_str(char *dst, size_t n, const char *s);

#define ap_debug(rid, ...) \
    do { if (ap_log_enabled(AP_LOG_DEBUG)) ap_log(AP_LOG_DEBUG, rid, __VA_ARGS__); } while (0)
#define ap_info(rid, ...) ap_log(AP_LOG_INFO, rid, __VA_ARGS__)
#define ap_warn(rid, ...) ap_log(AP_LOG_WARN, rid, __VA_ARGS__)
#define ap_error(rid, ...) ap_log(AP_LOG_ERROR, rid, __VA_ARGS__)

#endif
