/*
 * trickle: the load tool of make bench's concurrency row, on libevent alone
 * (wrk opens one request at a time per connection and cannot hold thousands of
 * slow streams; nginx cannot send one event per second).
 *
 *   trickle upstream [-b ADDR] [-p PORT] [-e EVENTS] [-i INTERVAL_MS] [-P PORT_FILE]
 *     An Anthropic upstream: every POST /v1/messages is answered with an SSE
 *     stream (chunked): message_start and content_block_start at once, then one
 *     content_block_delta every INTERVAL_MS whose text carries its sequence
 *     number and the CLOCK_MONOTONIC time of its send ("seq=N t=USEC "), and
 *     after the EVENTS-th delta content_block_stop, message_delta (usage:
 *     TRICKLE_INPUT_TOKENS in, EVENTS out) and message_stop. Connections are
 *     kept alive. GET /health answers 200, GET /stats the counters (one line).
 *     Runs until SIGTERM or SIGINT, then prints its counters on stderr.
 *
 *   trickle client -u http://HOST:PORT -k KEY -n STREAMS [-R RAMP_S] [-e EVENTS]
 *                  [-i INTERVAL_MS] [-T TIMEOUT_S] [-m MODEL]
 *     Opens STREAMS connections to the proxy, spread evenly over RAMP_S seconds,
 *     sends one stream request on each, decodes the reply (chunked, length or
 *     close-delimited) and its SSE events, and records for every delta the delay
 *     between the send time the upstream wrote into it and its arrival (same
 *     machine, same monotonic clock: the proxy's relay time, nothing else). A
 *     stream is complete when its reply ends after all EVENTS deltas in order and
 *     message_stop. Progress every second on stderr; at the end one line
 *     "TRICKLE_RESULT key=value ..." on stdout (with how late our own loop ran:
 *     a delay up to that is the load side's), then one "TRICKLE_PHASE" line per
 *     phase (opening, steady, closing: see cl_phase). Exit status 0 when every
 *     stream completed, 1 otherwise.
 *
 * Both sides write with a direct send() as soon as an event is made (buffering
 * only what the socket refuses), so the stamp is the moment the bytes leave.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TRICKLE_INPUT_TOKENS 12
#define TRICKLE_LATE_US 100000           /* the bound: every event within 100 ms */
#define TRICKLE_HEAD_MAX 16384
#define TRICKLE_HIST_STEP_US 10          /* delay histogram resolution */
#define TRICKLE_HIST_BUCKETS 200000      /* up to 2 s; beyond, only the count and the max */
#define TRICKLE_TIMELINE_MAX 3600        /* seconds of per-second progress kept */

static int64_t trickle_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Takes the descriptor limit up to the hard limit: each stream holds one or two. */
static void trickle_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Writes what the socket takes now; the rest stays in `out` for the write event. -1 on a dead socket. */
static int trickle_flush(evutil_socket_t fd, struct evbuffer *out, struct event *write_ev)
{
    while (evbuffer_get_length(out) > 0) {
        int n = evbuffer_write(out, fd);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(write_ev, NULL);
                return 0;
            }
            return -1;
        }
        if (n == 0)
            break;
    }
    if (evbuffer_get_length(out) == 0)
        event_del(write_ev);
    return 0;
}

/* Case-insensitive search for a header's value in a head block; NULL if absent. */
static const char *trickle_header(const char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            *len = e ? (size_t)(e - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

/*
 * Takes a whole head block (through its blank line) off `in` into *head (owned by the
 * caller, NUL-terminated). 1 when taken, 0 when more bytes are needed, -1 when it is too
 * long or memory is short.
 */
static int trickle_take_head(struct evbuffer *in, char **head)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return evbuffer_get_length(in) > TRICKLE_HEAD_MAX ? -1 : 0;
    size_t hl = (size_t)end.pos + 4;
    *head = malloc(hl + 1);
    if (*head == NULL)
        return -1;
    evbuffer_remove(in, *head, hl);
    (*head)[hl] = '\0';
    return 1;
}

/* ====================================================================== */
/* upstream mode                                                          */
/* ====================================================================== */

struct up_stats {
    uint64_t connections;
    uint64_t requests;
    uint64_t started;                   /* streams begun */
    uint64_t completed;                 /* streams whose last byte was sent */
    uint64_t aborted;                   /* streams the peer left before the end */
    uint64_t events;                    /* deltas sent */
    uint64_t open;
    uint64_t peak_open;
    int64_t tick_late_max_us;           /* how late our own timer fired, at worst */
};

struct up_ctx {
    struct event_base *base;
    const struct timeval *tick_tv;      /* common timeout of INTERVAL_MS */
    int events;
    int64_t interval_us;
    struct up_stats st;
};

enum { UP_NOT_FOUND, UP_STREAM, UP_HEALTH, UP_STATS };

struct up_conn {
    struct up_ctx *ctx;
    evutil_socket_t fd;
    struct event *read_ev;              /* owned; persistent */
    struct event *write_ev;             /* owned; added while `out` is not empty */
    struct event *tick;                 /* owned; persistent while streaming */
    struct evbuffer *in;                /* owned */
    struct evbuffer *out;               /* owned */
    long body_left;                     /* request body bytes still to read; -1: reading the head */
    int seq;                            /* deltas sent on the current stream */
    int kind;                           /* the request being read: UP_STREAM, UP_HEALTH... */
    int64_t next_tick_us;
    unsigned streaming:1;
};

static void up_conn_free(struct up_conn *c)
{
    if (c->streaming) {
        c->ctx->st.aborted++;
        c->ctx->st.open--;
    }
    event_free(c->read_ev);
    event_free(c->write_ev);
    event_free(c->tick);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    evutil_closesocket(c->fd);
    free(c);
}

/* Queues one chunk of chunked framing holding `data`, and sends what the socket takes. */
static int up_send_chunk(struct up_conn *c, const char *data, size_t len)
{
    evbuffer_add_printf(c->out, "%zx\r\n", len);
    evbuffer_add(c->out, data, len);
    evbuffer_add(c->out, "\r\n", 2);
    return trickle_flush(c->fd, c->out, c->write_ev);
}

static int up_reply(struct up_conn *c, int status, const char *reason, const char *body)
{
    evbuffer_add_printf(c->out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                        status, reason, strlen(body), body);
    return trickle_flush(c->fd, c->out, c->write_ev);
}

static int up_start_stream(struct up_conn *c)
{
    char ev[1024];
    struct up_ctx *ctx = c->ctx;
    int n = snprintf(ev, sizeof(ev),
                     "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_trickle\","
                     "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"trickle\",\"content\":[],"
                     "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}"
                     "\n\n"
                     "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                     "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                     TRICKLE_INPUT_TOKENS);
    evbuffer_add_printf(c->out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n");
    c->streaming = 1;
    c->seq = 0;
    ctx->st.started++;
    if (++ctx->st.open > ctx->st.peak_open)
        ctx->st.peak_open = ctx->st.open;
    c->next_tick_us = trickle_now_us() + ctx->interval_us;
    event_add(c->tick, ctx->tick_tv);
    return up_send_chunk(c, ev, (size_t)n);
}

static void up_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    struct up_ctx *ctx = c->ctx;
    char ev[1024];
    (void)fd;
    (void)what;
    int64_t now = trickle_now_us();
    if (now - c->next_tick_us > ctx->st.tick_late_max_us)
        ctx->st.tick_late_max_us = now - c->next_tick_us;
    c->next_tick_us += ctx->interval_us;
    c->seq++;
    int n = snprintf(ev, sizeof(ev),
                     "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                     "\"delta\":{\"type\":\"text_delta\",\"text\":\"seq=%d t=%" PRId64 " \"}}\n\n",
                     c->seq, trickle_now_us());
    ctx->st.events++;
    if (up_send_chunk(c, ev, (size_t)n) < 0) {
        up_conn_free(c);
        return;
    }
    if (c->seq < ctx->events)
        return;
    n = snprintf(ev, sizeof(ev),
                 "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                 "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
                 "\"stop_sequence\":null},\"usage\":{\"output_tokens\":%d}}\n\n"
                 "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                 ctx->events);
    evbuffer_add_printf(c->out, "%x\r\n", n);
    evbuffer_add(c->out, ev, (size_t)n);
    evbuffer_add(c->out, "\r\n0\r\n\r\n", 7);
    event_del(c->tick);
    c->streaming = 0;
    ctx->st.open--;
    ctx->st.completed++;
    if (trickle_flush(c->fd, c->out, c->write_ev) < 0)
        up_conn_free(c);
}

/* Handles every whole request in `in`. -1 when the connection must go. */
static int up_serve(struct up_conn *c)
{
    struct up_ctx *ctx = c->ctx;
    for (;;) {
        if (c->streaming)
            return 0; /* one request at a time; a pipelined next one waits */
        if (c->body_left < 0) {
            char *head = NULL;
            int got = trickle_take_head(c->in, &head);
            if (got <= 0)
                return got;
            size_t vl = 0;
            const char *cl = trickle_header(head, "content-length", &vl);
            long body = cl ? strtol(cl, NULL, 10) : 0;
            /* The body is drained below; the answer depends on the request line only. */
            c->kind = strncmp(head, "POST /v1/messages ", 18) == 0 ? UP_STREAM
                      : strncmp(head, "GET /health ", 12) == 0 ? UP_HEALTH
                      : strncmp(head, "GET /stats ", 11) == 0  ? UP_STATS
                                                               : UP_NOT_FOUND;
            free(head);
            ctx->st.requests++;
            c->body_left = body < 0 ? 0 : body;
        }
        size_t have = evbuffer_get_length(c->in);
        size_t take = have < (size_t)c->body_left ? have : (size_t)c->body_left;
        evbuffer_drain(c->in, take);
        c->body_left -= (long)take;
        if (c->body_left > 0)
            return 0;
        c->body_left = -1;
        int rc;
        if (c->kind == UP_STREAM) {
            rc = up_start_stream(c);
        } else if (c->kind == UP_HEALTH) {
            rc = up_reply(c, 200, "OK", "{\"status\":\"ok\"}");
        } else if (c->kind == UP_STATS) {
            char s[512];
            snprintf(s, sizeof(s),
                     "{\"connections\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"started\":%" PRIu64
                     ",\"completed\":%" PRIu64 ",\"aborted\":%" PRIu64 ",\"events\":%" PRIu64 ",\"open\":%" PRIu64
                     ",\"peak_open\":%" PRIu64 ",\"tick_late_max_us\":%" PRId64 "}",
                     ctx->st.connections, ctx->st.requests, ctx->st.started, ctx->st.completed, ctx->st.aborted,
                     ctx->st.events, ctx->st.open, ctx->st.peak_open, ctx->st.tick_late_max_us);
            rc = up_reply(c, 200, "OK", s);
        } else {
            rc = up_reply(c, 404, "Not Found", "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\"}}");
        }
        if (rc < 0)
            return -1;
    }
}

static void up_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)what;
    int n = evbuffer_read(c->in, fd, 16384);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        up_conn_free(c);
        return;
    }
    if (up_serve(c) < 0)
        up_conn_free(c);
}

static void up_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)what;
    if (trickle_flush(fd, c->out, c->write_ev) < 0)
        up_conn_free(c);
}

static void up_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct up_ctx *ctx = arg;
    (void)l;
    (void)sa;
    (void)salen;
    struct up_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->ctx = ctx;
    c->fd = fd;
    c->body_left = -1;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->read_ev = event_new(ctx->base, fd, EV_READ | EV_PERSIST, up_on_read, c);
    c->write_ev = event_new(ctx->base, fd, EV_WRITE | EV_PERSIST, up_on_write, c);
    c->tick = event_new(ctx->base, -1, EV_PERSIST, up_on_tick, c);
    if (c->in == NULL || c->out == NULL || c->read_ev == NULL || c->write_ev == NULL || c->tick == NULL ||
        event_add(c->read_ev, NULL) < 0) {
        up_conn_free(c);
        return;
    }
    ctx->st.connections++;
}

static void trickle_on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopexit(arg, NULL);
}

static int upstream_main(const char *bind, int port, int events, int interval_ms, const char *port_file)
{
    struct up_ctx ctx = {0};
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind, &sin.sin_addr) != 1) {
        fprintf(stderr, "trickle upstream: bad address %s\n", bind);
        return 2;
    }
    ctx.base = event_base_new();
    ctx.events = events;
    ctx.interval_us = (int64_t)interval_ms * 1000;
    struct timeval tv = {interval_ms / 1000, (interval_ms % 1000) * 1000};
    ctx.tick_tv = event_base_init_common_timeout(ctx.base, &tv);
    struct evconnlistener *l =
        evconnlistener_new_bind(ctx.base, up_on_accept, &ctx, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
                                (struct sockaddr *)&sin, sizeof(sin));
    if (l == NULL) {
        fprintf(stderr, "trickle upstream: cannot listen on %s:%d: %s\n", bind, port, strerror(errno));
        return 1;
    }
    struct sockaddr_in got;
    socklen_t gl = sizeof(got);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&got, &gl);
    if (port_file != NULL) {
        FILE *f = fopen(port_file, "w");
        if (f == NULL || fprintf(f, "%d\n", ntohs(got.sin_port)) < 0 || fclose(f) != 0) {
            fprintf(stderr, "trickle upstream: cannot write %s\n", port_file);
            return 1;
        }
    }
    fprintf(stderr, "trickle upstream: listening on %s:%d, %d events every %d ms per stream\n", bind,
            ntohs(got.sin_port), events, interval_ms);
    struct event *s1 = evsignal_new(ctx.base, SIGTERM, trickle_on_signal, ctx.base);
    struct event *s2 = evsignal_new(ctx.base, SIGINT, trickle_on_signal, ctx.base);
    event_add(s1, NULL);
    event_add(s2, NULL);
    event_base_dispatch(ctx.base);
    fprintf(stderr,
            "trickle upstream: connections %" PRIu64 " requests %" PRIu64 " streams started %" PRIu64
            " completed %" PRIu64 " aborted %" PRIu64 " events %" PRIu64 " peak open %" PRIu64
            " timer late max %" PRId64 " us\n",
            ctx.st.connections, ctx.st.requests, ctx.st.started, ctx.st.completed, ctx.st.aborted, ctx.st.events,
            ctx.st.peak_open, ctx.st.tick_late_max_us);
    /* Connections still open are left to exit(): this is the end of the process. */
    event_free(s1);
    event_free(s2);
    evconnlistener_free(l);
    return 0;
}

/* ====================================================================== */
/* client mode                                                            */
/* ====================================================================== */

struct hist {
    uint32_t *b;                        /* owned; TRICKLE_HIST_BUCKETS counts */
    uint64_t n;
    uint64_t over;                      /* samples past the last bucket */
    int64_t max;
};

static int hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->b = calloc(TRICKLE_HIST_BUCKETS, sizeof(*h->b));
    return h->b ? 0 : -1;
}

static void hist_add(struct hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int64_t i = us / TRICKLE_HIST_STEP_US;
    if (i < TRICKLE_HIST_BUCKETS)
        h->b[i]++;
    else
        h->over++;
    h->n++;
    if (us > h->max)
        h->max = us;
}

/* The q-quantile (0..1), as the upper edge of its bucket; the max when it falls past the last. */
static int64_t hist_q(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)((double)h->n * q + 0.999999), seen = 0;
    if (want == 0)
        want = 1;
    for (int64_t i = 0; i < TRICKLE_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            return (i + 1) * TRICKLE_HIST_STEP_US;
    }
    return h->max;
}

enum cl_body { CL_HEAD, CL_CHUNK_SIZE, CL_CHUNK_DATA, CL_CHUNK_CRLF, CL_TRAILER, CL_LENGTH, CL_EOF };

struct cl_timeline {
    uint64_t events;
    uint64_t late;                      /* events over TRICKLE_LATE_US */
    int64_t max_us;
    int64_t lag_us;                     /* our own loop: how late its 10 ms timer fired, at worst */
};

#define CL_TICK_US 10000

/*
 * The phases of a run, told apart in the result: opening (some stream has no reply head
 * yet: the proxy is also accepting and starting transfers), steady (every stream open,
 * none finished: relaying only), closing (streams finishing).
 */
enum { CL_OPENING, CL_STEADY, CL_CLOSING, CL_PHASES };
static const char *const cl_phase_name[CL_PHASES] = {"opening", "steady", "closing"};

struct cl_phase {
    uint64_t events;
    uint64_t late;
    int64_t max_us;
};

struct cl_ctx {
    struct event_base *base;
    struct sockaddr_storage addr;
    int addr_len;
    char host[128];
    char *request;                      /* owned; the same bytes on every connection */
    size_t request_len;
    int streams, events;
    int64_t interval_us, ramp_us, deadline_us, t0;
    int opened, open, peak_open, done;
    struct event *ramp;                 /* owned: opens streams, then keeps measuring our loop's lag */
    int64_t next_tick_us;
    int64_t lag_max_us;
    struct event *second;               /* owned */
    struct event *deadline;             /* owned */
    struct hist delay, ttfb;
    struct cl_phase phase[CL_PHASES];
    int heads;                          /* 200 reply heads received */
    struct cl_timeline tl[TRICKLE_TIMELINE_MAX];
    int64_t last_print_s;
    /* outcomes */
    int completed, connect_err, status_err, early_close, bad_stream, timeouts;
    int first_status;
    char first_error[200];
};

struct cl_conn {
    struct cl_ctx *ctx;
    evutil_socket_t fd;
    struct event *ev;                   /* owned: connect (write), then read */
    struct evbuffer *in;                /* owned: raw bytes */
    struct evbuffer *sse;               /* owned: decoded body */
    enum cl_body body;
    uint64_t left;                      /* chunk or length bytes left */
    int64_t sent_us;
    int seq;                            /* last delta seen */
    unsigned connected:1;
    unsigned stop:1;                    /* message_stop seen */
    unsigned bad:1;
};

static void cl_note(struct cl_ctx *ctx, const char *why)
{
    if (ctx->first_error[0] == '\0')
        snprintf(ctx->first_error, sizeof(ctx->first_error), "%s", why);
}

static void cl_check_done(struct cl_ctx *ctx)
{
    if (ctx->done == ctx->streams)
        event_base_loopexit(ctx->base, NULL);
}

/* outcome: 0 complete, else a counter to bump. */
static void cl_finish(struct cl_conn *c, int *outcome, const char *why)
{
    struct cl_ctx *ctx = c->ctx;
    if (outcome == NULL) {
        ctx->completed++;
    } else {
        (*outcome)++;
        cl_note(ctx, why);
    }
    if (c->connected)
        ctx->open--;
    ctx->done++;
    event_free(c->ev);
    evbuffer_free(c->in);
    evbuffer_free(c->sse);
    evutil_closesocket(c->fd);
    free(c);
    cl_check_done(ctx);
}

static struct cl_timeline *cl_second(struct cl_ctx *ctx, int64_t now)
{
    int64_t s = (now - ctx->t0) / 1000000;
    return &ctx->tl[s < TRICKLE_TIMELINE_MAX ? s : TRICKLE_TIMELINE_MAX - 1];
}

/* One SSE event block (without its blank line). */
static void cl_event(struct cl_conn *c, const char *ev, size_t len, int64_t now)
{
    struct cl_ctx *ctx = c->ctx;
    char name[64] = "";
    const char *e = memmem(ev, len, "event:", 6);
    if (e != NULL) {
        e += 6;
        while (e < ev + len && *e == ' ')
            e++;
        size_t n = 0;
        while (e + n < ev + len && e[n] != '\n' && e[n] != '\r' && n < sizeof(name) - 1)
            n++;
        memcpy(name, e, n);
        name[n] = '\0';
    }
    if (strcmp(name, "content_block_delta") == 0) {
        const char *s = memmem(ev, len, "seq=", 4);
        const char *t = memmem(ev, len, " t=", 3);
        if (s == NULL || t == NULL) {
            c->bad = 1;
            cl_note(ctx, "a delta without seq= and t=");
            return;
        }
        int seq = atoi(s + 4);
        int64_t sent = strtoll(t + 3, NULL, 10);
        if (seq != c->seq + 1) {
            c->bad = 1;
            cl_note(ctx, "deltas out of order or missing");
        }
        c->seq = seq;
        int64_t d = now - sent;
        hist_add(&ctx->delay, d);
        struct cl_timeline *tl = cl_second(ctx, now);
        tl->events++;
        if (d > TRICKLE_LATE_US)
            tl->late++;
        if (d > tl->max_us)
            tl->max_us = d;
        struct cl_phase *ph = &ctx->phase[ctx->done > 0             ? CL_CLOSING
                                          : ctx->heads < ctx->streams ? CL_OPENING
                                                                      : CL_STEADY];
        ph->events++;
        if (d > TRICKLE_LATE_US)
            ph->late++;
        if (d > ph->max_us)
            ph->max_us = d;
    } else if (strcmp(name, "message_stop") == 0) {
        c->stop = 1;
    } else if (strcmp(name, "error") == 0) {
        c->bad = 1;
        cl_note(ctx, "an error event in the stream");
    }
}

static void cl_sse(struct cl_conn *c, int64_t now)
{
    for (;;) {
        struct evbuffer_ptr p = evbuffer_search(c->sse, "\n\n", 2, NULL);
        if (p.pos < 0)
            return;
        size_t n = (size_t)p.pos;
        char *ev = (char *)evbuffer_pullup(c->sse, (ev_ssize_t)n);
        cl_event(c, ev, n, now);
        evbuffer_drain(c->sse, n + 2);
    }
}

/* Reads a CRLF-terminated line of `in` into buf; 1 when a whole line was there. */
static int cl_line(struct evbuffer *in, char *buf, size_t cap)
{
    size_t n = 0;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
    if (line == NULL)
        return 0;
    snprintf(buf, cap, "%s", line);
    free(line);
    return 1;
}

/* Decodes what arrived; 1 when the reply is over, -1 on a framing error. */
static int cl_decode(struct cl_conn *c)
{
    char line[256];
    for (;;) {
        switch (c->body) {
        case CL_HEAD: {
            char *head = NULL;
            int got = trickle_take_head(c->in, &head);
            if (got <= 0)
                return got;
            hist_add(&c->ctx->ttfb, trickle_now_us() - c->sent_us);
            int status = 0;
            if (sscanf(head, "HTTP/1.%*d %d", &status) != 1)
                status = -1;
            size_t vl = 0;
            const char *te = trickle_header(head, "transfer-encoding", &vl);
            const char *cl = trickle_header(head, "content-length", &vl);
            if (te != NULL && strncasecmp(te, "chunked", 7) == 0) {
                c->body = CL_CHUNK_SIZE;
            } else if (cl != NULL) {
                c->body = CL_LENGTH;
                c->left = strtoull(cl, NULL, 10);
            } else {
                c->body = CL_EOF;
            }
            free(head);
            if (status == 200)
                c->ctx->heads++;
            if (status != 200) {
                struct cl_ctx *ctx = c->ctx;
                if (ctx->first_status == 0)
                    ctx->first_status = status;
                return -2;
            }
            break;
        }
        case CL_CHUNK_SIZE:
            if (!cl_line(c->in, line, sizeof(line)))
                return 0;
            c->left = strtoull(line, NULL, 16);
            c->body = c->left ? CL_CHUNK_DATA : CL_TRAILER;
            break;
        case CL_CHUNK_DATA:
        case CL_LENGTH: {
            size_t have = evbuffer_get_length(c->in);
            if (have == 0)
                return c->body == CL_LENGTH && c->left == 0;
            size_t take = have < c->left ? have : (size_t)c->left;
            evbuffer_remove_buffer(c->in, c->sse, take);
            c->left -= take;
            if (c->left == 0) {
                if (c->body == CL_LENGTH)
                    return 1;
                c->body = CL_CHUNK_CRLF;
            }
            break;
        }
        case CL_CHUNK_CRLF:
            if (!cl_line(c->in, line, sizeof(line)))
                return 0;
            if (line[0] != '\0')
                return -1;
            c->body = CL_CHUNK_SIZE;
            break;
        case CL_TRAILER:
            if (!cl_line(c->in, line, sizeof(line)))
                return 0;
            if (line[0] == '\0')
                return 1;
            break;
        case CL_EOF:
            evbuffer_add_buffer(c->sse, c->in);
            return 0;
        }
    }
}

static void cl_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct cl_conn *c = arg;
    struct cl_ctx *ctx = c->ctx;
    (void)what;
    int n = evbuffer_read(c->in, fd, 16384);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    int64_t now = trickle_now_us();
    int r = n > 0 ? cl_decode(c) : 0;
    cl_sse(c, now);
    if (r == -2) {
        cl_finish(c, &ctx->status_err, "a reply other than 200");
        return;
    }
    if (r < 0) {
        cl_finish(c, &ctx->bad_stream, "bad HTTP framing in the reply");
        return;
    }
    if (r == 0 && n > 0)
        return;
    /* The reply is over (r == 1), or the connection closed (n <= 0). */
    if (r == 0 && !(c->body == CL_EOF && n == 0)) {
        cl_finish(c, &ctx->early_close, n == 0 ? "connection closed before the reply ended" : strerror(errno));
        return;
    }
    if (c->bad || !c->stop || c->seq != ctx->events)
        cl_finish(c, &ctx->bad_stream, c->bad ? ctx->first_error : "the reply ended without every delta and message_stop");
    else
        cl_finish(c, NULL, NULL);
}

static void cl_on_connect(evutil_socket_t fd, short what, void *arg)
{
    struct cl_conn *c = arg;
    struct cl_ctx *ctx = c->ctx;
    int err = 0;
    socklen_t el = sizeof(err);
    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
        errno = err;
        cl_finish(c, &ctx->connect_err, strerror(err));
        return;
    }
    c->connected = 1;
    if (++ctx->open > ctx->peak_open)
        ctx->peak_open = ctx->open;
    c->sent_us = trickle_now_us();
    ssize_t n = send(fd, ctx->request, ctx->request_len, MSG_NOSIGNAL);
    if (n != (ssize_t)ctx->request_len) { /* a few hundred bytes into an empty socket */
        cl_finish(c, &ctx->early_close, "could not send the request");
        return;
    }
    event_free(c->ev);
    c->ev = event_new(ctx->base, fd, EV_READ | EV_PERSIST, cl_on_read, c);
    if (c->ev == NULL || event_add(c->ev, NULL) < 0)
        cl_finish(c, &ctx->early_close, "event_add failed");
}

static void cl_open_one(struct cl_ctx *ctx)
{
    ctx->opened++;
    struct cl_conn *c = calloc(1, sizeof(*c));
    evutil_socket_t fd = socket(ctx->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c == NULL || fd < 0) {
        if (fd >= 0)
            close(fd);
        free(c);
        ctx->connect_err++;
        ctx->done++;
        cl_note(ctx, strerror(errno));
        cl_check_done(ctx);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->ctx = ctx;
    c->fd = fd;
    c->in = evbuffer_new();
    c->sse = evbuffer_new();
    c->ev = event_new(ctx->base, fd, EV_WRITE, cl_on_connect, c);
    if (c->in == NULL || c->sse == NULL || c->ev == NULL) {
        cl_finish(c, &ctx->connect_err, "out of memory");
        return;
    }
    if (connect(fd, (struct sockaddr *)&ctx->addr, (socklen_t)ctx->addr_len) < 0 && errno != EINPROGRESS) {
        cl_finish(c, &ctx->connect_err, strerror(errno));
        return;
    }
    event_add(c->ev, NULL);
}

static void cl_on_ramp(evutil_socket_t fd, short what, void *arg)
{
    struct cl_ctx *ctx = arg;
    (void)fd;
    (void)what;
    int64_t now = trickle_now_us(), el = now - ctx->t0;
    /*
     * Every delay we record includes the time this loop took to get to the read: if the
     * loop is late (the machine is busy), the figures are not the proxy's alone. The
     * ramp's timer tells how late the loop runs.
     */
    if (ctx->next_tick_us > 0) {
        int64_t lag = now - ctx->next_tick_us;
        struct cl_timeline *tl = cl_second(ctx, now);
        if (lag > tl->lag_us)
            tl->lag_us = lag;
        if (lag > ctx->lag_max_us)
            ctx->lag_max_us = lag;
    }
    ctx->next_tick_us = now + CL_TICK_US;
    int want = ctx->ramp_us <= 0 || el >= ctx->ramp_us ? ctx->streams
                                                        : (int)((double)ctx->streams * (double)el / (double)ctx->ramp_us);
    while (ctx->opened < want)
        cl_open_one(ctx);
}

static void cl_on_second(evutil_socket_t fd, short what, void *arg)
{
    struct cl_ctx *ctx = arg;
    (void)fd;
    (void)what;
    int64_t now = trickle_now_us(), s = (now - ctx->t0) / 1000000;
    /* Every second that ended since the last print (a late timer may skip one). */
    while (ctx->last_print_s + 1 < s && ctx->last_print_s + 1 < TRICKLE_TIMELINE_MAX) {
        int64_t i = ++ctx->last_print_s;
        const struct cl_timeline *tl = &ctx->tl[i];
        fprintf(stderr, "trickle client: %3" PRId64 " s: opened %d, open %d, completed %d, failed %d; %" PRIu64
                        " events, max delay %.1f ms, %" PRIu64 " over %d ms; our loop late by %.1f ms at worst\n",
                i + 1, ctx->opened, ctx->open, ctx->completed, ctx->done - ctx->completed, tl->events,
                (double)tl->max_us / 1000, tl->late, TRICKLE_LATE_US / 1000, (double)tl->lag_us / 1000);
    }
}

static void cl_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct cl_ctx *ctx = arg;
    (void)fd;
    (void)what;
    ctx->timeouts = ctx->streams - ctx->done;
    if (ctx->timeouts > 0)
        cl_note(ctx, "streams still open at the deadline");
    event_base_loopexit(ctx->base, NULL);
}

static int cl_url(struct cl_ctx *ctx, const char *url)
{
    if (strncmp(url, "http://", 7) == 0)
        url += 7;
    snprintf(ctx->host, sizeof(ctx->host), "%s", url);
    ctx->host[strcspn(ctx->host, "/")] = '\0';
    ctx->addr_len = (int)sizeof(ctx->addr);
    return evutil_parse_sockaddr_port(ctx->host, (struct sockaddr *)&ctx->addr, &ctx->addr_len);
}

static int client_main(const char *url, const char *key, const char *model, int streams, double ramp_s, int events,
                       int interval_ms, double timeout_s)
{
    static struct cl_ctx ctx; /* large (the timeline); one per process */
    if (cl_url(&ctx, url) < 0) {
        fprintf(stderr, "trickle client: cannot parse %s (http://IP:PORT)\n", url);
        return 2;
    }
    if (hist_init(&ctx.delay) < 0 || hist_init(&ctx.ttfb) < 0)
        return 1;
    char body[512];
    int bl = snprintf(body, sizeof(body),
                      "{\"model\":\"%s\",\"max_tokens\":1024,\"stream\":true,\"messages\":[{\"role\":\"user\","
                      "\"content\":\"Count slowly, one number a second.\"}]}",
                      model);
    char req[2048];
    int rl = snprintf(req, sizeof(req),
                      "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "anthropic-version: 2023-06-01\r\nx-api-key: %s\r\nAccept: text/event-stream\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      ctx.host, key, bl, body);
    if (rl <= 0 || (size_t)rl >= sizeof(req)) {
        fprintf(stderr, "trickle client: request too long\n");
        return 2;
    }
    ctx.request = req;
    ctx.request_len = (size_t)rl;
    ctx.streams = streams;
    ctx.events = events;
    ctx.interval_us = (int64_t)interval_ms * 1000;
    ctx.ramp_us = (int64_t)(ramp_s * 1e6);
    ctx.last_print_s = -1;
    ctx.base = event_base_new();
    ctx.ramp = event_new(ctx.base, -1, EV_PERSIST, cl_on_ramp, &ctx);
    ctx.second = event_new(ctx.base, -1, EV_PERSIST, cl_on_second, &ctx);
    ctx.deadline = event_new(ctx.base, -1, 0, cl_on_deadline, &ctx);
    struct timeval ramp_tv = {0, CL_TICK_US}, sec_tv = {1, 0};
    struct timeval dl_tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    ctx.t0 = trickle_now_us();
    event_add(ctx.ramp, &ramp_tv);
    event_add(ctx.second, &sec_tv);
    event_add(ctx.deadline, &dl_tv);
    cl_on_ramp(-1, 0, &ctx);
    if (ctx.done < ctx.streams)
        event_base_dispatch(ctx.base);
    int64_t dur = trickle_now_us() - ctx.t0;
    uint64_t late = 0;
    int64_t worst_s = -1, worst = 0;
    for (int i = 0; i < TRICKLE_TIMELINE_MAX; i++) {
        late += ctx.tl[i].late;
        if (ctx.tl[i].max_us > worst) {
            worst = ctx.tl[i].max_us;
            worst_s = i + 1; /* the progress lines count seconds from 1 */
        }
    }
    int failed = ctx.streams - ctx.completed;
    printf("TRICKLE_RESULT streams=%d completed=%d failed=%d connect_errors=%d status_errors=%d first_status=%d "
           "early_close=%d bad_stream=%d timeouts=%d peak_open=%d events=%" PRIu64 " late=%" PRIu64
           " delay_p50_us=%" PRId64 " delay_p99_us=%" PRId64 " delay_p999_us=%" PRId64 " delay_max_us=%" PRId64
           " worst_second=%" PRId64 " ttfb_p50_us=%" PRId64 " ttfb_p99_us=%" PRId64 " ttfb_max_us=%" PRId64
           " client_lag_max_us=%" PRId64 " duration_us=%" PRId64 "\n",
           ctx.streams, ctx.completed, failed, ctx.connect_err, ctx.status_err, ctx.first_status, ctx.early_close,
           ctx.bad_stream, ctx.timeouts, ctx.peak_open, ctx.delay.n, late, hist_q(&ctx.delay, 0.5),
           hist_q(&ctx.delay, 0.99), hist_q(&ctx.delay, 0.999), ctx.delay.max, worst_s, hist_q(&ctx.ttfb, 0.5),
           hist_q(&ctx.ttfb, 0.99), ctx.ttfb.max, ctx.lag_max_us, dur);
    for (int i = 0; i < CL_PHASES; i++)
        printf("TRICKLE_PHASE %s events=%" PRIu64 " late=%" PRIu64 " delay_max_us=%" PRId64 "\n", cl_phase_name[i],
               ctx.phase[i].events, ctx.phase[i].late, ctx.phase[i].max_us);
    if (ctx.first_error[0] != '\0')
        printf("TRICKLE_FIRST_ERROR %s\n", ctx.first_error);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}

/* ====================================================================== */

static void usage(void)
{
    fprintf(stderr,
            "usage: trickle upstream [-b ADDR] [-p PORT] [-e EVENTS] [-i INTERVAL_MS] [-P PORT_FILE]\n"
            "       trickle client -u http://IP:PORT -k KEY -n STREAMS [-R RAMP_S] [-e EVENTS] [-i INTERVAL_MS]\n"
            "                      [-T TIMEOUT_S] [-m MODEL]\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *mode = argv[1];
    const char *bind = "127.0.0.1", *port_file = NULL, *url = NULL, *key = NULL, *model = "trickle";
    int port = 0, events = 30, interval_ms = 1000, streams = 0, opt;
    double ramp = 5, timeout = 0;
    optind = 2;
    while ((opt = getopt(argc, argv, "b:p:e:i:P:u:k:n:R:T:m:")) != -1) {
        switch (opt) {
        case 'b': bind = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'e': events = atoi(optarg); break;
        case 'i': interval_ms = atoi(optarg); break;
        case 'P': port_file = optarg; break;
        case 'u': url = optarg; break;
        case 'k': key = optarg; break;
        case 'n': streams = atoi(optarg); break;
        case 'R': ramp = atof(optarg); break;
        case 'T': timeout = atof(optarg); break;
        case 'm': model = optarg; break;
        default: usage(); return 2;
        }
    }
    if (events < 1 || interval_ms < 1 || port < 0 || port > 65535 || ramp < 0) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    trickle_raise_nofile();
    if (strcmp(mode, "upstream") == 0)
        return upstream_main(bind, port, events, interval_ms, port_file);
    if (strcmp(mode, "client") == 0) {
        if (url == NULL || key == NULL || streams < 1) {
            usage();
            return 2;
        }
        if (timeout <= 0)
            timeout = ramp + (double)events * interval_ms / 1000.0 + 60;
        return client_main(url, key, model, streams, ramp, events, interval_ms, timeout);
    }
    usage();
    return 2;
}
