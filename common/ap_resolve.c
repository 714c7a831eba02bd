/*
 * Non-blocking name resolution; see ap_resolve.h.
 *
 * evdns may answer before evdns_getaddrinfo returns (then it returns NULL),
 * and answers a cancelled request later, from the loop, with EAI_CANCEL: the
 * request struct lives until evdns is done with it, and after a cancel it
 * no longer calls anyone.
 */
#include "ap_resolve.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct ap_resolve {
    ap_resolve_fn fn;
    void *arg;
    char host[256];
    struct evdns_getaddrinfo_request *req;  /* owned by evdns */
    unsigned cancelled:1;
};

static void resolve_on_answer(int err, struct evutil_addrinfo *res, void *arg)
{
    struct ap_resolve *q = arg;
    if (q->cancelled || err != 0) {
        if (!q->cancelled) {
            char why[320];
            snprintf(why, sizeof(why), "cannot resolve %s: %s", q->host, evutil_gai_strerror(err));
            q->fn(q->arg, NULL, why);
        }
        if (res != NULL)
            evutil_freeaddrinfo(res);
        free(q);
        return;
    }
    struct evutil_addrinfo *pick = res;
    for (struct evutil_addrinfo *a = res; a != NULL; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    char addr[INET6_ADDRSTRLEN];
    const void *in = pick->ai_family == AF_INET
                         ? (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr
                         : (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
    evutil_inet_ntop(pick->ai_family, in, addr, sizeof(addr));
    evutil_freeaddrinfo(res);
    q->fn(q->arg, addr, NULL);
    free(q);
}

struct ap_resolve *ap_resolve(struct evdns_base *dns, const char *host, ap_resolve_fn fn, void *arg)
{
    unsigned char tmp[16];
    if (dns == NULL || inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1) {
        fn(arg, host, NULL);
        return NULL;
    }
    struct ap_resolve *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        fn(arg, NULL, "out of memory");
        return NULL;
    }
    q->fn = fn;
    q->arg = arg;
    snprintf(q->host, sizeof(q->host), "%s", host);
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* NULL: answered (and q freed) already. */
    struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(dns, host, NULL, &hints, resolve_on_answer, q);
    if (req == NULL)
        return NULL;
    q->req = req;
    return q;
}

void ap_resolve_cancel(struct ap_resolve *q)
{
    if (q == NULL)
        return;
    q->cancelled = 1;
    evdns_getaddrinfo_cancel(q->req);
}
