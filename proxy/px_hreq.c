/*
 * One client request and its reply: what handlers read (method, path,
 * headers, body) and how they answer (a whole reply, or a stream in chunks).
 * The bytes go to the connection's output buffer and out at once; see
 * px_http.h for the ownership rule (exactly one completing call).
 */
#include "px_conn.h"

#include "px.h"

#include "ap_put.h"

#include <event2/buffer.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum px_method px_hreq_method(const struct px_hreq *h)
{
    return h->method;
}

const char *px_hreq_method_name(const struct px_hreq *h)
{
    return h->h1.method;
}

const char *px_hreq_target(const struct px_hreq *h)
{
    return h->h1.target;
}

const char *px_hreq_raw_path(const struct px_hreq *h)
{
    return h->raw_path;
}

const char *px_hreq_path(const struct px_hreq *h)
{
    return h->path;
}

const char *px_hreq_query(const struct px_hreq *h)
{
    return h->query;
}

const char *px_hreq_header(const struct px_hreq *h, const char *name)
{
    return ap_http1_header(&h->h1, name);
}

size_t px_hreq_nheaders(const struct px_hreq *h)
{
    return h->h1.nhdr;
}

void px_hreq_header_at(const struct px_hreq *h, size_t i, const char **name, const char **value)
{
    *name = h->h1.hdr[i].name;
    *value = h->h1.hdr[i].value;
}

const char *px_hreq_body(const struct px_hreq *h, size_t *len)
{
    *len = h->body_len;
    return h->body_len ? h->body : "";
}

int px_hreq_client_gone(const struct px_hreq *h)
{
    return h->conn->dead;
}

/* ---- the reply ---- */

static int hreq_rh_append(struct px_hreq *h, const char *s, size_t n)
{
    if (h->rh_len + n > h->rh_cap) {
        size_t cap = h->rh_cap ? h->rh_cap * 2 : 512;
        while (cap < h->rh_len + n)
            cap *= 2;
        char *p = realloc(h->rh, cap);
        if (p == NULL)
            return -1;
        h->rh = p;
        h->rh_cap = cap;
    }
    memcpy(h->rh + h->rh_len, s, n);
    h->rh_len += n;
    return 0;
}

void px_hreq_add_header(struct px_hreq *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    /* Whatever a header came from (an upstream, a client), it cannot split the reply. */
    if (h->started || nl == 0 || strpbrk(name, ":\r\n ") != NULL || memchr(value, '\r', vl) != NULL ||
        memchr(value, '\n', vl) != NULL)
        return;
    if (hreq_rh_append(h, name, nl) < 0 || hreq_rh_append(h, ": ", 2) < 0 || hreq_rh_append(h, value, vl) < 0 ||
        hreq_rh_append(h, "\r\n", 2) < 0)
        h->rh_len = 0; /* out of memory: the reply goes without its extra headers */
}

int px_hreq_has_reply_header(const struct px_hreq *h, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->rh_len;) {
        const char *line = h->rh + i;
        const char *eol = memchr(line, '\n', h->rh_len - i);
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':')
            return 1;
        i = (size_t)(eol - h->rh) + 1;
    }
    return 0;
}

void px_hreq_close_after(struct px_hreq *h)
{
    h->close_after = 1;
}

/* The Date header's value, formatted once a second. */
static const char *hreq_date(void)
{
    static char buf[40];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

/*
 * Status line and headers into buf (the headers are rarely more than a few
 * hundred bytes; buf is sized by the caller from rh_len). length < 0: a
 * streamed reply (chunked, or to the end of the connection for an HTTP/1.0
 * client). Returns the head's length.
 */
static size_t hreq_head(struct px_hreq *h, int status, long long length, char *buf, size_t cap)
{
    struct px_conn *c = h->conn;
    int keep = h->h1.keep_alive && !h->close_after && !c->idle_close;
    if (length < 0 && h->h1.minor == 0) {
        h->eof_reply = 1; /* no chunked framing in HTTP/1.0: the end of the connection ends it */
        keep = 0;
    }
    if (!keep)
        h->close_after = 1;
    h->started = 1;
    h->chunked_reply = length < 0 && !h->eof_reply;
    (void)cap; /* HREQ_HEAD_ROOM covers everything but rh */
    size_t o = AP_PUT_LIT(buf, 0, "HTTP/1.1 ");
    o = ap_put_dec(buf, o, (unsigned)status);
    buf[o++] = ' ';
    o = ap_put_str(buf, o, px_status_reason(status));
    o = AP_PUT_LIT(buf, o, "\r\nDate: ");
    o = ap_put_str(buf, o, hreq_date());
    o = AP_PUT_LIT(buf, o, "\r\n");
    if (h->rh_len > 0)
        o = ap_put(buf, o, h->rh, h->rh_len);
    int bodiless = status == 204 || status == 304 || status < 200;
    if (!bodiless && !px_hreq_has_reply_header(h, "content-type"))
        o = AP_PUT_LIT(buf, o, "Content-Type: application/json\r\n");
    if (bodiless) {
        ; /* no body, no length (RFC 9110 8.6) */
    } else if (length >= 0) {
        o = AP_PUT_LIT(buf, o, "Content-Length: ");
        o = ap_put_dec(buf, o, (unsigned long long)length);
        o = AP_PUT_LIT(buf, o, "\r\n");
    } else if (h->chunked_reply) {
        o = AP_PUT_LIT(buf, o, "Transfer-Encoding: chunked\r\n");
    }
    if (!keep)
        o = AP_PUT_LIT(buf, o, "Connection: close\r\n");
    else if (h->h1.minor == 0)
        o = AP_PUT_LIT(buf, o, "Connection: keep-alive\r\n");
    o = AP_PUT_LIT(buf, o, "\r\n");
    return o;
}

#define HREQ_HEAD_ROOM 512

/* Writes the head (and a body) in one writev; `body` may be NULL. */
static void hreq_write(struct px_hreq *h, int status, long long length, const char *body, size_t len)
{
    char stack[4096];
    size_t cap = h->rh_len + HREQ_HEAD_ROOM;
    char *buf = cap <= sizeof(stack) ? stack : malloc(cap);
    if (buf == NULL) {
        px_conn_close(h->conn);
        return;
    }
    struct iovec iov[2] = {{buf, hreq_head(h, status, length, buf, cap)}, {(void *)body, len}};
    px_conn_writev(h->conn, iov, body != NULL && len > 0 && !h->head_only ? 2 : 1);
    if (buf != stack)
        free(buf);
}

void px_hreq_send(struct px_hreq *h, int status, const char *body, size_t len)
{
    struct px_conn *c = h->conn;
    if (!c->dead && !h->started)
        hreq_write(h, status, (long long)len, body, len);
    px_conn_request_done(c);
}

void px_hreq_send_buf(struct px_hreq *h, int status, struct evbuffer *body)
{
    struct px_conn *c = h->conn;
    size_t len = body ? evbuffer_get_length(body) : 0;
    if (!c->dead && !h->started) {
        /* One contiguous body is written with the head; a long chain is moved, not copied. */
        if (len == 0 || evbuffer_get_contiguous_space(body) == len) {
            hreq_write(h, status, (long long)len, len ? (const char *)evbuffer_pullup(body, -1) : NULL, len);
        } else {
            hreq_write(h, status, (long long)len, NULL, 0);
            if (!h->head_only && !c->dead)
                evbuffer_add_buffer(c->out, body);
            px_conn_flush(c);
        }
    }
    if (body != NULL)
        evbuffer_drain(body, evbuffer_get_length(body));
    px_conn_request_done(c);
}

void px_hreq_start(struct px_hreq *h, int status)
{
    if (h->conn->dead || h->started)
        return;
    hreq_write(h, status, -1, NULL, 0);
}

/* "<hex length>\r\n" into sz (24 bytes): the chunk-size line of chunked framing. */
static size_t hreq_size_line(char *sz, size_t len)
{
    size_t n = ap_put_hex(sz, 0, len);
    return AP_PUT_LIT(sz, n, "\r\n");
}

static void hreq_chunk_size(struct px_hreq *h, size_t len)
{
    char sz[24];
    evbuffer_add(h->conn->out, sz, hreq_size_line(sz, len));
}

void px_hreq_chunk(struct px_hreq *h, const char *data, size_t len)
{
    struct px_conn *c = h->conn;
    if (c->dead || !h->started || len == 0 || h->head_only)
        return;
    char sz[24];
    struct iovec iov[3] = {{sz, 0}, {(void *)data, len}, {(void *)"\r\n", 2}};
    if (h->chunked_reply) {
        iov[0].iov_len = hreq_size_line(sz, len);
        px_conn_writev(c, iov, 3);
    } else {
        px_conn_writev(c, iov + 1, 1);
    }
}

/*
 * Small pieces (an SSE event is often ~100 bytes) are copied into the output
 * buffer's last chain rather than moved: moving would leave three 1 KB chains
 * (size line, data, CRLF) per event in the output, and a malloc each.
 */
#define HREQ_COPY_MAX 16384

void px_hreq_chunk_buf(struct px_hreq *h, struct evbuffer *b)
{
    struct px_conn *c = h->conn;
    size_t len = evbuffer_get_length(b);
    if (c->dead || !h->started || len == 0 || h->head_only) {
        evbuffer_drain(b, len);
        return;
    }
    if (len <= HREQ_COPY_MAX) {
        char tmp[HREQ_COPY_MAX];
        evbuffer_remove(b, tmp, len);
        px_hreq_chunk(h, tmp, len);
        return;
    }
    if (h->chunked_reply)
        hreq_chunk_size(h, len);
    evbuffer_add_buffer(c->out, b);
    if (h->chunked_reply)
        evbuffer_add(c->out, "\r\n", 2);
    px_conn_flush(c);
}

void px_hreq_end(struct px_hreq *h)
{
    struct px_conn *c = h->conn;
    h->held = 0;
    if (!c->dead && h->started && h->chunked_reply && !h->head_only)
        evbuffer_add(c->out, "0\r\n\r\n", 5);
    px_conn_flush(c);
    px_conn_request_done(c);
}

void px_hreq_hold(struct px_hreq *h)
{
    h->held = 1;
}

size_t px_hreq_backlog(const struct px_hreq *h)
{
    return h->conn->dead ? 0 : evbuffer_get_length(h->conn->out);
}

void px_hreq_on_drain(struct px_hreq *h, px_hreq_fn fn, void *arg)
{
    h->on_drain = fn;
    h->drain_arg = arg;
}

void px_hreq_on_close(struct px_hreq *h, px_hreq_fn fn, void *arg)
{
    h->on_close = fn;
    h->close_arg = arg;
}
