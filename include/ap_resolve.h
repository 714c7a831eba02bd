/*
 * ap_resolve: a host name to a numeric address without blocking the loop
 * (evdns; hiredis 0.14.1 would call getaddrinfo itself, and block). IP
 * literals, and every name when there is no evdns base, are answered at once.
 * IPv4 is preferred when a name has both.
 */
#ifndef AP_RESOLVE_H
#define AP_RESOLVE_H

struct evdns_base;
struct ap_resolve;

/* addr: a numeric address (borrowed for the call), or NULL with why. */
typedef void (*ap_resolve_fn)(void *arg, const char *addr, const char *why);

/*
 * Calls fn exactly once, unless cancelled first. Returns the pending request,
 * or NULL when fn has already been called (literals, cached answers, /etc/hosts).
 */
struct ap_resolve *ap_resolve(struct evdns_base *dns, const char *host, ap_resolve_fn fn, void *arg);

/* fn will not be called. Only for a request whose fn has not run. */
void ap_resolve_cancel(struct ap_resolve *q);

#endif
