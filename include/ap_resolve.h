/*
 * ap_resolve: a host name resolved by the system's resolver, off the loop.
 *
 * getaddrinfo runs on a short-lived thread and the answer comes back through a
 * pipe watched by the libevent loop, so nothing blocks the loop. Why not
 * libevent's evdns: it spreads queries round-robin over every nameserver in
 * resolv.conf and takes any one's "no such name" as final. Container runtimes
 * list their own DNS first (the only one that knows service names such as
 * `redis`) and the host's after it (podman's aardvark-dns does), so evdns failed
 * every other lookup there. getaddrinfo follows nsswitch and asks the
 * nameservers in order, as every other program on the machine does.
 */
#ifndef AP_RESOLVE_H
#define AP_RESOLVE_H

struct event_base;
struct ap_resolve;

/*
 * err: 0, or a getaddrinfo EAI_* code (gai_strerror tells it). addr: the first
 * IPv4 address (else the first address) in numeric form; valid for the call only.
 */
typedef void (*ap_resolve_cb)(int err, const char *addr, void *arg);

/*
 * Starts resolving `host` (copied). `cb` is called exactly once, always later
 * from the loop, unless ap_resolve_cancel comes first. NULL when no thread or
 * pipe could be had (cb is then never called).
 */
struct ap_resolve *ap_resolve_start(struct event_base *base, const char *host, ap_resolve_cb cb, void *arg);

/* Cb will not be called; the lookup's thread frees what is left when it ends. */
void ap_resolve_cancel(struct ap_resolve *r);

#endif
