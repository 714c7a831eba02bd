/*
 * ap_h1resp: an HTTP/1.1 response, read incrementally (RFC 9112): status
 * line, headers, then the body by its framing (Content-Length, chunked, or
 * to the end of the connection), handed out as spans of the input, without
 * a copy.
 *
 * Pull style: each call returns the next event and how many input bytes it
 * took, so that a consumer can stop at any event (a data span it cannot take
 * now) and come back later with the same bytes. Pure: no I/O, no allocation.
 * Written by hand for our own upstream client (see px_upstream.c): libcurl's
 * per-transfer cost dominated small requests.
 */
#ifndef AP_H1RESP_H
#define AP_H1RESP_H

#include <stddef.h>
#include <stdint.h>

enum ap_h1resp_kind {
    AP_H1R_MORE,                        /* every byte was taken; feed more */
    AP_H1R_STATUS,                      /* status: a final (non-1xx) status line was read */
    AP_H1R_HEADER,                      /* name/value: one header line of the final response */
    AP_H1R_HEADERS_DONE,                /* the blank line: the body follows (or not) */
    AP_H1R_DATA,                        /* data/len: body bytes (pointing into the input) */
    AP_H1R_DONE,                        /* the response is complete */
    AP_H1R_ERROR,                       /* malformed; error says why */
};

struct ap_h1resp_ev {
    enum ap_h1resp_kind kind;
    int status;
    const char *name, *value;           /* not NUL-terminated */
    size_t name_len, value_len;
    const char *data;
    size_t len;
    const char *error;                  /* static */
};

struct ap_h1resp {
    int state;
    int status;
    int minor;                          /* HTTP/1.minor of the response */
    int no_body;                        /* HEAD request, or 204/304 */
    uint64_t left;                      /* Content-Length or chunk bytes left */
    unsigned chunk_digits;
    size_t trailer;
    unsigned chunked:1, has_length:1, close:1, keep_alive:1;
};

/* Starts a response to a request; head_request: HEAD (no body whatever the headers say). */
void ap_h1resp_init(struct ap_h1resp *p, int head_request);

/*
 * Reads from buf[0..len) until one event: returns the bytes taken (which may
 * be 0, e.g. for AP_H1R_DONE) and fills *ev. Header events need the whole line
 * in buf: when a line is incomplete, AP_H1R_MORE is returned with the bytes
 * before it taken, and the caller must keep the rest for the next call.
 * eof: the connection has ended (a body read to the end of the connection
 * completes; any other incomplete state is an error).
 */
size_t ap_h1resp_next(struct ap_h1resp *p, const char *buf, size_t len, int eof, struct ap_h1resp_ev *ev);

/* 1 once the response is complete and the connection may carry another request. */
int ap_h1resp_reusable(const struct ap_h1resp *p);

#endif
