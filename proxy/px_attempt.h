/*
 * px_attempt: one upstream transfer and the relay of its answer. It knows
 * nothing of the request that started it: it gets a spec (what to send,
 * where the client's reply goes) and an owner with three callbacks, and
 * reports through them exactly once per ending:
 *
 *   not streamed to the client  ──▶ on_outcome (the owner decides: deliver,
 *                                   retry, fail; px_attempt_deliver builds the reply)
 *   a stream reached the client ──▶ on_stream_start, then on_stream_end
 *
 * The owner frees the attempt (px_attempt_free), also in the middle of a
 * transfer: then no callback runs any more.
 */
#ifndef PX_ATTEMPT_H
#define PX_ATTEMPT_H

#include <stddef.h>
#include <stdint.h>

#include "px.h"
#include "px_outbound.h"

#include "ap_policy.h"
#include "px_verdict.h"

struct evbuffer;
struct px_attempt;

struct px_attempt_ops {
    /* The transfer ended before anything reached the client (o->has_next is the owner's to fill). */
    void (*on_outcome)(void *owner, struct px_outcome *o);
    /* A stream's status and headers went to the client. */
    void (*on_stream_start)(void *owner, int status);
    /* That stream ended: its usage is in spec->usage, its final bytes in spec->tail. */
    void (*on_stream_end)(void *owner);
};

struct px_attempt_spec {
    struct px_ctx *ctx;
    struct px_hreq *hreq;               /* the client's request: its headers go along; replies go to it */
    const char *rid;
    struct px_target target;
    const char *body;                   /* borrowed until the attempt is freed */
    size_t body_len;
    int body_rewritten;                 /* the body is ours (JSON), not the client's */
    enum ap_fmt client_fmt;
    int client_usage;                   /* OpenAI stream_options.include_usage */
    int stream;                         /* the client asked for a stream */
    int api;                            /* Messages / Chat Completions (else pass-through) */
    int hold;                           /* another tier may follow: hold a stream until content */
    const char *served_model;           /* for x-api-proxy-model (api only) */
    const struct ap_header *extra;      /* the owner's headers for the reply (replace the upstream's) */
    size_t nextra;
    struct evbuffer *tail;              /* the owner's: a reply's final bytes */
    struct ap_usage *usage;             /* the owner's: the usage of what is delivered */
    const struct px_attempt_ops *ops;
    void *owner;
};

/* What the owner logs and measures. */
struct px_attempt_info {
    int upstream_status;                /* 0: no answer yet */
    int64_t t_sent, t_headers;          /* monotonic ms; t_headers 0: none yet */
};

/* Starts the transfer. NULL, with *status and *message set, when it cannot start. */
struct px_attempt *px_attempt_start(const struct px_attempt_spec *spec, int *status, const char **message);
/* Aborts what runs and frees; a stream that reached the client leaves its usage so far. NULL allowed. */
void px_attempt_free(struct px_attempt *a);
void px_attempt_info(const struct px_attempt *a, struct px_attempt_info *out);

enum px_delivery { PX_DELIVERED_BODY, PX_DELIVERED_STREAM, PX_DELIVERY_FAILED };
/*
 * The owner's verdict was "deliver". PX_DELIVERED_BODY: the reply's headers
 * are on the client's request, its body in spec->tail and its status in
 * *status. PX_DELIVERED_STREAM: a held stream was relayed now (on_stream_start
 * and on_stream_end ran). PX_DELIVERY_FAILED: answer *status / *message.
 */
enum px_delivery px_attempt_deliver(struct px_attempt *a, int *status, const char **message);

/* Frees the idle transfer handles (shutdown). */
void px_attempt_pool_free(struct px_ctx *ctx);

#endif
