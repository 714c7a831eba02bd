/*
 * px_request: one proxied request, from intake to its end, and px_attempt:
 * one upstream transfer of it and the relay of its answer.
 *
 *   px_request_handle ─▶ intake (body facts) ─▶ auth (key cache, else Redis)
 *        ─▶ plan (tiers) ─▶ outbound (px_outbound) ─▶ px_attempt_start ─▶ ... one outcome ...
 *        ─▶ on_outcome ─▶ px_verdict: deliver | retry next tier | fail
 *        ─▶ complete (usage, durable) ─▶ px_request_finish
 *
 * Ownership, as nginx's upstream module and Redis's clients do it:
 * - The request owns its lifecycle and its current attempt. It is reference
 *   counted: the request itself holds one reference until it is finished, and
 *   every pending asynchronous callback (a key lookup, a usage wait) holds
 *   one. px_request_finish is idempotent; the memory goes when the last
 *   reference does, so a late callback always finds a live object (it sees
 *   `finished` and returns).
 * - The attempt (px_attempt.h) owns its transfer (curl handle, headers,
 *   buffers, stream state) and knows nothing of the request: it reports
 *   through callbacks, one outcome, or a stream's start and end.
 */
#ifndef PX_REQUEST_H
#define PX_REQUEST_H

#include "px.h"
#include "px_attempt.h"
#include "px_outbound.h"
#include "px_verdict.h"

#include "ap_conv.h"
#include "ap_keys.h"
#include "ap_store.h"

struct ap_fallback;
struct ap_tier;
struct ap_stream;
struct cJSON;
struct px_attempt;
struct px_admission;

#define PX_MAX_TIERS 16

struct px_request {
    int refs;                           /* see above */
    struct px_ctx *ctx;                 /* borrowed */
    struct px_hreq *hreq;               /* borrowed until completed, then NULL */
    enum px_route route;
    enum px_fmt err_fmt;                /* error format of the endpoint */
    struct px_body_facts facts;         /* what the body says (api routes) */
    char rid[33];
    char path[256];                     /* for logs: masked, no query */
    char method[16];                    /* for logs */
    int64_t t0;                         /* monotonic ms at arrival */
    char key_hash[AP_SHA256_HEX];
    struct px_key_info key;
    struct cJSON *json;                 /* owned: the client's body, parsed only when it must change */
    char model[AP_MODEL_MAX];           /* requested model ("" if none) */

    /* Fallback: the tiers to try, in order (none: pass through). */
    struct ap_fallback *chain;          /* owned reference: plan points into it */
    const struct ap_tier *plan[PX_MAX_TIERS];
    size_t nplan;
    size_t iplan;                       /* the tier being tried */
    struct px_attempt *att;             /* owned: the current attempt */
    struct px_admission *adm;           /* owned: the key policy's admission (px_policy.h); NULL: none */
    struct ap_header rl[4];             /* the policy's x-ratelimit-* headers for the reply */
    size_t nrl;
    char *send_body;                    /* owned: the current attempt's body when not the client's */

    /* The outcome, for usage, metrics and the log. */
    int reply_status;                   /* what the client got (0: nothing yet; 499: it left) */
    int upstream_status;                /* of the last attempt (0: none answered) */
    char served_model[AP_MODEL_MAX];    /* the model the last attempt asked for */
    const struct ap_tier *served_tier;  /* borrowed from chain */
    struct ap_usage usage;
    int64_t t_sent, t_headers;          /* monotonic ms, last attempt */
    struct evbuffer *tail;              /* owned: the final bytes, held until usage is durable */
    unsigned streamed:1;                /* the reply was a stream */
    unsigned client_gone:1;
    unsigned counted:1;                 /* usage recorded */
    unsigned waiting:1;                 /* the final bytes wait for the usage to reach Redis */
    unsigned finished:1;
};

/* ---- px_request.c ---- */

void px_request_ref(struct px_request *r);
void px_request_unref(struct px_request *r);
/* Ends the request: usage, metrics, log; once (a second call does nothing). */
void px_request_finish(struct px_request *r);
/* Answers with our own error and finishes. */
void px_request_fail(struct px_request *r, int status, const char *msg);

#endif
