/*
 * JSON-lines logger. Each line is assembled in one buffer and written with a
 * single write(2) so lines from several processes sharing stderr never interleave.
 */
#include "ap_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_svc = "api-proxy";
static enum ap_log_level log_min = AP_LOG_INFO;
static const char *const log_names[] = {"debug", "info", "warn", "error"};

void ap_log_init(const char *svc)
{
    log_svc = svc;
    const char *lv = getenv("LOG_LEVEL");
    if (lv == NULL)
        return;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(lv, log_names[i]) == 0)
            log_min = (enum ap_log_level)i;
}

int ap_log_enabled(enum ap_log_level level)
{
    return level >= log_min;
}

size_t ap_log_json_str(char *dst, size_t n, const char *s)
{
    size_t o = 0;
    if (n == 0)
        return 0;
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        size_t el;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            el = 2;
        } else if (c == '\n') {
            memcpy(esc, "\\n", 2);
            el = 2;
        } else if (c < 0x20 || c == 0x7f) {
            el = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
        } else {
            esc[0] = (char)c;
            el = 1;
        }
        if (o + el >= n)
            break;
        memcpy(dst + o, esc, el);
        o += el;
    }
    dst[o] = '\0';
    return o;
}

static void log_emit(enum ap_log_level level, const char *rid, const char *msg, const char *fields)
{
    char line[8192];
    char ts[40];
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03ldZ", (long)(tv.tv_usec / 1000));

    int o = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"svc\":\"%s\"", ts,
                     log_names[level], log_svc);
    if (rid != NULL && rid[0] != '\0')
        o += snprintf(line + o, sizeof(line) - (size_t)o, ",\"rid\":\"%s\"", rid);
    o += snprintf(line + o, sizeof(line) - (size_t)o, ",\"msg\":\"");
    o += (int)ap_log_json_str(line + o, sizeof(line) - (size_t)o - 64, msg);
    o += snprintf(line + o, sizeof(line) - (size_t)o, "\"");
    if (fields != NULL && fields[0] != '\0' && (size_t)o + strlen(fields) + 4 < sizeof(line))
        o += snprintf(line + o, sizeof(line) - (size_t)o, ",%s", fields);
    if ((size_t)o > sizeof(line) - 3)
        o = (int)sizeof(line) - 3;
    line[o++] = '}';
    line[o++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)o);
    (void)w;
}

void ap_log(enum ap_log_level level, const char *rid, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;

    if (level < log_min)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_emit(level, rid, msg, NULL);
}

void ap_log_fields(enum ap_log_level level, const char *rid, const char *msg, const char *fields)
{
    if (level < log_min)
        return;
    log_emit(level, rid, msg, fields);
}
