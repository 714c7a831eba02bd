/*
 * px_outbound: what one attempt sends upstream, decided without I/O (unit
 * tests reach every rule): the target (URL, credentials, format, model), the
 * headers that may go along, and the body (the client's bytes untouched when
 * nothing must change, else edited or converted).
 *
 * Routing (docs/contract.md sections 3 and 5): a model of the tier chain goes to its tier
 * in the tier's format (antigravity/upstream: Anthropic at UPSTREAM_URL;
 * external: OpenAI at its base_url); any other model goes to UPSTREAM_URL in
 * UPSTREAM_FORMAT. Allowed pass-through paths go to UPSTREAM_URL as they are.
 */
#ifndef PX_OUTBOUND_H
#define PX_OUTBOUND_H

#include <stddef.h>

#include "ap_conv.h"

struct ap_tier;
struct cJSON;

/* Where one attempt sends the request. */
struct px_target {
    const struct ap_tier *tier;         /* borrowed; NULL: UPSTREAM_URL as configured */
    enum ap_fmt fmt;                    /* what the target speaks */
    char url[2048];
    const char *auth;                   /* borrowed secret to send; NULL: none */
    const char *model;                  /* borrowed; model to send, NULL: the client's */
    long max_tokens_limit;
    unsigned external:1;                /* a third party: forward only a minimal header set */
};

/* What the target choice depends on besides the tier. */
struct px_target_in {
    const char *upstream_url;           /* UPSTREAM_URL, no trailing slash */
    int upstream_openai;                /* UPSTREAM_FORMAT=openai */
    const char *upstream_api_key;       /* NULL: none */
    int api;                            /* a Messages / Chat Completions call (else pass-through) */
    enum ap_fmt client_fmt;
    const char *raw_path;               /* the client's path as sent, no query */
    const char *query;                  /* the client's query as sent, or NULL */
};

/* Fills *t for tier (NULL: the configured upstream). 0, or -1 when the URL does not fit. */
int px_target_for(const struct px_target_in *in, const struct ap_tier *tier, struct px_target *t);

/* 1 when a client request header must not reach the upstream (hop-by-hop, credentials, ...). */
int px_outbound_drop_header(const char *name, const char *connection);

/* Adds one header line ("Name: value"); 0, or -1 when out of memory. */
typedef int (*px_outbound_add_fn)(void *arg, const char *line);

struct px_header_in {
    const char *const *names;           /* the client's headers, as sent */
    const char *const *values;
    size_t n;
    int stream;                         /* the client asked for a stream */
    int body_rewritten;                 /* the body is ours (JSON) */
    const char *request_id;
    enum ap_fmt client_fmt;
};

/* Every header line the target gets. 0, or -1 when out of memory. */
int px_outbound_headers(const struct px_header_in *in, const struct px_target *t, px_outbound_add_fn add,
                        void *arg);

/* What intake learned of a Messages / Chat Completions body. */
struct px_body_facts {
    enum ap_fmt client_fmt;
    const char *model;                  /* requested model */
    int stream;
    int client_usage;                   /* OpenAI stream_options.include_usage */
    long long max_tokens;               /* output limit asked for (max_completion_tokens, else max_tokens); -1: none */
};

/* The model the target serves (the tier's, else the client's). */
const char *px_outbound_model(const struct px_body_facts *f, const struct px_target *t);

/* 1 when the body must be parsed (something may change), 0 when it goes as it is. */
int px_outbound_needs_tree(const struct px_body_facts *f, const struct px_target *t);

/*
 * The body for the target from the client's tree: *out NULL when the client's
 * bytes go as they are, else a new text (cJSON_free). 0; -1 with *err when
 * the request cannot be sent to this target (answer 400); -2 when out of memory.
 * Every field that limits output (max_tokens, max_completion_tokens) is
 * clamped to the tier's max_tokens_limit.
 */
int px_outbound_body(const struct px_body_facts *f, const struct cJSON *client, const struct px_target *t,
                     char **out, size_t *out_len, const char **err);

#endif
