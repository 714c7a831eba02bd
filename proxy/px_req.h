/*
 * px_req: one proxied request, shared by px_relay.c (intake, auth, choice of
 * target, the end) and px_attempt.c (one upstream transfer and its relay).
 * Everything about the request lives here; px_relay_finish frees it.
 */
#ifndef PX_REQ_H
#define PX_REQ_H

#include "px.h"

#include "ap_conv.h"
#include "ap_keys.h"
#include "ap_store.h"

struct ap_fallback;
struct ap_tier;
struct ap_stream;
struct cJSON;
struct px_admission;

#define PX_MAX_TIERS 16

/* Where one attempt sends the request. */
struct px_target {
    const struct ap_tier *tier;     /* borrowed; NULL: UPSTREAM_URL as configured */
    enum ap_fmt fmt;                /* what the target speaks */
    char url[2048];
    const char *auth;               /* borrowed secret to send; NULL: none */
    const char *model;              /* borrowed; model to send, NULL: the client's */
    long max_tokens_limit;
    unsigned external:1;            /* a third party: forward only a minimal header set */
    unsigned raw_path:1;            /* the client's path and query, unchanged */
};

struct px_req {
    struct px_ctx *ctx;                 /* borrowed */
    struct evhttp_request *ereq;        /* borrowed; NULL once handed back to evhttp */
    struct evhttp_connection *evcon;    /* borrowed; NULL once the client left */
    enum px_route route;
    enum ap_fmt client_fmt;             /* what the client speaks */
    enum px_fmt err_fmt;                /* error format of the endpoint */
    char rid[33];
    char path[256];                     /* for logs: masked, no query */
    const char *method;                 /* static */
    int64_t t0;                         /* monotonic ms at arrival */
    char key_hash[AP_SHA256_HEX];
    struct px_key_info key;
    struct px_admission *adm;           /* owned: the key policy's admission (px_policy.h); NULL: none */
    struct cJSON *json;                 /* owned: the client's body, parsed only when it must change */
    unsigned api:1;                     /* a Messages / Chat Completions call (body validated) */
    char model[AP_MODEL_MAX];           /* requested model, "" if none */
    int stream;                         /* the client asked for a stream */
    int client_usage;                   /* OpenAI client asked stream_options.include_usage */

    /* Fallback: the tiers to try, in order (none: pass through). */
    struct ap_fallback *chain;          /* owned reference: plan points into it */
    const struct ap_tier *plan[PX_MAX_TIERS];
    size_t nplan;
    size_t iplan;                       /* the tier being tried */

    /* The current attempt (px_attempt.c). */
    struct px_target target;
    char served_model[AP_MODEL_MAX];    /* model the target was asked for */
    char *send_body;                    /* owned; NULL: the client's body as is */
    size_t send_len;
    CURL *easy;                         /* owned */
    struct curl_slist *hdrs;            /* owned */
    int status;                         /* upstream status, 0 before headers */
    struct evkeyvalq resp_headers;      /* owned: upstream headers to relay */
    struct evbuffer *body;              /* owned: buffered (non-stream) upstream body */
    struct evbuffer *chunk;             /* owned: client bytes on their way */
    struct ap_stream *sse;              /* owned: set while streaming */
    struct ap_usage usage;
    int reply_status;                   /* what the client got (0: nothing yet) */
    struct event *idle;                 /* owned: the upstream's silence limit for this attempt */
    int64_t t_sent;                     /* monotonic ms: this attempt's request went out */
    int64_t t_headers;                  /* monotonic ms: its response headers arrived (0: not yet) */

    unsigned is_sse:1;                  /* the upstream answered text/event-stream */
    unsigned started:1;                 /* streamed reply begun: headers are out */
    unsigned paused:1;                  /* curl paused until the client drains */
    unsigned client_gone:1;
    unsigned in_curl:1;                 /* transfer running */
    unsigned hold:1;                    /* keep the stream from the client until content (another tier may follow) */
    unsigned retry:1;                   /* the stream failed before content: abandon it for the next tier */
    unsigned counted:1;                 /* usage recorded */
    unsigned waiting:1;                 /* the reply waits for its usage to reach Redis */
    unsigned finished:1;
    void (*deliver)(struct px_req *r);  /* hands the prepared reply to evhttp */
};

/* px_attempt.c: starts the transfer to r->target; replies and finishes on failure. */
void px_attempt_start(struct px_req *r);
/* Aborts a running transfer (no callbacks). */
void px_attempt_abort(struct px_req *r);
/* Frees what one attempt owns (ready for another). */
void px_attempt_reset(struct px_req *r);
/* Frees the idle easy handles (shutdown). */
void px_attempt_pool_free(struct px_ctx *ctx);

/* The client's body as a tree (parsed on first use; the body was validated on intake). */
struct cJSON *px_req_json(struct px_req *r);

/* px_relay.c */
void px_relay_reply_error(struct px_req *r, int status, const char *msg);
void px_relay_finish(struct px_req *r);
/*
 * The reply (r->reply_status set) is ready: counts usage, then runs `deliver`
 * and finishes the request, after the usage is safe in Redis for a success
 * (USAGE_DURABLE) so a client never sees complete a request nobody counted.
 */
void px_relay_complete(struct px_req *r, void (*deliver)(struct px_req *r));
/* 1 when a later tier of the plan could still take the request. */
int px_relay_has_next(const struct px_req *r);
/* Abandons the current attempt and starts the next usable tier: 1, or 0 if there is none. */
int px_relay_next(struct px_req *r, const char *why);

#endif
