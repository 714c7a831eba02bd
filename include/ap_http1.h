/*
 * ap_http1: the HTTP/1.1 request framing of the client side (RFC 9112), as
 * pure functions: find the end of a request head, parse it strictly, decode a
 * chunked body, decode a path.
 *
 * Strict on purpose: the front door is where a request is read once and for
 * all, so anything two parsers could read differently is refused rather than
 * guessed (whitespace before a colon, obsolete line folding, bare CR or LF,
 * Content-Length together with Transfer-Encoding, differing lengths, codings
 * other than chunked). Every refusal carries the status to answer with.
 * libevent's evhttp is not used for the client side: it cannot answer these
 * cases in the endpoint's format, re-arms the socket on every request, and
 * allocates per header (see docs/architecture.md).
 */
#ifndef AP_HTTP1_H
#define AP_HTTP1_H

#include <stddef.h>
#include <strings.h>
#include <stdint.h>

#define AP_HTTP1_MAX_HEADERS 100

/* One header line; name and value are NUL-terminated in place by ap_http1_parse. */
struct ap_http1_hdr {
    const char *name;
    const char *value;
    size_t value_len;
};

enum ap_http1_body { AP_HTTP1_BODY_NONE, AP_HTTP1_BODY_LENGTH, AP_HTTP1_BODY_CHUNKED };

struct ap_http1_req {
    const char *method;                 /* NUL-terminated, points into the head */
    const char *target;                 /* request-target as sent, NUL-terminated */
    size_t target_len;
    int minor;                          /* HTTP/1.minor: 0 or 1 */
    struct ap_http1_hdr hdr[AP_HTTP1_MAX_HEADERS];
    size_t nhdr;
    enum ap_http1_body body;
    uint64_t content_length;            /* AP_HTTP1_BODY_LENGTH */
    unsigned keep_alive:1;              /* the connection may carry another request */
    unsigned expect_continue:1;         /* Expect: 100-continue */
};

/* Why a request was refused: the status to answer and a sentence for the client. */
struct ap_http1_err {
    int status;
    const char *reason;                 /* static */
};

/*
 * Looks for the blank line ending a head in buf[0..len), resuming at *scan
 * (bytes already searched; start at 0). Returns the head's length including
 * the blank line, 0 when more bytes are needed (*scan updated), or -1 when the
 * bytes cannot be HTTP/1.x (a bare LF or CR, a NUL, a TLS handshake): err set.
 */
long ap_http1_head_end(const char *buf, size_t len, size_t *scan, struct ap_http1_err *err);

/*
 * Parses a complete head (as delimited by ap_http1_head_end) in place: line
 * ends and colons become NULs so that every pointer in *r is a C string.
 * 0, or -1 with err set (400, 501 for an unknown coding, 505 for a version,
 * 417 for an expectation, 431 for too many header lines).
 */
int ap_http1_parse(char *head, size_t len, struct ap_http1_req *r, struct ap_http1_err *err);

/*
 * Header names compared with their length first: every header of every
 * request passes through such checks, and most names differ in length from
 * the one looked for, which then costs no strcasecmp.
 */
struct ap_http1_name {
    const char *s;
    size_t len;
};
#define AP_HTTP1_NAME(lit) {lit, sizeof(lit) - 1}
/* name (len bytes, NUL-terminated) equals the literal `lit`, ignoring case. */
#define AP_HTTP1_IS(name, len, lit) ((len) == sizeof(lit) - 1 && strcasecmp((name), (lit)) == 0)
/* 1 when name (len bytes, NUL-terminated) is one of the n names of tab, ignoring case. */
int ap_http1_name_in(const char *name, size_t len, const struct ap_http1_name *tab, size_t n);

/* The value of the first header called `name` (case-insensitive), or NULL. */
const char *ap_http1_header(const struct ap_http1_req *r, const char *name);

/*
 * Incremental chunked-body decoder. Feed it the bytes as they come; it
 * appends the data of each chunk to out (which grows; *out and *out_len are
 * owned by the caller and realloc'd here) and stops at the end of the body.
 */
struct ap_http1_chunked {
    int state;
    uint64_t left;                      /* bytes left in the current chunk */
    size_t line;                        /* length of the size or trailer line so far */
    size_t trailer;                     /* trailer bytes so far */
    unsigned digits;
};

/*
 * Returns the number of input bytes consumed; *done = 1 once the body ended
 * (consumed then stops right after it, pipelined bytes are left alone). -1 on
 * malformed input or a body past max (err: 400 or 413), or when out of memory
 * (err: 500).
 */
long ap_http1_chunked_feed(struct ap_http1_chunked *c, const char *in, size_t len, char **out,
                           size_t *out_len, size_t *out_cap, size_t max, int *done,
                           struct ap_http1_err *err);

/*
 * Percent-decodes the path of a request-target (up to '?') into out (NUL-
 * terminated). -1 when the path is not origin-form, has a malformed escape,
 * decodes to a NUL or a control byte, or holds a dot segment ("." or ".."
 * between slashes) after decoding: such paths are never routed or forwarded.
 */
int ap_http1_path_decode(const char *target, size_t target_len, char *out, size_t out_size);

#endif
