/*
 * ap_sse: incremental Server-Sent Events parser and writer.
 *
 * Upstream streams reach us in slices cut anywhere (inside a field name, between
 * CR and LF, in the middle of a UTF-8 sequence). The parser keeps the partial
 * line and the event being assembled, and calls back once per complete event,
 * exactly as the WHATWG EventSource algorithm dispatches them: "data" lines are
 * joined with "\n", one leading space after the colon is dropped, comment lines
 * (":...") are ignored, and an event with no data line is not dispatched.
 * Written by hand because none of our dependencies parses SSE.
 */
#ifndef AP_SSE_H
#define AP_SSE_H

#include <stddef.h>

struct evbuffer;

/*
 * Called once per event. `event` is the "event:" field ("" when absent),
 * `data` is NUL-terminated (data_len excludes the NUL). Both are borrowed and
 * valid only during the call. Return 0 to go on, -1 to stop parsing (feed then
 * returns -1 too).
 */
typedef int (*ap_sse_event_cb)(void *arg, const char *event, const char *data, size_t data_len);

struct ap_sse {
    char   *line;        /* owned: the current, unterminated line */
    size_t  line_len;
    size_t  line_cap;
    char   *data;        /* owned: data lines of the event so far */
    size_t  data_len;
    size_t  data_cap;
    char    event[64];   /* "event:" field; longer names are truncated */
    size_t  max_event;   /* cap on line + data bytes of one event */
    unsigned has_data:1; /* a data line was seen for this event */
    unsigned last_cr:1;  /* previous slice ended in CR: a leading LF is part of it */
};

/* Prepares `p`; max_event bounds the memory one event may take (0: 16 MiB). */
void ap_sse_init(struct ap_sse *p, size_t max_event);

/* Frees what `p` owns; `p` may be re-initialised afterwards. */
void ap_sse_free(struct ap_sse *p);

/*
 * Feeds `len` bytes. Returns 0, or -1 when an event exceeded max_event or the
 * callback asked to stop (the parser is then unusable until re-initialised).
 */
int ap_sse_feed(struct ap_sse *p, const char *buf, size_t len, ap_sse_event_cb cb, void *arg);

/* Appends one event ("event: E\n" when E is non-empty, one "data:" line per line of data, "\n"). */
int ap_sse_write(struct evbuffer *out, const char *event, const char *data, size_t data_len);

#endif
