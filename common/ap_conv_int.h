/*
 * ap_conv_int: what the ap_conv_*.c files share and callers do not need.
 *
 *   ap_conv_util.c        ids, stop reasons, usage objects, error objects
 *   ap_conv_msg.c         one assistant message, both ways (requests and responses)
 *   ap_conv_req.c         request bodies
 *   ap_conv_resp.c        response and error bodies
 *   ap_conv_stream.c      the stream object: SSE parsing, emitting, endings, getters
 *   ap_conv_stream_a2o.c  Anthropic events -> OpenAI chunks
 *   ap_conv_stream_o2a.c  OpenAI chunks -> Anthropic events
 */
#ifndef AP_CONV_INT_H
#define AP_CONV_INT_H

#include "ap_conv.h"
#include "ap_sse.h"
#include "ap_usage.h"

#include <cJSON.h>

/* ---- ap_conv_util.c ---- */

/* The string member `name` of obj, or NULL when absent or not a string. */
const char *ap_conv_str(const cJSON *obj, const char *name);

/*
 * A string built by appending, with its length kept so that n appends cost
 * O(total length), not O(n^2) (a conversation can hold 100k text blocks).
 */
struct ap_conv_text {
    char *s;     /* owned, NUL-terminated; NULL until the first append */
    size_t len;
    size_t cap;
};

/*
 * Appends `sep` (only when something was appended before, even "") and `s`.
 * Returns 0, or -1 (out of memory; the text unchanged).
 */
int ap_conv_text_add(struct ap_conv_text *t, const char *sep, const char *s);

/* Frees the text and empties it. */
void ap_conv_text_free(struct ap_conv_text *t);

/*
 * Id for the other format: `src` without its known prefix ("msg_",
 * "chatcmpl-") behind `prefix`; a random suffix when src is NULL or empty.
 * Returns a malloc'd string or NULL.
 */
char *ap_conv_id(const char *src, const char *prefix);

/* Static stop reason for an OpenAI finish_reason (NULL allowed); see the table in ap_conv.h. */
const char *ap_conv_stop_o2a(const char *finish_reason, int made_tool_calls);
/* Static finish_reason for an Anthropic stop_reason (NULL allowed). */
const char *ap_conv_stop_a2o(const char *stop_reason);

/* New usage objects in each format, from cumulative usage. */
cJSON *ap_conv_usage_openai(const struct ap_usage *u);
cJSON *ap_conv_usage_anthropic(const struct ap_usage *u);

/* New error bodies: {"type":"error","error":{type,message}} / {"error":{message,type,code:null}}. */
cJSON *ap_conv_error_anthropic(const char *type, const char *message);
cJSON *ap_conv_error_openai(const char *type, const char *message);

/* Anthropic error type for an error object of an OpenAI stream or body (type, numeric code). */
const char *ap_conv_error_type_o2a(const cJSON *error);

/* ---- ap_conv_msg.c ---- */

/*
 * Anthropic assistant content (string or block list) -> a new OpenAI
 * assistant message. NULL with *err on a malformed block.
 */
cJSON *ap_conv_assistant_a2o(const cJSON *content, const char **err);

/*
 * OpenAI assistant message -> a new Anthropic block list. for_upstream=1 when
 * the result is sent to an Anthropic API (strict: no non-standard fields, no
 * unsigned thinking). NULL with *err on a malformed message.
 */
cJSON *ap_conv_assistant_o2a(const cJSON *msg, int for_upstream, const char **err);

/* ---- ap_conv_stream.c: state shared by the two stream directions ---- */

enum ap_conv_block { AP_CONV_NONE, AP_CONV_TEXT, AP_CONV_THINKING, AP_CONV_TOOL };

struct ap_conv_tool {
    int oai_index; /* tool_calls[].index in the OpenAI stream */
    int block;     /* Anthropic content block index */
};

struct ap_conv_stream {
    enum ap_fmt from;
    struct ap_sse sse;
    struct evbuffer *out;  /* borrowed, set during feed/end only */
    char *model;           /* owned: model to report, NULL: the upstream's */
    char *up_model;        /* owned: the upstream's model */
    char *id;              /* owned: client-format message id, set by the first event */
    int64_t created;
    struct ap_usage usage;

    /* o2a: OpenAI chunks -> Anthropic events */
    int next_block;              /* index of the next content block */
    int open_block;              /* index of the open block, if open_kind != NONE */
    enum ap_conv_block open_kind;
    struct ap_conv_tool *tools;  /* owned: one per tool call seen */
    int ntools, tools_cap;
    const char *stop_reason;     /* static: from finish_reason, NULL until seen */

    /* a2o: Anthropic events -> OpenAI chunks */
    int *tool_of_block;          /* owned: OpenAI tool index per Anthropic block, -1 if none */
    int nblocks;
    int ntool_calls;

    unsigned client_wants_usage:1;
    unsigned started:1;          /* message_start / the role chunk was emitted */
    unsigned content_started:1;  /* text, thinking or a tool call was emitted */
    unsigned finish_sent:1;      /* a2o: the finish_reason chunk was emitted */
    char error[256];             /* "type: message" of the upstream's error, when failed */
    unsigned failed:1;           /* the upstream sent an error */
    unsigned done:1;             /* the upstream's proper end was seen */
    unsigned finished:1;         /* the client's stream got its ending: ignore the rest */
    unsigned broken:1;           /* unrecoverable input */
};

/* Writes one SSE event (event may be NULL) whose data is `obj` printed; deletes obj. 0/-1. */
int ap_conv_stream_emit(struct ap_conv_stream *s, const char *event, cJSON *obj);
/* Writes one SSE event whose data is `text` as is. 0/-1. */
int ap_conv_stream_emit_text(struct ap_conv_stream *s, const char *event, const char *text);
/* The model to report: the caller's, else the upstream's, else "". */
const char *ap_conv_stream_model(const struct ap_conv_stream *s);

/*
 * Per direction: one SSE event, and the upstream's end. `failure` says why the
 * upstream broke off (NULL: it closed cleanly). Called only before the client's
 * stream is finished. 0/-1.
 */
int ap_conv_a2o_event(struct ap_conv_stream *s, const char *event, const char *data, size_t len);
int ap_conv_a2o_end(struct ap_conv_stream *s, const char *failure);
int ap_conv_o2a_event(struct ap_conv_stream *s, const char *data, size_t len);
int ap_conv_o2a_end(struct ap_conv_stream *s, const char *failure);

#endif
