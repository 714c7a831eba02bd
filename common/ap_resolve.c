/*
 * Name resolution off the loop; see ap_resolve.h.
 *
 *   loop: ap_resolve ──▶ thread: getaddrinfo ──▶ write 1 byte ──▶ loop: fn (unless cancelled)
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
    atomic_int refs;                    /* the loop's and the thread's */
    int fds[2];                         /* pipe: the thread writes one byte when done */
    struct event *ev;                   /* owned by the loop side; NULL once it let go */
    ap_resolve_fn fn;
    void *arg;
    int err;                            /* written by the thread before its byte */
    char addr[INET6_ADDRSTRLEN];
    char host[];
};

static void resolve_unref(struct ap_resolve *q)
{
    if (atomic_fetch_sub(&q->refs, 1) != 1)
        return;
    close(q->fds[0]);
    close(q->fds[1]);
    free(q);
}

/* The loop lets go: no callback after this. */
static void resolve_detach(struct ap_resolve *q)
{
    event_free(q->ev);
    q->ev = NULL;
    resolve_unref(q);
}

static void *resolve_thread(void *arg)
{
    struct ap_resolve *q = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    q->err = getaddrinfo(q->host, NULL, &hints, &res);
    if (q->err == 0) {
        const struct addrinfo *pick = res;
        for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
            if (a->ai_family == AF_INET) {
                pick = a;
                break;
            }
        const void *in = pick->ai_family == AF_INET
                             ? (const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr
                             : (const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
        if (inet_ntop(pick->ai_family, in, q->addr, sizeof(q->addr)) == NULL)
            q->err = EAI_FAIL;
        freeaddrinfo(res);
    }
    char done = 1;
    if (write(q->fds[1], &done, 1) != 1) {
        /* Cannot happen with an empty pipe. */
    }
    resolve_unref(q);
    return NULL;
}

static void resolve_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct ap_resolve *q = arg;
    char done;
    (void)fd;
    (void)what;
    if (read(q->fds[0], &done, 1) != 1)
        return;
    ap_resolve_fn fn = q->fn;
    void *fn_arg = q->arg;
    int err = q->err;
    char addr[sizeof(q->addr)], why[320];
    memcpy(addr, q->addr, sizeof(addr));
    snprintf(why, sizeof(why), "cannot resolve %s: %s", q->host, gai_strerror(err));
    resolve_detach(q); /* first: the callback may start another lookup */
    fn(fn_arg, err == 0 ? addr : NULL, err == 0 ? NULL : why);
}

struct ap_resolve *ap_resolve(struct event_base *base, const char *host, ap_resolve_fn fn, void *arg)
{
    unsigned char tmp[16];
    if (inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1) {
        fn(arg, host, NULL);
        return NULL;
    }
    size_t hl = strlen(host);
    struct ap_resolve *q = calloc(1, sizeof(*q) + hl + 1);
    if (q == NULL) {
        fn(arg, NULL, "out of memory");
        return NULL;
    }
    memcpy(q->host, host, hl + 1);
    q->fn = fn;
    q->arg = arg;
    if (pipe2(q->fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        free(q);
        fn(arg, NULL, "cannot resolve: no pipe");
        return NULL;
    }
    q->ev = event_new(base, q->fds[0], EV_READ, resolve_on_done, q);
    atomic_init(&q->refs, 2);
    pthread_attr_t attr;
    pthread_t tid;
    int ok = q->ev != NULL && event_add(q->ev, NULL) == 0 && pthread_attr_init(&attr) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&tid, &attr, resolve_thread, q) == 0;
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        if (q->ev != NULL)
            event_free(q->ev);
        close(q->fds[0]);
        close(q->fds[1]);
        free(q);
        fn(arg, NULL, "cannot resolve: no thread");
        return NULL;
    }
    return q;
}

void ap_resolve_cancel(struct ap_resolve *q)
{
    if (q != NULL)
        resolve_detach(q);
}
