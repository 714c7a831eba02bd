/*
 * The listening socket: accepting connections within MAX_CONNECTIONS, and
 * backing off when the process runs out of descriptors.
 *
 * Over the cap, a new connection gets a 503 and is closed at once (the load
 * balancer sees why). When accept() itself fails for lack of descriptors
 * (EMFILE, ENFILE) or memory, the pending connection cannot even be taken off
 * the queue, and a level-triggered listener would wake the loop again at
 * once, spinning at 100% CPU: the listener is paused for a while instead,
 * and the condition is logged once per interval, not once per attempt.
 */
#include "px_conn.h"

#include "px.h"

#include "ap_log.h"
#include "ap_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKOFF_MS 100
#define LISTEN_BACKOFF_MAX_MS 2000
#define LISTEN_LOG_EVERY_MS 10000
#define LISTEN_ACCEPTS_PER_WAKE 64

struct px_server {
    evutil_socket_t fd;                 /* -1 once no longer accepting */
    struct event *accept_ev;            /* owned */
    struct event *backoff;              /* owned: resumes accepting */
    long backoff_ms;
    uint64_t refused_cap;               /* connections turned away over MAX_CONNECTIONS */
    uint64_t refused_fd;                /* accept() failures for lack of descriptors or memory */
    int64_t last_log_ms;
    uint64_t logged_cap, logged_fd;
};

static void listen_log(struct px_server *s)
{
    int64_t now = ap_mono_ms();
    if (now - s->last_log_ms < LISTEN_LOG_EVERY_MS)
        return;
    if (s->refused_cap > s->logged_cap)
        ap_warn(NULL, "MAX_CONNECTIONS reached: %llu connections refused with 503 so far",
                (unsigned long long)s->refused_cap);
    if (s->refused_fd > s->logged_fd)
        ap_warn(NULL, "out of descriptors or memory accepting connections (%llu times so far): "
                      "pausing accept; raise the descriptor limit (ulimit -n) or lower MAX_CONNECTIONS",
                (unsigned long long)s->refused_fd);
    s->logged_cap = s->refused_cap;
    s->logged_fd = s->refused_fd;
    s->last_log_ms = now;
}

static void listen_turn_away(struct px_server *s, evutil_socket_t fd)
{
    static const char reply[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Content-Length: 39\r\n\r\n{\"detail\":\"too many open connections\"}";
    ssize_t w = send(fd, reply, sizeof(reply) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    close(fd);
    s->refused_cap++;
    listen_log(s);
}

static void listen_on_backoff(evutil_socket_t fd, short what, void *arg)
{
    struct px_server *s = arg;
    (void)fd;
    (void)what;
    if (s->fd >= 0)
        event_add(s->accept_ev, NULL);
}

static void listen_pause(struct px_server *s)
{
    event_del(s->accept_ev);
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : LISTEN_BACKOFF_MS;
    if (s->backoff_ms > LISTEN_BACKOFF_MAX_MS)
        s->backoff_ms = LISTEN_BACKOFF_MAX_MS;
    struct timeval tv = {s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000};
    evtimer_add(s->backoff, &tv);
    s->refused_fd++;
    listen_log(s);
}

static void listen_on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct px_ctx *ctx = arg;
    struct px_server *s = ctx->server;
    (void)what;
    for (int i = 0; i < LISTEN_ACCEPTS_PER_WAKE; i++) {
        evutil_socket_t fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                listen_pause(s);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                ap_warn(NULL, "accept: %s", strerror(errno));
            return;
        }
        s->backoff_ms = 0;
        if (px_conn_count(ctx) >= (size_t)ctx->cfg.max_connections) {
            listen_turn_away(s, fd);
            continue;
        }
        if (px_conn_new(ctx, fd) == NULL) {
            close(fd);
            s->refused_fd++;
            listen_log(s);
        }
    }
}

static evutil_socket_t listen_bind(const char *host, int port)
{
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(host, ps, &hints, &res) != 0 || res == NULL)
        return -1;
    evutil_socket_t fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    /*
     * Accepted sockets inherit TCP_NODELAY from the listener on Linux. Without
     * it the last bytes of a reply (a stream's final chunk, sent apart) wait
     * for the client's delayed ACK: ~40 ms per streamed reply.
     */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int listen_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

int px_http_start(struct px_ctx *ctx)
{
    const struct px_config *c = &ctx->cfg;
    struct px_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    ctx->server = s;
    s->fd = listen_bind(c->bind, c->port);
    if (s->fd < 0) {
        ap_error(NULL, "cannot listen on %s:%d: %s", c->bind, c->port, strerror(errno));
        return -1;
    }
    s->accept_ev = event_new(ctx->base, s->fd, EV_READ | EV_PERSIST, listen_on_accept, ctx);
    s->backoff = evtimer_new(ctx->base, listen_on_backoff, s);
    if (s->accept_ev == NULL || s->backoff == NULL || event_add(s->accept_ev, NULL) < 0)
        return -1;
    ap_info(NULL, "listening on %s:%d (at most %ld connections)", c->bind, listen_port(s->fd), c->max_connections);
    return 0;
}

void px_http_stop_accepting(struct px_ctx *ctx)
{
    struct px_server *s = ctx->server;
    if (s == NULL || s->fd < 0)
        return;
    event_del(s->accept_ev);
    event_del(s->backoff);
    close(s->fd);
    s->fd = -1;
    /* Idle keep-alive connections go now (their clients reconnect elsewhere); busy ones after their reply. */
    px_conn_drain_all(ctx);
}

void px_http_free(struct px_ctx *ctx)
{
    struct px_server *s = ctx->server;
    if (s == NULL)
        return;
    px_http_stop_accepting(ctx);
    /* Requests still in flight after the grace period are ended here, each by its owner. */
    px_conn_abort_all(ctx);
    if (s->accept_ev != NULL)
        event_free(s->accept_ev);
    if (s->backoff != NULL)
        event_free(s->backoff);
    free(s);
    ctx->server = NULL;
}

size_t px_http_unsent(const struct px_ctx *ctx)
{
    return px_conn_unsent(ctx);
}

size_t px_http_connections(const struct px_ctx *ctx)
{
    return px_conn_count(ctx);
}

unsigned long long px_http_refused(const struct px_ctx *ctx)
{
    return ctx->server ? ctx->server->refused_cap + ctx->server->refused_fd : 0;
}
