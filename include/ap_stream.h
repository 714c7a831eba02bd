/*
 * ap_stream: the client's view of one upstream SSE stream.
 *
 * Whatever the two formats, the relay feeds upstream bytes in and gets the
 * bytes the client must see, plus what it needs to decide things: usage so
 * far, whether content has begun (before that, a failed attempt can still be
 * retried elsewhere), whether the upstream ended properly or sent an error.
 *
 *   same format      bytes pass through untouched; a tap reads them
 *   same, OpenAI     as above, except the usage chunk we asked for on the
 *                    client's behalf is removed when the client did not ask
 *   other format     ap_conv_stream converts event by event
 *
 * Pure logic: no event loop, no I/O. Output never depends on how the input
 * was split.
 */
#ifndef AP_STREAM_H
#define AP_STREAM_H

#include <stddef.h>

#include "ap_conv.h"
#include "ap_usage.h"

struct evbuffer;
struct ap_stream;

struct ap_stream_opts {
    enum ap_fmt from;           /* what the upstream speaks */
    enum ap_fmt to;             /* what the client speaks */
    const char *model;          /* conversion: model to report (NULL: the upstream's) */
    int client_wants_usage;     /* OpenAI client asked stream_options.include_usage */
};

/* NULL on allocation failure. */
struct ap_stream *ap_stream_new(const struct ap_stream_opts *o);
void ap_stream_free(struct ap_stream *s);

/* Feeds upstream bytes; appends client bytes to out. 0, or -1 when the input is unusable. */
int ap_stream_feed(struct ap_stream *s, const char *buf, size_t len, struct evbuffer *out);

/*
 * 1 when the client gets the upstream's bytes unchanged (same format, no
 * usage chunk to remove): the caller may then relay its own bytes and only
 * tap them (ap_stream_tap), sparing a copy per event.
 */
int ap_stream_passthrough(const struct ap_stream *s);
/* Reads bytes that the caller relays itself (passthrough streams only). 0, or -1 when unusable. */
int ap_stream_tap(struct ap_stream *s, const char *buf, size_t len);

/*
 * The upstream ended (upstream_ok=0: the connection broke). If it did not end
 * properly and sent no error itself, appends an error ending in the client's
 * format; never fakes a successful end.
 */
int ap_stream_end(struct ap_stream *s, int upstream_ok, struct evbuffer *out);

void ap_stream_usage(const struct ap_stream *s, struct ap_usage *u);
/* 1 once text, thinking or a tool call has reached the output. */
int ap_stream_content_started(const struct ap_stream *s);
/* 1 once the upstream's proper end was seen. */
int ap_stream_done(const struct ap_stream *s);
/* 1 if the upstream sent an error event or error chunk. */
int ap_stream_failed(const struct ap_stream *s);
/* The upstream's error message when ap_stream_failed (borrowed; "" if none). */
const char *ap_stream_error(const struct ap_stream *s);

#endif
