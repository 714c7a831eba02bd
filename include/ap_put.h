/*
 * Appending to a buffer whose size the caller has already bounded (an HTTP
 * head, a chunk-size line): memcpy and digit loops instead of snprintf, whose
 * format parsing was a visible part of every request's CPU. Each returns the
 * new offset; none checks space, the caller's bound does.
 */
#ifndef AP_PUT_H
#define AP_PUT_H

#include <stddef.h>
#include <string.h>

static inline size_t ap_put(char *buf, size_t o, const char *s, size_t n)
{
    memcpy(buf + o, s, n);
    return o + n;
}

static inline size_t ap_put_str(char *buf, size_t o, const char *s)
{
    return ap_put(buf, o, s, strlen(s));
}

/* A string literal, its length known at compile time. */
#define AP_PUT_LIT(buf, o, lit) ap_put((buf), (o), (lit), sizeof(lit) - 1)

/* v in decimal (at most 20 digits). */
static inline size_t ap_put_dec(char *buf, size_t o, unsigned long long v)
{
    char t[20];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        buf[o++] = t[--n];
    return o;
}

/* v in lowercase hexadecimal, no prefix (at most 16 digits). */
static inline size_t ap_put_hex(char *buf, size_t o, unsigned long long v)
{
    static const char digits[] = "0123456789abcdef";
    char t[16];
    size_t n = 0;
    do {
        t[n++] = digits[v & 15];
        v >>= 4;
    } while (v != 0);
    while (n > 0)
        buf[o++] = t[--n];
    return o;
}

#endif
