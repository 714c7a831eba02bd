/*
 * ap_conv: Anthropic Messages <-> OpenAI Chat Completions conversion.
 *
 * A client may speak either API while the tier chosen for it speaks the other.
 * This module turns request bodies, response bodies, error bodies and SSE
 * streams of one format into the other, without flattening anything the target
 * can express (tool calls stay tool calls, thinking stays reasoning). It is
 * pure logic: cJSON in, cJSON out; stream bytes in, evbuffer out; no event
 * loop, no I/O, no clock except a default "created" time.
 *
 *   client --(A req)--> ap_conv_req_a2o --(O req)--> OpenAI tier
 *   client <-(A resp)-- ap_conv_resp_o2a <-(O resp)- OpenAI tier
 *   client <-(A SSE)--- ap_conv_stream(O->A) <-(O SSE)-- OpenAI tier
 *   (and the mirror image for an OpenAI client in front of an Anthropic tier)
 *
 * Mapping table ("a2o": Anthropic -> OpenAI, "o2a": OpenAI -> Anthropic).
 * Fields not listed are dropped.
 *
 * | what              | Anthropic                                  | OpenAI                                          |
 * |-------------------|--------------------------------------------|-------------------------------------------------|
 * | model             | model                                      | model (opts.model replaces it, both ways)       |
 * | system prompt     | system: "s"                                | first message {"role":"system","content":"s"}  |
 * |                   | system: [{text a},{text b}]                | ONE first system message: texts joined with a blank line ("a\n\nb"); empty blocks skipped, cache_control dropped |
 * |                   | o2a: every system/developer message, wherever it stands, is hoisted into `system` in order: one text -> string, several -> block list |
 * | user text         | content "s" / [{type:text}]                | content "s" / [{type:text}] (string stays string, list stays list) |
 * | image             | {type:image,source:{type:base64,media_type:M,data:D}} | {type:image_url,image_url:{url:"data:M;base64,D"}} |
 * |                   | {type:image,source:{type:url,url:U}}       | {type:image_url,image_url:{url:U}} (detail dropped) |
 * | assistant text    | text blocks                                | content string (blocks concatenated with nothing between, as a stream client would) |
 * | thinking          | {type:thinking,thinking,signature}         | assistant reasoning_content (+ non-standard reasoning_signature) |
 * |                   | several thinking blocks: texts joined with "\n\n", no signature (no single signature covers them) |
 * |                   | redacted_thinking: dropped a2o             | o2a request: reasoning without signature dropped (Anthropic rejects unsigned thinking) |
 * |                   | o2a response/stream: thinking block with signature "" when none is known |
 * |                   | o2a also reads `reasoning` (vLLM/OpenRouter name) when reasoning_content is absent |
 * | tool definitions  | {name,description,input_schema}            | {type:function,function:{name,description,parameters}} |
 * |                   | server tools (any `type` but custom): rejected a2o | function.strict dropped; non-function tools rejected o2a; o2a missing parameters -> {"type":"object","properties":{}} |
 * | tool_choice       | {type:auto}/{type:any}/{type:tool,name}/{type:none} | "auto"/"required"/{type:function,function:{name}}/"none" |
 * |                   | tool_choice.disable_parallel_tool_use:true | parallel_tool_calls:false (o2a: added to tool_choice, {type:auto} if none; not with none) |
 * |                   | both ways: dropped when the request has no tools (both APIs refuse it) |
 * | tool call         | assistant {type:tool_use,id,name,input}    | assistant tool_calls[{id,type:function,function:{name,arguments:"<JSON>"}}] |
 * |                   | o2a: arguments parsed into input; not a JSON object -> input {} (response: raw text kept in non-standard raw_arguments; request: raw dropped, Anthropic rejects extra fields); a2o uses raw_arguments verbatim when present |
 * | tool result       | user {type:tool_result,tool_use_id,content,is_error} | {"role":"tool","tool_call_id","content"} in block order, before the turn's other user content |
 * |                   | content string -> string; text blocks -> joined with "\n"; images in a result -> moved to the user message that follows the tool messages |
 * |                   | is_error:true                              | non-standard "is_error":true on the tool message |
 * |                   | o2a: tool messages and the user message after them merge into one user turn; consecutive same-role messages are merged (Anthropic needs alternation) |
 * | max tokens        | max_tokens                                 | max_tokens (a2o writes it; o2a reads max_completion_tokens first, then max_tokens, default 4096) |
 * |                   | both ways clamped to opts.max_tokens_limit when > 0; a limit that is not an integer from 1 to 2^31-1 is refused |
 * | sampling          | temperature, top_p                         | temperature, top_p (o2a: temperature clamped to 1, Anthropic's maximum) |
 * |                   | top_k: dropped a2o                         | |
 * | stop              | stop_sequences [..]                        | stop "s" / [..] |
 * | user id           | metadata.user_id                           | user |
 * | stream            | stream                                     | stream (+ stream_options.include_usage when opts.stream_usage; o2a drops stream_options) |
 * | thinking budget   | thinking {type:enabled,budget_tokens:B}    | reasoning_effort: B<4096 low, <16384 medium, else high |
 * |                   | o2a: low 2048 / medium 8192 / high 24576, capped to max_tokens-1, dropped under 1024 (Anthropic's minimum) or for minimal/none; temperature and top_p then dropped (Anthropic rejects them with thinking) |
 * | n                 | -                                          | n > 1 rejected (Anthropic returns one choice) |
 * | dropped on purpose| top_k, cache_control, service_tier, container, mcp_servers, stop_sequence (which one matched) | response_format, logprobs, top_logprobs, seed, presence_penalty, frequency_penalty, logit_bias, store, modalities, audio, prediction, name on messages |
 * | unsupported       | document and other user blocks: rejected   | input_audio, file and other parts, role function: rejected; legacy functions/function_call params: dropped |
 * | U+0000 in strings | kept both ways (requests, responses, streams, tool arguments), never cut | |
 * | stop reason       | end_turn / stop_sequence / pause_turn      | stop |
 * |                   | max_tokens / model_context_window_exceeded | length |
 * |                   | tool_use                                   | tool_calls (o2a: also "stop" when tool calls were made, as some servers send) |
 * |                   | refusal                                    | content_filter (Anthropic's own refusal stop reason) |
 * | usage             | input + cache_read + cache_creation        | prompt_tokens |
 * |                   | cache_read_input_tokens                    | prompt_tokens_details.cached_tokens |
 * |                   | output_tokens                              | completion_tokens (+ total_tokens a2o) |
 * | ids               | msg_X                                      | chatcmpl-X (suffix kept; tool call ids kept as they are) |
 * | refusal text      | text block                                 | message.refusal / delta.refusal (o2a only) |
 * | errors            | {"type":"error","error":{type,message}}    | {"error":{message,type,code:null}}; type chosen by HTTP status |
 * | stream envelope   | message_start (+ one ping after it, o2a)   | first chunk delta {role:"assistant",content:""}; every chunk has the same id, created, model |
 * | stream text       | text block: content_block_start/text_delta/content_block_stop | delta.content |
 * | stream thinking   | thinking block: thinking_delta, signature_delta | delta.reasoning_content, delta.reasoning_signature |
 * | stream tool call  | tool_use block {id,name,input:{}} + input_json_delta | delta.tool_calls[{index,id,type,function:{name,arguments:""}}] then [{index,function:{arguments}}] |
 * |                   | o2a: one block per tool call index, a block closed when another kind starts |
 * | stream end        | message_delta {stop_reason, usage} + message_stop | chunk with finish_reason, [chunk choices:[] + usage when the client asked], data: [DONE] |
 * | stream usage      | message_start / message_delta usage        | usage chunk (choices: []) or usage on any chunk |
 * | stream error      | event: error {"type":"error","error":{type,message}}, nothing after | data: {"error":{message,type,code:null}} then data: [DONE] |
 * |                   | a broken or unfinished upstream gives the same error ending (api_error), never a faked message_stop / finish |
 * |                   | ping and content_block_stop: dropped a2o   | OpenAI error types: server_error -> api_error, rate limits -> rate_limit_error, numeric code -> by status |
 */
#ifndef AP_CONV_H
#define AP_CONV_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;
struct evbuffer;
struct ap_usage;

enum ap_fmt { AP_FMT_ANTHROPIC, AP_FMT_OPENAI };

struct ap_conv_opts {
    const char *model;     /* model to put in the converted request (borrowed; NULL keeps the client's) */
    long max_tokens_limit; /* >0: clamp max_tokens to this */
    int  stream_usage;     /* a2o: when streaming, set stream_options.include_usage=true */
};

/*
 * Converts a client request body to the other format. Returns a new object
 * (the caller deletes it), or NULL with *err set to a static message when the
 * request is invalid or uses something the target cannot express (a client
 * error: answer 400 with it).
 */
struct cJSON *ap_conv_req_a2o(const struct cJSON *anthropic_req, const struct ap_conv_opts *o,
                              const char **err);
struct cJSON *ap_conv_req_o2a(const struct cJSON *openai_req, const struct ap_conv_opts *o,
                              const char **err);

/*
 * Converts a complete non-stream response body. `model` is the model name to
 * report to the client (borrowed, may be NULL: keep the upstream's). Returns a
 * new object, or NULL when the body is not a response we can convert (not an
 * object, or malformed content).
 * ap_conv_resp_a2o stamps "created" with the current time.
 */
struct cJSON *ap_conv_resp_o2a(const struct cJSON *openai_resp, const char *model);
struct cJSON *ap_conv_resp_a2o(const struct cJSON *anthropic_resp, const char *model);

/*
 * Converts an error body of either format (any JSON or text, may be NULL or
 * empty) into the error object of format `to`. The message is the body's own
 * when it has one, else the body text, else a generic one naming the status.
 * The type comes from the status (ap_conv_error_type). Returns a new object.
 */
struct cJSON *ap_conv_error(enum ap_fmt to, int status, const char *body, size_t len);

/*
 * Error type for an HTTP status: 400 invalid_request_error, 401
 * authentication_error, 402 billing_error, 403 permission_error, 404
 * not_found_error, 413 request_too_large, 429 rate_limit_error, 503/529
 * overloaded_error, 504 timeout_error, other 4xx invalid_request_error,
 * anything else api_error. Returns a static string.
 */
const char *ap_conv_error_type(int status);

/*
 * Incremental stream conversion: feed upstream bytes as they arrive (split
 * anywhere), get client-format SSE bytes appended to `out`. The output does
 * not depend on how the input was split.
 */
struct ap_conv_stream_opts {
    const char *model;      /* model to report (borrowed, copied; NULL: the upstream's) */
    int client_wants_usage; /* a2o: end with a usage chunk (choices: []); o2a ignores */
    int64_t created;        /* a2o: "created" of every chunk; 0: the time of ap_conv_stream_new */
};

struct ap_conv_stream;

/* Returns a new converter, or NULL when from == to (nothing to convert) or out of memory. */
struct ap_conv_stream *ap_conv_stream_new(enum ap_fmt from, enum ap_fmt to,
                                          const struct ap_conv_stream_opts *o);

/*
 * Feeds upstream bytes. Returns 0, or -1 on unrecoverable input (an event that
 * is not JSON, or too large); the converter then ignores further input and
 * ap_conv_stream_end gives the client the error ending. Input after the
 * upstream's end or error is ignored.
 */
int ap_conv_stream_feed(struct ap_conv_stream *s, const char *buf, size_t len, struct evbuffer *out);

/*
 * Upstream ended (upstream_ok=0: the connection broke). Emits what the client
 * needs to see a well-formed ending. If the upstream did not finish, that is an
 * error in the client's format (Anthropic: `event: error`; OpenAI: a
 * `data: {"error":{...}}` chunk then `data: [DONE]`), never a faked success.
 * One exception: an OpenAI upstream that sent its finish_reason and then closed
 * cleanly without `data: [DONE]` is taken as finished. Calling it again, or
 * after the upstream's own end or error, emits nothing. Returns 0 or -1 (out of memory).
 */
int ap_conv_stream_end(struct ap_conv_stream *s, int upstream_ok, struct evbuffer *out);

/* Usage seen so far (zeros and seen=0 when none). */
void ap_conv_stream_usage(const struct ap_conv_stream *s, struct ap_usage *u);

/*
 * 1 once any content (text, thinking or a tool call) has been emitted to the
 * client; the envelope (message_start, ping, the role chunk) does not count,
 * so a caller that holds the output back until then can still retry elsewhere.
 */
int ap_conv_stream_content_started(const struct ap_conv_stream *s);

/* 1 if the upstream sent an error event / error chunk. */
int ap_conv_stream_failed(const struct ap_conv_stream *s);

/* "type: message" of that error ("" when none); borrowed. */
const char *ap_conv_stream_error(const struct ap_conv_stream *s);

/*
 * 1 once the upstream's proper end was seen without an error: message_stop,
 * [DONE], or the finish_reason-then-clean-close exception of ap_conv_stream_end.
 */
int ap_conv_stream_done(const struct ap_conv_stream *s);

/* Frees the converter; NULL is allowed. */
void ap_conv_stream_free(struct ap_conv_stream *s);

#endif
