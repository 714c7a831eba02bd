/*
 * System resolver on a thread; see ap_resolve.h.
 *
 *   loop: start ──▶ thread: getaddrinfo ──▶ write 1 byte ──▶ loop: cb (unless cancelled)
 *
 * The request is shared by the loop and its thread, with two references: the
 * last side to let go frees it and closes the pipe, so the thread never writes
 * to a closed or reused descriptor and a cancelled request needs no waiting.
 */
#include "ap_resolve.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct ap_resolve {
    atomic_int refs;              /* the loop's and the thread's */
    int fds[2];                   /* pipe: the thread writes one byte when done */
    struct event *ev;             /* owned by the loop side; NULL once it let go */
    ap_resolve_cb cb;
    void *arg;
    int err;                      /* written by the thread before its byte */
    char addr[INET6_ADDRSTRLEN];
    char host[];
};

static void resolve_unref(struct ap_resolve *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    close(r->fds[0]);
    close(r->fds[1]);
    free(r);
}

/* The loop lets go: no callback after this. */
static void resolve_detach(struct ap_resolve *r)
{
    event_free(r->ev);
    r->ev = NULL;
    resolve_unref(r);
}

static void *resolve_thread(void *arg)
{
    struct ap_resolve *r = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->err = getaddrinfo(r->host, NULL, &hints, &res);
    if (r->err == 0) {
        const struct addrinfo *pick = res;
        for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
            if (a->ai_family == AF_INET) {
                pick = a;
                break;
            }
        const void *in = pick->ai_family == AF_INET
                             ? (const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr
                             : (const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
        if (inet_ntop(pick->ai_family, in, r->addr, sizeof(r->addr)) == NULL)
            r->err = EAI_FAIL;
        freeaddrinfo(res);
    }
    char done = 1;
    if (write(r->fds[1], &done, 1) != 1) {
        /* Cannot happen with an empty pipe; the loop would wait for its timeout. */
    }
    resolve_unref(r);
    return NULL;
}

static void resolve_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct ap_resolve *r = arg;
    char done;
    (void)fd;
    (void)what;
    if (read(r->fds[0], &done, 1) != 1)
        return;
    ap_resolve_cb cb = r->cb;
    void *cb_arg = r->arg;
    int err = r->err;
    char addr[sizeof(r->addr)];
    memcpy(addr, r->addr, sizeof(addr));
    resolve_detach(r); /* first: the callback may start another lookup */
    cb(err, err == 0 ? addr : NULL, cb_arg);
}

struct ap_resolve *ap_resolve_start(struct event_base *base, const char *host, ap_resolve_cb cb, void *arg)
{
    size_t hl = strlen(host);
    struct ap_resolve *r = calloc(1, sizeof(*r) + hl + 1);
    if (r == NULL)
        return NULL;
    memcpy(r->host, host, hl + 1);
    r->cb = cb;
    r->arg = arg;
    if (pipe2(r->fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        free(r);
        return NULL;
    }
    r->ev = event_new(base, r->fds[0], EV_READ, resolve_on_done, r);
    atomic_init(&r->refs, 2);
    pthread_attr_t attr;
    pthread_t tid;
    int ok = r->ev != NULL && event_add(r->ev, NULL) == 0 && pthread_attr_init(&attr) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&tid, &attr, resolve_thread, r) == 0;
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        if (r->ev != NULL)
            event_free(r->ev);
        close(r->fds[0]);
        close(r->fds[1]);
        free(r);
        return NULL;
    }
    return r;
}

void ap_resolve_cancel(struct ap_resolve *r)
{
    if (r != NULL)
        resolve_detach(r);
}
