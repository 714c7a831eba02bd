/*
 * ap_errfmt: the one table of error types by HTTP status, for both wire
 * formats. Every error we produce (our own refusals, converted upstream
 * errors, stream error endings) takes its type from here, so a status never
 * means two different types in two places.
 */
#ifndef AP_ERRFMT_H
#define AP_ERRFMT_H

#include "ap_conv.h"

/*
 * Anthropic: 400 invalid_request_error, 401 authentication_error, 402
 * billing_error, 403 permission_error, 404 not_found_error, 413
 * request_too_large, 429 rate_limit_error, 503/529 overloaded_error, 504
 * timeout_error, other 4xx invalid_request_error, other 5xx api_error.
 * OpenAI: 403 permission_error, 429 rate_limit_error, 5xx server_error,
 * other 4xx invalid_request_error (401 too, with code invalid_api_key, as
 * OpenAI answers it).
 * Returns a static string.
 */
const char *ap_err_type(enum ap_fmt fmt, int status);

/* OpenAI's `code` for a status (401: "invalid_api_key"), or NULL for null. */
const char *ap_err_code(int status);

/*
 * The error body of format fmt: Anthropic {"type":"error","error":{type,
 * message}}, OpenAI {"error":{message,type,code}}. type NULL: by status;
 * code NULL: by status (OpenAI only). Returns a new object, NULL when out of memory.
 */
struct cJSON *ap_err_doc(enum ap_fmt fmt, int status, const char *type, const char *code, const char *message);

#endif
