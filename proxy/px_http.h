/*
 * px_http: the client side of the proxy, an HTTP/1.1 server of our own on
 * libevent (px_listen.c accepts, px_conn.c reads and writes connections,
 * px_hreq.c is the request and its reply, px_reply.c the JSON helpers).
 *
 * A handler receives a `struct px_hreq *` and owns it until it completes it
 * with exactly one of px_hreq_send() or px_hreq_end() (px_reply_* call
 * px_hreq_send). After that the pointer is dead. If the client leaves first,
 * the close callback (px_hreq_on_close) runs; the handler must still complete
 * the request, which then only frees it. Until completion the request and its
 * head and body stay valid, whatever the client does.
 */
#ifndef PX_HTTP_H
#define PX_HTTP_H

#include <stddef.h>

struct evbuffer;
struct px_ctx;
struct px_hreq;
struct cJSON;

enum px_method { PX_GET, PX_HEAD, PX_POST, PX_PUT, PX_DELETE, PX_PATCH, PX_OPTIONS, PX_OTHER };

/* Which error format an endpoint speaks. */
enum px_fmt { PX_FMT_ANTHROPIC, PX_FMT_OPENAI, PX_FMT_ADMIN };

/* ---- server (px_listen.c) ---- */

/* Binds and starts accepting. 0, or -1 after logging why. */
int px_http_start(struct px_ctx *ctx);
/* Stops accepting; idle connections are closed, busy ones close after their reply. */
void px_http_stop_accepting(struct px_ctx *ctx);
/* Closes everything (teardown). */
void px_http_free(struct px_ctx *ctx);
/* Client connections open now. */
size_t px_http_connections(const struct px_ctx *ctx);
/* Connections whose reply is not all written yet (a graceful stop waits for them). */
size_t px_http_unsent(const struct px_ctx *ctx);
/* Connections turned away (over MAX_CONNECTIONS, or out of descriptors). */
unsigned long long px_http_refused(const struct px_ctx *ctx);

/* ---- the request ---- */

enum px_method px_hreq_method(const struct px_hreq *h);
const char *px_hreq_method_name(const struct px_hreq *h);
/* The request target as sent (path and query). */
const char *px_hreq_target(const struct px_hreq *h);
/* The path as sent, without the query (still percent-encoded). */
const char *px_hreq_raw_path(const struct px_hreq *h);
/* The path percent-decoded (never holds a NUL, a control byte or a dot segment). */
const char *px_hreq_path(const struct px_hreq *h);
/* The query string as sent (after '?'), or NULL. */
const char *px_hreq_query(const struct px_hreq *h);
/* First header of that name (case-insensitive), or NULL. */
const char *px_hreq_header(const struct px_hreq *h, const char *name);
size_t px_hreq_nheaders(const struct px_hreq *h);
/* The i-th header line, as sent (name and value are C strings). */
void px_hreq_header_at(const struct px_hreq *h, size_t i, const char **name, const char **value);
/* The body (contiguous, NUL-terminated; "" when none). */
const char *px_hreq_body(const struct px_hreq *h, size_t *len);
/* 1 once the client is gone (nothing sent now reaches anybody). */
int px_hreq_client_gone(const struct px_hreq *h);

/* ---- the reply ---- */

/* Adds a response header (before the reply starts). Values with CR/LF are dropped. */
void px_hreq_add_header(struct px_hreq *h, const char *name, const char *value);
int px_hreq_has_reply_header(const struct px_hreq *h, const char *name);
/* The connection closes after this reply. */
void px_hreq_close_after(struct px_hreq *h);
/* A whole reply (Content-Type defaults to application/json). Completes the request. */
void px_hreq_send(struct px_hreq *h, int status, const char *body, size_t len);
/* Same, the body taken from an evbuffer (drained). Completes the request. */
void px_hreq_send_buf(struct px_hreq *h, int status, struct evbuffer *body);
/* A streamed reply: status and headers now, then chunks. */
void px_hreq_start(struct px_hreq *h, int status);
void px_hreq_chunk(struct px_hreq *h, const char *data, size_t len);
/* Moves the bytes of b into the reply (b is left empty). */
void px_hreq_chunk_buf(struct px_hreq *h, struct evbuffer *b);
/* Ends a streamed reply (writing what px_hreq_hold kept). Completes the request. */
void px_hreq_end(struct px_hreq *h);
/* What the reply queued and queues from now waits in its output until it ends (or completes). */
void px_hreq_hold(struct px_hreq *h);
/* Reply bytes not yet taken by the client's socket. */
size_t px_hreq_backlog(const struct px_hreq *h);

typedef void (*px_hreq_fn)(void *arg);
/* fn(arg) each time the backlog has been written out (NULL: stop). */
void px_hreq_on_drain(struct px_hreq *h, px_hreq_fn fn, void *arg);
/* fn(arg) once if the client leaves before the request completes (NULL: stop). */
void px_hreq_on_close(struct px_hreq *h, px_hreq_fn fn, void *arg);

/*
 * Corking, around a callback that may write to clients several times (an
 * upstream's read, a usage batch's acknowledgement): while corked, replies
 * are queued, and each connection is written once at px_conn_uncork. A
 * streamed reply then costs one writev for its head and first events and one
 * for its last event and end, instead of one per piece. On loopback the
 * receiver's TCP work runs inside the sender's writev, so each write saved is
 * several microseconds. Only top-level event callbacks cork; calls nest.
 */
void px_conn_cork(struct px_ctx *ctx);
void px_conn_uncork(struct px_ctx *ctx);

/* ---- JSON replies and error formats (px_reply.c) ---- */

/* Sends a JSON document (takes ownership of `doc`). Completes the request. */
void px_reply_json(struct px_hreq *h, int status, struct cJSON *doc);
/* Sends a JSON text as is. Completes the request. */
void px_reply_raw_json(struct px_hreq *h, int status, const char *json, size_t len);
/* Sends an error in the endpoint's format. Completes the request. */
void px_reply_error(struct px_hreq *h, enum px_fmt fmt, int status, const char *message);

/* The presented client key (x-api-key wins over Authorization: Bearer), or NULL. */
const char *px_hreq_key(const struct px_hreq *h);
/* Request id: the client's x-request-id if sane, else a new one (out >= 33 bytes). */
void px_hreq_request_id(const struct px_hreq *h, char *out);

#endif
