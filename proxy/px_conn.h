/*
 * Internals shared by px_listen.c, px_conn.c and px_hreq.c: one client
 * connection and the one request it is answering. Handlers see only
 * px_http.h.
 *
 *   px_listen ──accept──▶ px_conn (socket, input/output buffers, timer)
 *                            │ owns, embedded
 *                            ▼
 *                         px_hreq (head, body, reply state) ──▶ router ──▶ handler
 *
 * A connection answers one request at a time (pipelined requests wait in the
 * input buffer). The request is embedded in the connection, so the
 * connection's memory lives until the handler completes the request, even
 * when the socket closed long before; then it is freed (deferred free).
 */
#ifndef PX_CONN_H
#define PX_CONN_H

#include "ap_http1.h"
#include "px_http.h"

#include <stdint.h>
#include <event2/util.h>

struct event;

struct px_hreq {
    struct px_conn *conn;               /* the connection it arrived on (owner) */
    struct ap_http1_req h1;             /* the parsed head; points into head */
    char *head;                         /* owned: the head's bytes, reused across requests */
    size_t head_cap;
    char *path;                         /* owned: decoded path, reused across requests */
    size_t path_cap;
    const char *raw_path;               /* into head (a copy of the target cut at '?') */
    const char *query;                  /* into head, or NULL */
    enum px_method method;
    char *body;                         /* owned: the body, NUL-terminated */
    size_t body_len, body_cap;
    struct ap_http1_chunked chunked;    /* decoder state of a chunked body */

    /* The reply. */
    char *rh;                           /* owned: response header lines "Name: value\r\n" */
    size_t rh_len, rh_cap;
    px_hreq_fn on_close, on_drain;      /* the handler's interest (borrowed) */
    void *close_arg, *drain_arg;
    unsigned started:1;                 /* status line and headers are out */
    unsigned chunked_reply:1;           /* streamed with chunked framing */
    unsigned eof_reply:1;               /* streamed to an HTTP/1.0 client: ends with the connection */
    unsigned head_only:1;               /* a HEAD request: no body bytes */
    unsigned close_after:1;             /* Connection: close */
    unsigned held:1;                    /* reply bytes wait in the output until px_hreq_end */
};

enum px_conn_state {
    PX_CONN_HEAD,                       /* waiting for (the rest of) a request head */
    PX_CONN_BODY,                       /* reading a Content-Length body */
    PX_CONN_CHUNKED,                    /* reading a chunked body */
    PX_CONN_BUSY,                       /* a handler owns the request */
    PX_CONN_CLOSING,                    /* writing out the last reply, then closing */
    PX_CONN_LINGER,                     /* output done, reading and dropping input until EOF */
};

struct px_conn {
    struct px_ctx *ctx;                 /* borrowed */
    evutil_socket_t fd;                 /* -1 once closed */
    struct event *rev;                  /* owned: readable (persistent) */
    struct event *wev;                  /* owned: writable, added only while output is blocked */
    struct event *timer;                /* owned: the deadline of the current state */
    struct evbuffer *in;                /* owned: bytes read, not yet parsed */
    struct evbuffer *out;               /* owned: bytes to write */
    struct px_hreq req;                 /* the request being read or answered */
    enum px_conn_state state;
    size_t head_scan;                   /* bytes of `in` searched for the end of the head */
    int64_t deadline;                   /* monotonic ms of the current state's limit (0: none) */
    int64_t armed;                      /* when the timer fires (0: not armed) */
    struct px_conn *prev, *next;        /* all connections of the server */
    struct px_conn *cnext;              /* in ctx->corked */
    int holds;                          /* our own calls still using it: frees wait */
    unsigned reading:1;                 /* rev is added */
    unsigned writing:1;                 /* wev is added */
    unsigned timing_request:1;          /* a request has begun: its read deadline runs */
    unsigned dead:1;                    /* socket closed; freed once the request completes */
    unsigned idle_close:1;              /* the server is draining: close when idle */
    unsigned corked:1;                  /* in ctx->corked: its output waits for px_conn_uncork */
};

/* px_conn.c */
struct px_conn *px_conn_new(struct px_ctx *ctx, evutil_socket_t fd);
/* Closes the socket now (client gone or server stopping); frees unless a handler holds the request. */
void px_conn_close(struct px_conn *c);
/* Closes now and tells the request's owner at once (teardown, outside any callback). */
void px_conn_abort(struct px_conn *c);
/* Writes what it can of c->out now. */
void px_conn_flush(struct px_conn *c);
struct iovec;
/* Writes iov after what is queued: straight to the socket when nothing is, the rest buffered. */
void px_conn_writev(struct px_conn *c, const struct iovec *iov, int n);
/* The handler completed the request (after its last bytes were queued). */
void px_conn_request_done(struct px_conn *c);
/* Wakes a connection that waits for input while the server drains. */
void px_conn_drain(struct px_conn *c);

/* Every open connection of the server. */
size_t px_conn_count(const struct px_ctx *ctx);
/* Open connections with reply bytes still to write. */
size_t px_conn_unsent(const struct px_ctx *ctx);
/* Stop accepting: idle connections close now, busy ones after their reply. */
void px_conn_drain_all(struct px_ctx *ctx);
/* Teardown: every connection closes, and the owner of each request in flight is told now. */
void px_conn_abort_all(struct px_ctx *ctx);

#endif
