/*
 * ap_jscan: validates a JSON document in one pass without building a tree,
 * and reports the few top-level members a request is routed on.
 *
 * Every Messages / Chat Completions body must be checked (malformed JSON is a
 * 400) but most pass through untouched: building a cJSON tree of a 200 KB
 * conversation (an allocation per node) only to read `model` and `stream`
 * dominated the proxy's cost on large requests. cJSON has no validating
 * scanner, hence this one; the tree is built only when the body must change.
 */
#ifndef AP_JSCAN_H
#define AP_JSCAN_H

#include <stddef.h>

enum ap_jtype { AP_J_ABSENT, AP_J_NULL, AP_J_FALSE, AP_J_TRUE, AP_J_NUMBER, AP_J_STRING, AP_J_ARRAY, AP_J_OBJECT };

struct ap_jscan {
    enum ap_jtype root;                 /* type of the document */
    enum ap_jtype model;                /* of top-level "model" */
    const char *model_raw;              /* its string contents, still escaped (points into the input) */
    size_t model_len;
    int model_escaped;                  /* it contains a backslash escape */
    enum ap_jtype stream;               /* of top-level "stream" */
    enum ap_jtype stream_options;       /* of top-level "stream_options" */
    enum ap_jtype include_usage;        /* of stream_options.include_usage */
    enum ap_jtype max_tokens;           /* of top-level "max_tokens" */
    const char *max_tokens_raw;         /* its text when a number (points into the input) */
    enum ap_jtype max_completion_tokens;
    const char *max_completion_tokens_raw;
};

/*
 * Scans `len` bytes. Returns 0 when they are exactly one valid JSON value
 * (RFC 8259; nesting up to 1000 levels, like cJSON), -1 otherwise. Duplicate
 * members: the first one counts, as with cJSON_GetObjectItem.
 */
int ap_jscan(const char *buf, size_t len, struct ap_jscan *out);

/*
 * The output limit the request asks for: max_completion_tokens, else
 * max_tokens (a non-negative number, fractions dropped), or -1 when neither
 * is such a number. Call only while the scanned buffer is alive.
 */
long long ap_jscan_max_tokens(const struct ap_jscan *js);

#endif
