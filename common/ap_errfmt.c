/* Error types and bodies by status and format (see ap_errfmt.h). */
#include "ap_errfmt.h"

#include <cJSON.h>
#include <stddef.h>

const char *ap_err_type(enum ap_fmt fmt, int status)
{
    if (fmt == AP_FMT_OPENAI) {
        switch (status) {
        case 403: return "permission_error";
        case 429: return "rate_limit_error";
        default: return status >= 500 ? "server_error" : "invalid_request_error";
        }
    }
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    case 504: return "timeout_error";
    default: return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
    }
}

const char *ap_err_code(int status)
{
    return status == 401 ? "invalid_api_key" : NULL;
}

cJSON *ap_err_doc(enum ap_fmt fmt, int status, const char *type, const char *code, const char *message)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(doc, "error");
    if (e == NULL) {
        cJSON_Delete(doc);
        return NULL;
    }
    if (type == NULL)
        type = ap_err_type(fmt, status);
    if (fmt == AP_FMT_OPENAI) {
        if (code == NULL)
            code = ap_err_code(status);
        cJSON_AddStringToObject(e, "message", message);
        cJSON_AddStringToObject(e, "type", type);
        if (code != NULL)
            cJSON_AddStringToObject(e, "code", code);
        else
            cJSON_AddNullToObject(e, "code");
    } else {
        /* "type" first, as Anthropic sends it. */
        cJSON_DetachItemFromObjectCaseSensitive(doc, "error");
        cJSON_AddStringToObject(doc, "type", "error");
        cJSON_AddItemToObject(doc, "error", e);
        cJSON_AddStringToObject(e, "type", type);
        cJSON_AddStringToObject(e, "message", message);
    }
    return doc;
}
