/* Small whole-body HTTP requests on curl multi; see ap_fetch.h. */
#include "ap_fetch.h"

#include "ap_curl.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_MAX_BODY (4u << 20)

struct ap_fetch {
    CURL *easy;                 /* owned */
    struct curl_slist *hdrs;    /* owned */
    char *body;                 /* owned copy of the request body */
    struct evbuffer *resp;      /* owned */
    ap_fetch_cb cb;
    void *arg;
};

static void fetch_free(struct ap_fetch *f)
{
    if (f->easy)
        curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->hdrs);
    free(f->body);
    if (f->resp)
        evbuffer_free(f->resp);
    free(f);
}

static size_t fetch_on_write(char *data, size_t size, size_t n, void *arg)
{
    struct ap_fetch *f = arg;
    if (evbuffer_get_length(f->resp) + size * n > FETCH_MAX_BODY)
        return 0;
    evbuffer_add(f->resp, data, size * n);
    return size * n;
}

static void fetch_on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct ap_fetch *f = arg;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    evbuffer_add(f->resp, "", 1); /* NUL-terminate for the callback */
    size_t len = evbuffer_get_length(f->resp) - 1;
    const char *b = (const char *)evbuffer_pullup(f->resp, -1);
    if (rc == CURLE_OK)
        f->cb(f->arg, (int)status, b, len, NULL);
    else
        f->cb(f->arg, 0, "", 0, curl_easy_strerror(rc));
    fetch_free(f);
}

struct ap_fetch *ap_fetch_start(struct ap_curl *c, const char *url, const char *const *headers,
                                const char *body, size_t len, long timeout_ms, ap_fetch_cb cb, void *arg)
{
    struct ap_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->cb = cb;
    f->arg = arg;
    f->easy = curl_easy_init();
    f->resp = evbuffer_new();
    if (f->easy == NULL || f->resp == NULL)
        goto fail;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        struct curl_slist *l = curl_slist_append(f->hdrs, headers[i]);
        if (l == NULL)
            goto fail;
        f->hdrs = l;
    }
    struct curl_slist *l = curl_slist_append(f->hdrs, "Expect:");
    if (l == NULL)
        goto fail;
    f->hdrs = l;
    curl_easy_setopt(f->easy, CURLOPT_URL, url);
    curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->hdrs);
    curl_easy_setopt(f->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(f->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(f->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(f->easy, CURLOPT_WRITEFUNCTION, fetch_on_write);
    curl_easy_setopt(f->easy, CURLOPT_WRITEDATA, f);
    if (body != NULL) {
        f->body = malloc(len + 1);
        if (f->body == NULL)
            goto fail;
        memcpy(f->body, body, len);
        curl_easy_setopt(f->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(f->easy, CURLOPT_POSTFIELDS, f->body);
    }
    if (ap_curl_add(c, f->easy, fetch_on_done, f) < 0)
        goto fail;
    return f;
fail:
    fetch_free(f);
    return NULL;
}
