/*
 * Streams, both ways and pass-through (common/ap_stream.c, ap_conv_stream*.c,
 * ap_sse.c, ap_usage.c), on an upstream's SSE bytes. The first byte picks the
 * direction, whether the client asked for usage, and whether the upstream
 * ended cleanly; the input is fed whole and in slices, and the client must get
 * the same bytes either way. Converted output must be SSE whose data is JSON
 * (or [DONE]). Ids we make up (a random 16-hex-digit suffix, when the
 * upstream gave none) and "created" (the clock, when the second turns between
 * the two runs) differ from run to run, so they are masked before the outputs
 * are compared.
 */
#include "ap_sse.h"
#include "ap_stream.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fz_is_json(void *arg, const char *event, const char *d, size_t len)
{
    (void)arg;
    (void)event;
    if (len == 6 && memcmp(d, "[DONE]", 6) == 0)
        return 0;
    cJSON *j = cJSON_ParseWithLength(d, len);
    if (j == NULL)
        abort(); /* we wrote an event that is not JSON */
    cJSON_Delete(j);
    return 0;
}

/* Masks made-up id suffixes ("<prefix>" + 16 hex digits + '"') and "created" times. */
static void fz_mask_ids(unsigned char *p, size_t len)
{
    for (unsigned char *q = p; (q = memmem(q, len - (size_t)(q - p), "\"created\":", 10)) != NULL;)
        for (q += 10; q < p + len && *q >= '0' && *q <= '9'; q++)
            *q = '0';
    static const char *const prefixes[] = {"toolu_", "call_", "msg_", "chatcmpl-"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t pl = strlen(prefixes[i]);
        for (unsigned char *q = p; (q = memmem(q, len - (size_t)(q - p), prefixes[i], pl)) != NULL; q += pl) {
            unsigned char *h = q + pl;
            size_t n = 0;
            while (h + n < p + len && n < 17 && strchr("0123456789abcdef", h[n]) != NULL && h[n] != '\0')
                n++;
            if (n == 16 && h + 16 < p + len && h[16] == '"')
                memset(h, 'x', 16);
        }
    }
}

static struct evbuffer *fz_run(const struct ap_stream_opts *o, int ok, const uint8_t *in, size_t len,
                               const uint8_t *cuts, size_t ncuts, struct ap_usage *u)
{
    struct ap_stream *s = ap_stream_new(o);
    struct evbuffer *out = evbuffer_new();
    size_t off = 0, i = 0;
    while (off < len) {
        size_t n = ncuts ? 1 + (size_t)cuts[i++ % ncuts] % 23 : len;
        if (n > len - off)
            n = len - off;
        if (ap_stream_feed(s, (const char *)in + off, n, out) < 0)
            break;
        off += n;
    }
    ap_stream_end(s, ok, out);
    ap_stream_end(s, ok, out); /* idempotent */
    ap_stream_usage(s, u);
    ap_stream_free(s);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct ap_stream_opts o = {(data[0] & 1) ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC,
                               (data[0] & 2) ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC, (data[0] & 8) ? "m" : NULL,
                               (data[0] >> 2) & 1};
    int ok = (data[0] >> 4) & 1;
    const uint8_t *in = data + 1;
    size_t len = size - 1, ncuts = len < 6 ? len : 6;
    struct ap_usage u1, u2;
    struct evbuffer *whole = fz_run(&o, ok, in, len, NULL, 0, &u1);
    struct evbuffer *sliced = fz_run(&o, ok, in, len, in, ncuts, &u2);
    size_t wl = evbuffer_get_length(whole), sl = evbuffer_get_length(sliced);
    unsigned char *w = evbuffer_pullup(whole, -1), *sp = evbuffer_pullup(sliced, -1);
    if (wl > 0)
        fz_mask_ids(w, wl);
    if (sl > 0)
        fz_mask_ids(sp, sl);
    if (wl != sl || (wl && memcmp(w, sp, wl) != 0) || memcmp(&u1, &u2, sizeof(u1)) != 0)
        abort(); /* the client's bytes depend on the upstream's slicing */
    if (o.from != o.to) {
        struct ap_sse p;
        ap_sse_init(&p, 0);
        ap_sse_feed(&p, (const char *)w, wl, fz_is_json, NULL);
        ap_sse_free(&p);
    }
    evbuffer_free(whole);
    evbuffer_free(sliced);
    return 0;
}
