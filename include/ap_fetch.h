/*
 * ap_fetch: one small HTTP request on curl multi with a whole-body answer,
 * for the gateway's own calls (Lark's OAuth and card webhooks, token
 * refresh), not for proxied traffic.
 */
#ifndef AP_FETCH_H
#define AP_FETCH_H

#include <stddef.h>

struct ap_curl;
struct ap_fetch;

/*
 * Called once: status 0 and err set when there was no HTTP answer (refused,
 * timeout...). body is borrowed for the call (NUL-terminated).
 */
typedef void (*ap_fetch_cb)(void *arg, int status, const char *body, size_t len, const char *err);

/*
 * Starts a request: POST with `body` (JSON) when body is not NULL, else GET.
 * `headers` is a NULL-terminated list of "Name: value" (may be NULL). Returns
 * a non-NULL handle, or NULL when it could not start (cb not called).
 */
struct ap_fetch *ap_fetch_start(struct ap_curl *c, const char *url, const char *const *headers,
                                const char *body, size_t len, long timeout_ms, ap_fetch_cb cb, void *arg);


#endif
