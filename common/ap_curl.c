/*
 * curl multi_socket on libevent; see ap_curl.h.
 *
 *   socket activity ─▶ curl_on_event ─┐
 *   curl timer      ─▶ curl_on_timer ─┴▶ curl_multi_socket_action ─▶ curl_drain_done
 *
 * curl tells us which sockets to watch (curl_on_socket) and when to wake it
 * (curl_on_timer_set). Per socket we keep one libevent event, in a table
 * indexed by descriptor. Each transfer keeps its completion callback in a
 * small struct reached through CURLOPT_PRIVATE.
 *
 * A kept-alive upstream connection goes from "watch for input" to "remove"
 * and back with every request on it. Unregistering and re-registering it
 * with epoll each time cost two system calls per request, so a removed
 * socket stays registered, dormant: if it wakes up while curl does not care
 * (the upstream closed it), the watch is dropped then. The registration ends
 * for good when curl closes the socket (CURLOPT_CLOSESOCKETFUNCTION), before
 * the descriptor can be reused. Only sockets curl opened through us
 * (CURLOPT_OPENSOCKETFUNCTION), whose close we are told about, are kept so;
 * curl's other sockets (its resolver's wake-up pair) are unregistered when
 * curl lets go of them, since they are closed without telling us.
 */
#include "ap_curl.h"

#include "ap_log.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct curl_sock;

struct ap_curl {
    struct event_base *base; /* borrowed */
    CURLM *multi;            /* owned */
    struct event *timer;     /* owned */
    struct curl_sock **socks; /* owned: by descriptor */
    size_t nsocks;
    int active;
};

struct curl_xfer {
    ap_curl_done_fn done;
    void *arg;
};

struct curl_sock {
    struct event *ev;        /* owned */
    struct ap_curl *c;
    curl_socket_t fd;
    short kind;              /* the registered EV_READ/EV_WRITE, 0: not registered */
    unsigned wanted:1;       /* curl watches it now (else: dormant) */
    unsigned ours:1;         /* opened through curl_on_open: we learn of its close */
};

static void curl_drain_done(struct ap_curl *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        struct curl_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(c->multi, easy);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        c->active--;
        if (x != NULL) {
            ap_curl_done_fn done = x->done;
            void *arg = x->arg;
            free(x);
            done(easy, res, arg);
        }
    }
}

static void curl_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct curl_sock *cs = arg;
    struct ap_curl *c = cs->c;
    if (!cs->wanted) {
        /* A dormant connection woke up (closed by the upstream): stop watching it. */
        event_del(cs->ev);
        cs->kind = 0;
        return;
    }
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    curl_drain_done(c);
}

static void curl_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ap_curl *c = arg;
    int running;
    (void)fd;
    (void)what;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    curl_drain_done(c);
}

/* CURLMOPT_TIMERFUNCTION: only arms our timer; curl must not be re-entered from here. */
static int curl_on_timer_set(CURLM *multi, long timeout_ms, void *arg)
{
    struct ap_curl *c = arg;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    return 0;
}

static struct curl_sock *curl_sock_get(struct ap_curl *c, curl_socket_t s, int create)
{
    if (s < 0)
        return NULL;
    if ((size_t)s >= c->nsocks) {
        if (!create)
            return NULL;
        size_t n = c->nsocks ? c->nsocks : 64;
        while (n <= (size_t)s)
            n *= 2;
        struct curl_sock **t = realloc(c->socks, n * sizeof(*t));
        if (t == NULL)
            return NULL;
        memset(t + c->nsocks, 0, (n - c->nsocks) * sizeof(*t));
        c->socks = t;
        c->nsocks = n;
    }
    struct curl_sock *cs = c->socks[s];
    if (cs == NULL && create) {
        cs = calloc(1, sizeof(*cs));
        if (cs == NULL)
            return NULL;
        cs->c = c;
        cs->fd = s;
        cs->ev = event_new(c->base, s, 0, curl_on_event, cs);
        if (cs->ev == NULL) {
            free(cs);
            return NULL;
        }
        c->socks[s] = cs;
    }
    return cs;
}

static void curl_sock_drop(struct ap_curl *c, curl_socket_t s)
{
    struct curl_sock *cs = curl_sock_get(c, s, 0);
    if (cs == NULL)
        return;
    event_free(cs->ev);
    free(cs);
    c->socks[s] = NULL;
}

static int curl_on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
    struct ap_curl *c = arg;
    (void)easy;
    (void)sockp;
    struct curl_sock *cs = curl_sock_get(c, s, what != CURL_POLL_REMOVE);
    if (cs == NULL)
        return what == CURL_POLL_REMOVE ? 0 : -1;
    if (what == CURL_POLL_REMOVE) {
        if (cs->ours)
            cs->wanted = 0; /* dormant; see the file comment */
        else
            curl_sock_drop(c, s);
        return 0;
    }
    short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0));
    cs->wanted = 1;
    if (kind == cs->kind)
        return 0;
    if (cs->kind != 0)
        event_del(cs->ev);
    event_assign(cs->ev, c->base, s, (short)(kind | EV_PERSIST), curl_on_event, cs);
    event_add(cs->ev, NULL);
    cs->kind = kind;
    return 0;
}

static curl_socket_t curl_on_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct ap_curl *c = arg;
    (void)purpose;
    curl_socket_t s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (s == CURL_SOCKET_BAD)
        return CURL_SOCKET_BAD;
    struct curl_sock *cs = curl_sock_get(c, s, 1);
    if (cs == NULL) {
        close(s);
        return CURL_SOCKET_BAD;
    }
    cs->ours = 1;
    return s;
}

/* curl closes a socket: its registration must go first, the descriptor may be reused at once. */
static int curl_on_close(void *arg, curl_socket_t s)
{
    curl_sock_drop(arg, s);
    return close(s);
}

struct ap_curl *ap_curl_new(struct event_base *base)
{
    struct ap_curl *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, curl_on_timer, c);
    if (c->multi == NULL || c->timer == NULL) {
        ap_curl_free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_on_timer_set);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Keep enough idle upstream connections for a busy replica. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 256L);
    return c;
}

int ap_curl_add(struct ap_curl *c, CURL *easy, ap_curl_done_fn done, void *arg)
{
    struct curl_xfer *x = malloc(sizeof(*x));
    if (x == NULL)
        return -1;
    x->done = done;
    x->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, curl_on_open);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, c);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, curl_on_close);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, c);
    if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(x);
        return -1;
    }
    c->active++;
    return 0;
}

void ap_curl_remove(struct ap_curl *c, CURL *easy)
{
    struct curl_xfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (x == NULL)
        return; /* not ours, or already completed */
    curl_multi_remove_handle(c->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
    c->active--;
}

void ap_curl_free(struct ap_curl *c)
{
    if (c == NULL)
        return;
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi); /* closes the cached connections through curl_on_close */
    for (size_t i = 0; i < c->nsocks; i++)
        curl_sock_drop(c, (curl_socket_t)i);
    free(c->socks);
    if (c->timer != NULL)
        event_free(c->timer);
    free(c);
}
