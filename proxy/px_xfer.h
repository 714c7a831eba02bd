/*
 * px_xfer: one upstream HTTP exchange, whoever carries it. An attempt sees
 * the same callbacks whichever transport runs underneath:
 *
 *   http://   px_upstream.c: our own HTTP/1.1 client with a keep-alive pool
 *             on the event loop (no per-transfer setup, no liveness poll)
 *   https://  px_xfer_curl.c: libcurl's multi interface (TLS, and anything
 *             our client does not speak)
 *
 * Callbacks run from the event loop, never from inside another transport
 * call of the same exchange. on_done runs once, last; the exchange may be
 * freed from inside it. px_xfer_free aborts: no callback runs after it.
 */
#ifndef PX_XFER_H
#define PX_XFER_H

#include <stddef.h>

#include "px_verdict.h"

struct px_ctx;
struct px_xfer;

/* on_body's answer when the bytes cannot be taken now: they come again after px_xfer_resume. */
#define PX_XFER_PAUSE ((size_t)-1)

struct px_xfer_cbs {
    /* The final status line (1xx are skipped). */
    void (*on_status)(void *arg, int status);
    /* One header of the final response (not NUL-terminated); -1 aborts. */
    int (*on_header)(void *arg, const char *name, size_t name_len, const char *value, size_t value_len);
    /* Body bytes: returns len (taken), PX_XFER_PAUSE, or anything else to abort (broken). */
    size_t (*on_body)(void *arg, const char *data, size_t len);
    /* The end: PX_TR_NONE when the answer was complete. */
    void (*on_done)(void *arg, enum px_transport result);
};

struct px_xfer_req {
    const char *url;
    const char *method;                 /* "GET", "POST", ... */
    const char *const *headers;         /* "Name: value" lines */
    size_t nheaders;
    const char *body;                   /* borrowed until the exchange ends */
    size_t body_len;
    int has_body;                       /* send the body (and its length) even when empty */
};

/* Starts an exchange; NULL when it cannot (out of memory, a URL no transport takes). */
struct px_xfer *px_xfer_start(struct px_ctx *ctx, const struct px_xfer_req *req, const struct px_xfer_cbs *cbs,
                              void *arg);
/* Paused exchanges go on (on_body may run before this returns). */
void px_xfer_resume(struct px_xfer *x);
/* Aborts if still running and frees; NULL allowed. */
void px_xfer_free(struct px_xfer *x);

/* Frees what the transports keep between exchanges (idle connections, curl handles). */
void px_xfer_shutdown(struct px_ctx *ctx);

/* ---- the transports (chosen by px_xfer_start) ---- */

struct px_xfer_ops {
    void (*resume)(struct px_xfer *x);
    void (*free)(struct px_xfer *x);
};

/* Every transport's exchange starts with this. */
struct px_xfer {
    const struct px_xfer_ops *ops;
    const struct px_xfer_cbs *cbs;
    void *arg;
};

struct px_xfer *px_xfer_curl_start(struct px_ctx *ctx, const struct px_xfer_req *req, const struct px_xfer_cbs *cbs,
                                   void *arg);
void px_xfer_curl_shutdown(struct px_ctx *ctx);
/* NULL with *unsupported = 1 when the URL is not one our client takes (https, credentials...). */
struct px_xfer *px_upstream_start(struct px_ctx *ctx, const struct px_xfer_req *req, const struct px_xfer_cbs *cbs,
                                  void *arg, int *unsupported);
void px_upstream_shutdown(struct px_ctx *ctx);

#endif
