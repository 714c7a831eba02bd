/*
 * px_verdict: what to do with the outcome of one upstream attempt, decided
 * without I/O: deliver it to the client, retry on the next tier (and whether
 * to mark this tier's model exhausted on every replica), or fail with our
 * own error.
 *
 * Reactive fallback reacts to what the upstream says about itself: the
 * statuses 429, 503 and 529, and error *types* that mean overload or quota
 * (rate_limit_error, overloaded_error, insufficient_quota, ...). It never
 * reacts to words inside a 4xx caused by the request: such an error usually
 * quotes the client's own input ("Invalid value: 'quota'"), and one client
 * must not be able to mark a tier exhausted for everybody.
 */
#ifndef PX_VERDICT_H
#define PX_VERDICT_H

#include <stddef.h>

enum px_outcome_kind {
    PX_OUT_TRANSPORT,                   /* no usable HTTP answer */
    PX_OUT_ANSWER,                      /* a complete answer, buffered (not streamed) */
    PX_OUT_HELD_STREAM,                 /* a 2xx stream that ended before reaching the client */
};

enum px_transport {
    PX_TR_NONE,
    PX_TR_REFUSED,                      /* could not connect or resolve */
    PX_TR_BROKEN,                       /* the connection broke, or garbage instead of HTTP */
    PX_TR_TIMEOUT,                      /* silence past UPSTREAM_READ_TIMEOUT_SECONDS */
    PX_TR_TOO_LARGE,                    /* an answer past MAX_BODY_BYTES */
    PX_TR_ABORTED,                      /* our own side stopped it (the attempt knows why) */
    PX_TR_OTHER,
};

struct px_outcome {
    enum px_outcome_kind kind;
    enum px_transport transport;        /* PX_OUT_TRANSPORT */
    int status;                         /* PX_OUT_ANSWER */
    const char *body;                   /* PX_OUT_ANSWER: the answer's bytes (borrowed) */
    size_t body_len;
    int is_sse;                         /* PX_OUT_ANSWER: a 2xx event stream that sent nothing */
    int api;                            /* a Messages / Chat Completions call */
    int body_is_answer;                 /* 2xx api answer: a message / completion of the target's format */
    int stream_clean;                   /* PX_OUT_HELD_STREAM: ended properly */
    const char *stream_error;           /* PX_OUT_HELD_STREAM: "type: message" of its error, or "" */
    int has_next;                       /* a later tier of the plan may take the request */
};

enum px_verdict_kind {
    PX_V_DELIVER,                       /* give the client the answer (converted if needed) */
    PX_V_RETRY,                         /* try the next tier */
    PX_V_FAIL,                          /* answer status/message ourselves */
};

struct px_verdict {
    enum px_verdict_kind kind;
    int mark;                           /* PX_V_RETRY: mark this tier's model exhausted */
    int status;                         /* PX_V_FAIL */
    const char *message;                /* PX_V_FAIL: for the client; PX_V_RETRY: why (static) */
};

struct px_verdict px_verdict_decide(const struct px_outcome *o);

/* 1 when an error body's type (Anthropic error.type, OpenAI error.type/code) means overload or quota. */
int px_verdict_reactive_body(const char *body, size_t len);
/* The same for a stream's "type: message" error text. */
int px_verdict_reactive_stream_error(const char *text);

#endif
