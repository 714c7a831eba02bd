/*
 * The client side's HTTP/1.1 framing (common/ap_http1.c): request heads,
 * chunked bodies and paths, all bytes a client controls. Beyond memory
 * safety: the end of a head is found the same whatever the slicing; an
 * accepted head has token header names, values without CR, LF or NUL, and a
 * framing that is one of the three; a chunked body decodes to the same bytes
 * whatever the slicing; a decoded path never holds a control byte or a dot
 * segment.
 */
#include "ap_http1.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fz_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || strchr("!#$%&'*+-.^_`|~", c);
}

static void fz_head(const char *in, size_t size)
{
    struct ap_http1_err err;
    size_t scan = 0;
    long whole = ap_http1_head_end(in, size, &scan, &err);
    /* Fed byte by byte (resuming), the verdict is the same. */
    size_t scan2 = 0;
    long step = 0;
    for (size_t i = 1; i <= size; i++) {
        step = ap_http1_head_end(in, i, &scan2, &err);
        if (step != 0)
            break;
    }
    if ((whole > 0) != (step > 0) || (whole > 0 && whole != step))
        abort();
    if (whole <= 0)
        return;
    char *head = malloc((size_t)whole);
    memcpy(head, in, (size_t)whole);
    struct ap_http1_req r;
    if (ap_http1_parse(head, (size_t)whole, &r, &err) == 0) {
        if (r.body != AP_HTTP1_BODY_NONE && r.body != AP_HTTP1_BODY_LENGTH && r.body != AP_HTTP1_BODY_CHUNKED)
            abort();
        for (size_t i = 0; i < r.nhdr; i++) {
            const char *n = r.hdr[i].name, *v = r.hdr[i].value;
            if (*n == '\0')
                abort();
            for (; *n; n++)
                if (!fz_tchar((unsigned char)*n))
                    abort();
            if (strlen(v) != r.hdr[i].value_len || strpbrk(v, "\r\n") != NULL)
                abort();
        }
        char path[4096];
        if (ap_http1_path_decode(r.target, r.target_len, path, sizeof(path)) == 0) {
            for (const char *p = path; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    abort();
            if (strstr(path, "/../") || strstr(path, "/./"))
                abort();
        }
    } else if (err.status < 400 || err.status > 505 || err.reason == NULL) {
        abort();
    }
    free(head);
}

static int fz_chunked(const char *in, size_t size, size_t step, char **out, size_t *len)
{
    struct ap_http1_chunked c;
    struct ap_http1_err err;
    size_t cap = 0, i = 0;
    int done = 0;
    memset(&c, 0, sizeof(c));
    *out = NULL;
    *len = 0;
    while (i < size && !done) {
        size_t n = size - i < step ? size - i : step;
        long k = ap_http1_chunked_feed(&c, in + i, n, out, len, &cap, 1 << 20, &done, &err);
        if (k < 0)
            return -1;
        if ((size_t)k > n || (!done && (size_t)k != n))
            abort();
        i += (size_t)k;
    }
    return done ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    fz_head(in, size);
    char *a, *b;
    size_t al, bl;
    int ra = fz_chunked(in, size, size ? size : 1, &a, &al);
    int rb = fz_chunked(in, size, 3, &b, &bl);
    if (ra != rb || (ra == 0 && (al != bl || memcmp(a, b, al) != 0)))
        abort();
    free(a);
    free(b);
    return 0;
}
