/*
 * Incremental SSE parsing; see ap_sse.h for the contract.
 * A line is complete at CR, LF or CRLF. A CR that ends a slice leaves
 * `last_cr` set so a LF opening the next slice is not taken as an empty line
 * (which would dispatch the event early).
 */
#include "ap_sse.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#define AP_SSE_DEFAULT_MAX (16u << 20)

void ap_sse_init(struct ap_sse *p, size_t max_event)
{
    memset(p, 0, sizeof(*p));
    p->max_event = max_event ? max_event : AP_SSE_DEFAULT_MAX;
}

void ap_sse_free(struct ap_sse *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

static int sse_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap *= 2;
    char *n = realloc(*buf, ncap);
    if (n == NULL)
        return -1;
    *buf = n;
    *cap = ncap;
    return 0;
}

static void sse_reset_event(struct ap_sse *p)
{
    p->data_len = 0;
    p->has_data = 0;
    p->event[0] = '\0';
}

static int sse_dispatch(struct ap_sse *p, ap_sse_event_cb cb, void *arg)
{
    if (!p->has_data) {
        sse_reset_event(p);
        return 0;
    }
    /* The spec drops the final "\n" that joining added after the last data line. */
    if (p->data_len > 0 && p->data[p->data_len - 1] == '\n')
        p->data_len--;
    if (sse_reserve(&p->data, &p->data_cap, p->data_len + 1) < 0)
        return -1;
    p->data[p->data_len] = '\0';
    int rc = cb(arg, p->event, p->data, p->data_len);
    sse_reset_event(p);
    return rc < 0 ? -1 : 0;
}

/* Processes one complete line (not NUL-terminated): in the caller's slice, or assembled in p->line. */
static int sse_line(struct ap_sse *p, const char *l, size_t n, ap_sse_event_cb cb, void *arg)
{
    if (n == 0)
        return sse_dispatch(p, cb, arg);
    if (l[0] == ':')
        return 0;

    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = (size_t)(l + n - v);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }

    if (flen == 4 && memcmp(l, "data", 4) == 0) {
        if (p->data_len + vlen + 1 > p->max_event)
            return -1;
        if (sse_reserve(&p->data, &p->data_cap, p->data_len + vlen + 2) < 0)
            return -1;
        memcpy(p->data + p->data_len, v, vlen);
        p->data_len += vlen;
        p->data[p->data_len++] = '\n';
        p->has_data = 1;
    } else if (flen == 5 && memcmp(l, "event", 5) == 0) {
        size_t c = vlen < sizeof(p->event) - 1 ? vlen : sizeof(p->event) - 1;
        memcpy(p->event, v, c);
        p->event[c] = '\0';
    }
    /* "id", "retry" and unknown fields carry nothing we act on. */
    return 0;
}

/*
 * The first CR or LF in s[0..n), or NULL. Two memchr passes (vectorised in
 * libc) instead of a byte loop: streams are mostly long data lines, and CR is
 * rare, so the second pass stops at the LF the first one found.
 */
static const char *sse_eol(const char *s, size_t n)
{
    const char *lf = memchr(s, '\n', n);
    const char *cr = memchr(s, '\r', lf != NULL ? (size_t)(lf - s) : n);
    return cr != NULL ? cr : lf;
}

int ap_sse_feed(struct ap_sse *p, const char *buf, size_t len, ap_sse_event_cb cb, void *arg)
{
    size_t i = 0;

    if (len == 0)
        return 0; /* curl may deliver empty slices; they must not forget a pending CR */
    if (p->last_cr && buf[0] == '\n')
        i = 1;
    p->last_cr = 0;

    while (i < len) {
        const char *eol = sse_eol(buf + i, len - i);
        size_t j = eol != NULL ? (size_t)(eol - buf) : len;
        size_t chunk = j - i;
        if (p->line_len + chunk + p->data_len > p->max_event)
            return -1;
        if (eol == NULL || p->line_len > 0) {
            /* The line started in an earlier slice, or continues in the next one: assemble it. */
            if (chunk > 0) {
                if (sse_reserve(&p->line, &p->line_cap, p->line_len + chunk) < 0)
                    return -1;
                memcpy(p->line + p->line_len, buf + i, chunk);
                p->line_len += chunk;
            }
            if (eol == NULL)
                break;
        }

        const char *line = p->line_len > 0 ? p->line : buf + i;
        size_t line_len = p->line_len > 0 ? p->line_len : chunk;
        if (buf[j] == '\r') {
            if (j + 1 < len) {
                if (buf[j + 1] == '\n')
                    j++;
            } else {
                p->last_cr = 1;
            }
        }
        i = j + 1;
        int rc = sse_line(p, line, line_len, cb, arg);
        p->line_len = 0;
        if (rc < 0)
            return -1;
    }
    return 0;
}

int ap_sse_write(struct evbuffer *out, const char *event, const char *data, size_t data_len)
{
    if (event != NULL && event[0] != '\0' && evbuffer_add_printf(out, "event: %s\n", event) < 0)
        return -1;
    /* One "data:" line per line of data, the last one included even when empty,
     * so data ending in "\n" reads back with it. */
    size_t i = 0;
    for (;;) {
        const char *nl = memchr(data + i, '\n', data_len - i);
        size_t n = nl ? (size_t)(nl - (data + i)) : data_len - i;
        if (evbuffer_add(out, "data: ", 6) < 0 || evbuffer_add(out, data + i, n) < 0 ||
            evbuffer_add(out, "\n", 1) < 0)
            return -1;
        if (nl == NULL)
            break;
        i += n + 1;
    }
    return evbuffer_add(out, "\n", 1);
}
