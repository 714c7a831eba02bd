/*
 * ap_usage: token usage of one response, and where to find it in each wire format.
 *
 * Anthropic reports usage in the JSON body, or in a stream in message_start
 * (input side, output so far) and message_delta (cumulative output, sometimes
 * input too). OpenAI reports it in the body, or in the last chunk when the
 * request set stream_options.include_usage. Values are cumulative, so a later
 * report replaces an earlier one field by field.
 */
#ifndef AP_USAGE_H
#define AP_USAGE_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;

struct ap_usage {
    int64_t input;          /* input_tokens / prompt_tokens (without cached) */
    int64_t output;         /* output_tokens / completion_tokens */
    int64_t cache_creation; /* cache_creation_input_tokens */
    int64_t cache_read;     /* cache_read_input_tokens / prompt_tokens_details.cached_tokens */
    unsigned seen:1;        /* some usage was reported */
};

/* Merges an Anthropic `usage` object (fields present replace ours). */
void ap_usage_merge_anthropic(struct ap_usage *u, const struct cJSON *usage);

/* Merges an OpenAI `usage` object. prompt_tokens includes cached tokens: we store input without them. */
void ap_usage_merge_openai(struct ap_usage *u, const struct cJSON *usage);

/*
 * Looks at one Anthropic stream event (name and JSON data) and merges any
 * usage it carries. Cheap for events that cannot carry usage (not parsed).
 * Returns 1 when the event was "message_stop", 0 otherwise.
 */
int ap_usage_anthropic_event(struct ap_usage *u, const char *event, const char *data, size_t len);

/* Merges usage from a complete Anthropic or OpenAI JSON response body. */
void ap_usage_anthropic_body(struct ap_usage *u, const char *body, size_t len);
void ap_usage_openai_body(struct ap_usage *u, const char *body, size_t len);

#endif
