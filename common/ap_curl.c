/*
 * curl multi_socket on libevent; see ap_curl.h.
 *
 *   socket activity ─▶ curl_on_event ─┐
 *   curl timer      ─▶ curl_on_timer ─┴▶ curl_multi_socket_action ─▶ curl_drain_done
 *
 * curl tells us which sockets to watch (curl_on_socket) and when to wake it
 * (curl_on_timer_set). Per socket we keep one libevent event, stored as the
 * socket's curl "assign" pointer. Each transfer keeps its completion callback
 * in a small struct reached through CURLOPT_PRIVATE.
 */
#include "ap_curl.h"

#include "ap_log.h"

#include <event2/event.h>
#include <stdlib.h>

struct ap_curl {
    struct event_base *base; /* borrowed */
    CURLM *multi;            /* owned */
    struct event *timer;     /* owned */
    int active;
};

struct curl_xfer {
    ap_curl_done_fn done;
    void *arg;
};

struct curl_sock {
    struct event *ev;
    struct ap_curl *c;
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
    struct ap_curl *c = arg;
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

static int curl_on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
    struct ap_curl *c = arg;
    struct curl_sock *cs = sockp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (cs != NULL) {
            event_free(cs->ev);
            free(cs);
            curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
    if (cs == NULL) {
        cs = calloc(1, sizeof(*cs));
        if (cs == NULL)
            return -1;
        cs->c = c;
        cs->ev = event_new(c->base, s, kind, curl_on_event, c);
        if (cs->ev == NULL) {
            free(cs);
            return -1;
        }
        curl_multi_assign(c->multi, s, cs);
    } else {
        event_del(cs->ev);
        event_assign(cs->ev, c->base, s, kind, curl_on_event, c);
    }
    event_add(cs->ev, NULL);
    return 0;
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

int ap_curl_active(const struct ap_curl *c)
{
    return c->active;
}

void ap_curl_free(struct ap_curl *c)
{
    if (c == NULL)
        return;
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    if (c->timer != NULL)
        event_free(c->timer);
    free(c);
}
