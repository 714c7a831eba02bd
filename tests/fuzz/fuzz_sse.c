/*
 * The SSE parser (common/ap_sse.c), on upstream bytes. Beyond memory safety:
 * the events must not depend on how the bytes were sliced (the parser's
 * promise), so the input is fed whole, then in slices whose sizes come from
 * the input itself, and the two event lists must be identical.
 */
#include "ap_sse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_events {
    char *p;
    size_t len, cap;
};

static int fz_on_event(void *arg, const char *event, const char *data, size_t len)
{
    struct fz_events *e = arg;
    size_t el = strlen(event), need = e->len + el + len + 32;
    if (data[len] != '\0' || strlen(event) >= 64)
        abort(); /* data is NUL-terminated, the event name bounded */
    if (need > e->cap) {
        e->cap = need * 2;
        e->p = realloc(e->p, e->cap);
    }
    e->len += (size_t)sprintf(e->p + e->len, "%zu:", el);
    memcpy(e->p + e->len, event, el);
    e->len += el;
    e->len += (size_t)sprintf(e->p + e->len, "|%zu:", len);
    memcpy(e->p + e->len, data, len);
    e->len += len;
    return 0;
}

static int fz_feed(const uint8_t *data, size_t size, const uint8_t *cuts, size_t ncuts, struct fz_events *out)
{
    struct ap_sse p;
    size_t off = 0, i = 0;
    int rc = 0;
    ap_sse_init(&p, 4096);
    while (off < size && rc == 0) {
        size_t n = ncuts ? 1 + (size_t)cuts[i++ % ncuts] % 17 : size;
        if (n > size - off)
            n = size - off;
        rc = ap_sse_feed(&p, (const char *)data + off, n, fz_on_event, out);
        off += n;
    }
    ap_sse_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_events whole = {0}, sliced = {0};
    size_t ncuts = size < 8 ? size : 8;
    int a = fz_feed(data, size, NULL, 0, &whole);
    int b = fz_feed(data, size, data, ncuts, &sliced);
    /* An event over max_event fails the feed: up to that point the events agree. */
    if (a == 0 && b == 0 && (whole.len != sliced.len || (whole.len > 0 && memcmp(whole.p, sliced.p, whole.len) != 0)))
        abort();
    if ((a == 0) != (b == 0))
        abort();
    free(whole.p);
    free(sliced.p);
    return 0;
}
