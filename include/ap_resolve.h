/*
 * ap_resolve: a host name to a numeric address without blocking the loop.
 *
 * IP literals are answered at once. Names go to the system's resolver
 * (getaddrinfo) on a short-lived thread, and the answer comes back through a
 * pipe watched by the loop. Why not libevent's evdns: it spreads queries
 * round-robin over every nameserver in resolv.conf and takes any one's "no
 * such name" as final. Container runtimes list their own DNS first (the only
 * one that knows service names such as `redis`) and the host's after it
 * (podman's aardvark-dns does), so evdns failed every other lookup there;
 * getaddrinfo follows nsswitch (/etc/hosts included) and asks the nameservers
 * in order, as every other program on the machine does. IPv4 is preferred
 * when a name has both.
 */
#ifndef AP_RESOLVE_H
#define AP_RESOLVE_H

struct event_base;
struct ap_resolve;

/* addr: a numeric address (borrowed for the call), or NULL with why. */
typedef void (*ap_resolve_fn)(void *arg, const char *addr, const char *why);

/*
 * Calls fn exactly once, unless cancelled first. Returns the pending request,
 * or NULL when fn has already been called (literals, or a lookup that could
 * not start: then fn got the reason).
 */
struct ap_resolve *ap_resolve(struct event_base *base, const char *host, ap_resolve_fn fn, void *arg);

/* fn will not be called. Only for a request whose fn has not run. */
void ap_resolve_cancel(struct ap_resolve *q);

#endif
