/*
 * Reply helpers every handler uses: JSON documents, errors in the format of
 * the endpoint called, and the few request facts every handler needs (the
 * presented key, the request id). They sit apart from the router so that
 * handlers do not depend on it.
 */
#include "px.h"

#include "ap_keys.h"

#include <cJSON.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void px_reply_raw_json(struct px_hreq *h, int status, const char *json, size_t len)
{
    px_hreq_send(h, status, json, len);
}

void px_reply_json(struct px_hreq *h, int status, cJSON *doc)
{
    char *s = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (s == NULL) {
        static const char oom[] = "{\"detail\":\"out of memory\"}";
        px_hreq_send(h, 500, oom, sizeof(oom) - 1);
        return;
    }
    px_hreq_send(h, status, s, strlen(s));
    cJSON_free(s);
}

void px_reply_error(struct px_hreq *h, enum px_fmt fmt, int status, const char *message)
{
    px_reply_json(h, status, px_error_doc(fmt, status, message));
}

const char *px_hreq_key(const struct px_hreq *h)
{
    const char *k = px_hreq_header(h, "x-api-key");
    if (k != NULL && k[0] != '\0')
        return k;
    const char *a = px_hreq_header(h, "Authorization");
    if (a != NULL && strncasecmp(a, "Bearer ", 7) == 0) {
        a += 7;
        while (*a == ' ')
            a++;
        return a[0] != '\0' ? a : NULL;
    }
    return NULL;
}

void px_hreq_request_id(const struct px_hreq *h, char *out)
{
    const char *c = px_hreq_header(h, "x-request-id");
    size_t n = c ? strlen(c) : 0;
    int sane = n >= 8 && n <= 32;
    for (size_t i = 0; sane && i < n; i++)
        sane = isalnum((unsigned char)c[i]) || c[i] == '-' || c[i] == '_';
    if (sane) {
        memcpy(out, c, n + 1);
        return;
    }
    /* Ids need uniqueness, not secrecy: a PRNG seeded once from the CSPRNG is enough
     * and spares the CSPRNG (and its fork checks) on every request. */
    static uint64_t state;
    if (state == 0 && (ap_random_bytes(&state, sizeof(state)) < 0 || state == 0))
        state = (uint64_t)(uintptr_t)h ^ 0x9e3779b97f4a7c15ULL;
    uint64_t v[2] = {ap_splitmix64(&state), ap_splitmix64(&state)};
    static const char hx[] = "0123456789abcdef";
    /* 32 lowercase hex digits, as "%016llx%016llx" wrote them (without its format parsing). */
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 16; i++)
            out[16 * k + i] = hx[(v[k] >> (60 - 4 * i)) & 15];
    out[32] = '\0';
}
