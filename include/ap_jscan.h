/*
 * ap_jscan: validates a JSON document in one pass without building a tree,
 * and reports the few top-level members a request is routed, clamped and
 * counted on.
 *
 * Every Messages / Chat Completions body must be checked (malformed JSON is a
 * 400) but most pass through untouched: building a cJSON tree of a 200 KB
 * conversation (an allocation per node) only to read `model` and `stream`
 * dominated the proxy's cost on large requests. cJSON has no validating
 * scanner, hence this one; the tree is built only when the body must change.
 *
 * The body must be read exactly as the upstream will read it, or a client can
 * have one model routed and booked while another is served. So:
 *   - an object that names a member twice, anywhere in the document, is
 *     refused (AP_JSCAN_DUPLICATE): parsers disagree on which one counts
 *     (cJSON takes the first, Python and most servers the last);
 *   - member names are compared after their escapes are decoded
 *     ("mod\u0065l" is "model", surrogate pairs and "\/" included), and the
 *     members below are recognised by their decoded names;
 *   - a member name holding U+0000 is refused (AP_JSCAN_NUL_NAME): cJSON cuts
 *     names there, so "model\u0000x" would become a second "model";
 *   - what cJSON refuses is refused too (nesting past 1000 levels, numbers of
 *     64 characters or more, lone surrogates), so that a body this scan
 *     accepts always parses, with the same members, when a tree is needed.
 *
 * Trees of client bytes, and why they only ever see scan-approved input:
 *   - a Messages / Chat Completions body is scanned on arrival, and parsed
 *     (when it must change) from the same bytes, which do not change in
 *     between: the request owns its input buffer;
 *   - every other client body (admin API, keys.json, Lark callbacks, tool
 *     arguments inside a converted body) is read with ap_json_parse_client
 *     (ap_json.h), which runs this scan before cJSON;
 *   - every other cJSON parse in the tree reads an upstream's answer, Redis
 *     or our own configuration, never a client's bytes.
 */
#ifndef AP_JSCAN_H
#define AP_JSCAN_H

#include <stddef.h>

enum ap_jtype { AP_J_ABSENT, AP_J_NULL, AP_J_FALSE, AP_J_TRUE, AP_J_NUMBER, AP_J_STRING, AP_J_ARRAY, AP_J_OBJECT };

/* A malformed document is AP_JSCAN_INVALID whatever else it holds; the others come first-seen. */
enum ap_jscan_rc {
    AP_JSCAN_OK = 0,
    AP_JSCAN_INVALID = -1,   /* not exactly one valid JSON value */
    AP_JSCAN_DUPLICATE = -2, /* valid JSON, but an object names a member twice (dup_name says which) */
    AP_JSCAN_NUL_NAME = -3,  /* valid JSON, but a member name holds U+0000 */
};

/* Largest integer a token limit may have: what every upstream accepts in an int32. */
#define AP_JSCAN_INT_MAX 2147483647L

/* Bytes of the decoded model kept (with the terminating NUL). */
#define AP_JSCAN_MODEL_MAX 256

/* A top-level number that ends up an integer (max_tokens and the like). */
struct ap_jnum {
    enum ap_jtype type;
    int in_range;                       /* 1: an integer (1e3 and 5.0 count) within 1..AP_JSCAN_INT_MAX */
    long value;                         /* when in_range */
};

struct ap_jscan {
    enum ap_jtype root;                 /* type of the document */
    enum ap_jtype model;                /* of top-level "model" */
    char model_str[AP_JSCAN_MODEL_MAX]; /* its decoded string, NUL-terminated (cut when too long) */
    size_t model_str_len;               /* decoded length in bytes, whole (>= AP_JSCAN_MODEL_MAX: cut) */
    int model_nul;                      /* the decoded model holds U+0000 */
    const char *model_raw;              /* its raw contents, still escaped (points into the input) */
    size_t model_len;                   /* raw length */
    int model_escaped;                  /* the raw contents hold a backslash escape */
    enum ap_jtype stream;               /* of top-level "stream" */
    enum ap_jtype stream_options;       /* of top-level "stream_options" */
    enum ap_jtype include_usage;        /* of stream_options.include_usage */
    /* An upstream's answer (read with the same scan: its usage without a tree of the whole answer). */
    enum ap_jtype content;              /* of top-level "content" (Anthropic answer) */
    enum ap_jtype choices;              /* of top-level "choices" (OpenAI answer) */
    enum ap_jtype usage;                /* of top-level "usage" */
    const char *usage_raw;              /* its raw JSON text (points into the input) */
    size_t usage_len;
    struct ap_jnum max_tokens;          /* top-level "max_tokens" */
    struct ap_jnum max_completion_tokens; /* top-level "max_completion_tokens" */
    int has_nul;                        /* a string value holds U+0000 (a cJSON tree would cut it) */
    size_t error_offset;                /* when not AP_JSCAN_OK: where the scan stopped, or the name at fault */
    const char *dup_name;               /* AP_JSCAN_DUPLICATE: the name, raw (points into the input) */
    size_t dup_len;
};

/*
 * Scans `len` bytes (no NUL terminator needed). Returns AP_JSCAN_OK when they
 * are exactly one valid JSON value (RFC 8259) with no duplicated member name,
 * else one of the negative codes above. Linear in len; allocates only for
 * objects with many members or long escaped names.
 */
int ap_jscan(const char *buf, size_t len, struct ap_jscan *out);

/* A client-facing message for a code of ap_jscan ("duplicate member name", ...); static. */
const char *ap_jscan_strerror(int rc);

#endif
