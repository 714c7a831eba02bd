/*
 * The libcurl transport of px_xfer: https upstreams (external tiers) and
 * anything our own HTTP/1.1 client does not take. One easy handle per
 * exchange, from a pool (curl_easy_init is not cheap), on the shared multi
 * handle driven by the event loop (ap_curl).
 */
#include "px_xfer.h"

#include "px.h"

#include "ap_curl.h"
#include "ap_log.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct xfer_curl {
    struct px_xfer x;                   /* first: the generic part */
    struct px_ctx *ctx;                 /* borrowed */
    CURL *easy;                         /* owned (back to the pool) */
    struct curl_slist *hdrs;            /* owned */
    int status;
    unsigned running:1;                 /* on the multi handle */
};

static CURL *xcurl_easy_get(struct px_ctx *ctx)
{
    return ctx->easy_pool_n > 0 ? ctx->easy_pool[--ctx->easy_pool_n] : curl_easy_init();
}

/* Back to the pool with its options cleared (live connections stay in the multi handle's cache). */
static void xcurl_easy_put(struct px_ctx *ctx, CURL *e)
{
    if (e == NULL)
        return;
    if (ctx->easy_pool_n < (int)(sizeof(ctx->easy_pool) / sizeof(ctx->easy_pool[0]))) {
        curl_easy_reset(e);
        ctx->easy_pool[ctx->easy_pool_n++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

void px_xfer_curl_shutdown(struct px_ctx *ctx)
{
    while (ctx->easy_pool_n > 0)
        curl_easy_cleanup(ctx->easy_pool[--ctx->easy_pool_n]);
}

static size_t curl_on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer_curl *c = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        c->status = sp ? atoi(sp + 1) : 0;
        if (c->status >= 200 || c->status < 100)
            c->x.cbs->on_status(c->x.arg, c->status);
        return len;
    }
    if (c->status < 200)
        return len; /* headers of an interim answer */
    const char *colon = memchr(buf, ':', len);
    if (colon == NULL || colon == buf)
        return len; /* the blank line ending the headers */
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    return c->x.cbs->on_header(c->x.arg, buf, (size_t)(colon - buf), v, (size_t)(end - v)) < 0 ? 0 : len;
}

static size_t curl_on_write(char *data, size_t size, size_t n, void *arg)
{
    struct xfer_curl *c = arg;
    size_t r = c->x.cbs->on_body(c->x.arg, data, size * n);
    return r == PX_XFER_PAUSE ? CURL_WRITEFUNC_PAUSE : r;
}

static enum px_transport curl_result(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return PX_TR_NONE;
    case CURLE_OPERATION_TIMEDOUT:
        return PX_TR_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return PX_TR_REFUSED;
    case CURLE_WRITE_ERROR:
        return PX_TR_ABORTED; /* our own callback said no */
    /* Garbage instead of HTTP is "unsupported protocol" to curl (an HTTP/0.9 reply). */
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_PARTIAL_FILE:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return PX_TR_BROKEN;
    default:
        return PX_TR_OTHER;
    }
}

static void curl_on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct xfer_curl *c = arg;
    (void)easy;
    c->running = 0;
    if (rc != CURLE_OK && rc != CURLE_WRITE_ERROR)
        ap_info(NULL, "upstream transfer failed: %s", curl_easy_strerror(rc));
    c->x.cbs->on_done(c->x.arg, curl_result(rc)); /* last: may free us */
}

static void xcurl_resume(struct px_xfer *x)
{
    struct xfer_curl *c = (struct xfer_curl *)x;
    if (c->running)
        curl_easy_pause(c->easy, CURLPAUSE_CONT); /* may call curl_on_write before it returns */
}

static void xcurl_free(struct px_xfer *x)
{
    struct xfer_curl *c = (struct xfer_curl *)x;
    if (c->running)
        ap_curl_remove(c->ctx->curl, c->easy);
    xcurl_easy_put(c->ctx, c->easy);
    curl_slist_free_all(c->hdrs);
    free(c);
}

static const struct px_xfer_ops curl_ops = {xcurl_resume, xcurl_free};

struct px_xfer *px_xfer_curl_start(struct px_ctx *ctx, const struct px_xfer_req *req, const struct px_xfer_cbs *cbs,
                                   void *arg)
{
    struct xfer_curl *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->x = (struct px_xfer){&curl_ops, cbs, arg};
    c->ctx = ctx;
    c->easy = xcurl_easy_get(ctx);
    if (c->easy == NULL)
        goto fail;
    for (size_t i = 0; i < req->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(c->hdrs, req->headers[i]);
        if (l == NULL)
            goto fail;
        c->hdrs = l;
    }
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ctx->cfg.upstream_connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* The path was checked decoded (no dot segments): curl must send it as it is. */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curl_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    if (strcmp(req->method, "GET") == 0 && !req->has_body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
        /* POSTFIELDS does not copy: the body stays with the caller until the exchange ends. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body_len ? req->body : "");
    }
    if (ap_curl_add(ctx->curl, e, curl_on_done, c) < 0)
        goto fail;
    c->running = 1;
    return &c->x;
fail:
    xcurl_free(&c->x);
    return NULL;
}
