/*
 * Error formats of the proxy's endpoints, without I/O: which format a path
 * speaks, the error body in that format, and the reason phrase of a status.
 * Shared by the connection layer (framing errors) and every handler.
 */
#include "px.h"

#include "ap_errfmt.h"

#include <cJSON.h>
#include <string.h>

enum px_fmt px_fmt_for_path(const char *path)
{
    if (strncmp(path, "/v1/chat/completions", 20) == 0)
        return PX_FMT_OPENAI;
    if (strncmp(path, "/v1/", 4) == 0)
        return PX_FMT_ANTHROPIC;
    return PX_FMT_ADMIN;
}

cJSON *px_error_doc(enum px_fmt fmt, int status, const char *message)
{
    if (fmt == PX_FMT_ADMIN) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "detail", message);
        return doc;
    }
    return ap_err_doc(fmt == PX_FMT_OPENAI ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC, status, NULL, NULL, message);
}

const char *px_status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Overloaded";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

