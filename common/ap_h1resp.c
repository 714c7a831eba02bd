/* HTTP/1.1 responses, read incrementally (see ap_h1resp.h). */
#include "ap_h1resp.h"

#include <string.h>
#include <strings.h>

#define H1R_MAX_LINE 16384

enum {
    S_STATUS, S_SKIP, S_HEADERS, S_BODY_LEN, S_BODY_EOF, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_END,
    S_TRAILERS, S_DONE, S_ERROR,
};

void ap_h1resp_init(struct ap_h1resp *p, int head_request)
{
    memset(p, 0, sizeof(*p));
    p->state = S_STATUS;
    p->no_body = head_request;
}

static size_t h1r_event(struct ap_h1resp_ev *ev, enum ap_h1resp_kind kind, size_t taken)
{
    ev->kind = kind;
    return taken;
}

static size_t h1r_error(struct ap_h1resp *p, struct ap_h1resp_ev *ev, const char *why)
{
    p->state = S_ERROR;
    ev->error = why;
    return h1r_event(ev, AP_H1R_ERROR, 0);
}

/* The line at buf: its length without the line end in *n, the bytes to take with it; 0 when incomplete. */
static size_t h1r_line(const char *buf, size_t len, size_t *n)
{
    const char *nl = memchr(buf, '\n', len);
    if (nl == NULL)
        return 0;
    *n = (size_t)(nl - buf);
    if (*n > 0 && buf[*n - 1] == '\r')
        (*n)--;
    return (size_t)(nl - buf) + 1;
}

static int h1r_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int h1r_ieq(const char *a, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(a, lit, n) == 0;
}

/* Does a comma-separated header value hold `tok`? */
static int h1r_has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ',' || h1r_ows(v[i])))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && h1r_ows(v[e - 1]))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

static size_t h1r_status(struct ap_h1resp *p, const char *buf, size_t len, struct ap_h1resp_ev *ev)
{
    /* Garbage instead of HTTP is refused at its first bytes, not after a line that may never end. */
    if (memcmp(buf, "HTTP/", len < 5 ? len : 5) != 0)
        return h1r_error(p, ev, "not an HTTP response");
    size_t n, take = h1r_line(buf, len, &n);
    if (take == 0)
        return len > H1R_MAX_LINE ? h1r_error(p, ev, "status line too long") : h1r_event(ev, AP_H1R_MORE, 0);
    if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ' ||
        buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9' ||
        (n > 12 && buf[12] != ' '))
        return h1r_error(p, ev, "malformed status line");
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    p->minor = buf[7] - '0';
    if (status < 200 && status != 101) {
        p->state = S_SKIP; /* an interim answer: its headers, then the real status line */
        return h1r_event(ev, AP_H1R_MORE, take);
    }
    p->status = ev->status = status;
    p->keep_alive = p->minor == 1;
    if (status == 204 || status == 304 || status == 101)
        p->no_body = 1;
    p->state = S_HEADERS;
    return h1r_event(ev, AP_H1R_STATUS, take);
}

/* The blank line after the headers: the framing of the body. */
static size_t h1r_headers_done(struct ap_h1resp *p, size_t take, struct ap_h1resp_ev *ev)
{
    if (p->no_body)
        p->state = S_DONE;
    else if (p->chunked)
        p->state = S_CHUNK_SIZE;
    else if (p->has_length)
        p->state = p->left ? S_BODY_LEN : S_DONE;
    else
        p->state = S_BODY_EOF, p->close = 1;
    return h1r_event(ev, AP_H1R_HEADERS_DONE, take);
}

static size_t h1r_header(struct ap_h1resp *p, const char *buf, size_t len, struct ap_h1resp_ev *ev)
{
    size_t n, take = h1r_line(buf, len, &n);
    if (take == 0)
        return len > H1R_MAX_LINE ? h1r_error(p, ev, "header line too long") : h1r_event(ev, AP_H1R_MORE, 0);
    if (n == 0) {
        if (p->state == S_SKIP) {
            p->state = S_STATUS;
            return h1r_event(ev, AP_H1R_MORE, take);
        }
        return h1r_headers_done(p, take, ev);
    }
    if (h1r_ows(buf[0]))
        return h1r_error(p, ev, "folded header line");
    const char *colon = memchr(buf, ':', n);
    if (colon == NULL || colon == buf || h1r_ows(colon[-1]))
        return h1r_error(p, ev, "malformed header line");
    if (p->state == S_SKIP)
        return h1r_event(ev, AP_H1R_MORE, take);
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + n;
    while (v < end && h1r_ows(*v))
        v++;
    while (end > v && h1r_ows(end[-1]))
        end--;
    size_t vl = (size_t)(end - v);
    if (h1r_ieq(buf, nl, "content-length")) {
        uint64_t x = 0;
        if (vl == 0 || vl > 18)
            return h1r_error(p, ev, "malformed Content-Length");
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9')
                return h1r_error(p, ev, "malformed Content-Length");
            x = x * 10 + (uint64_t)(v[i] - '0');
        }
        if (p->has_length && p->left != x)
            return h1r_error(p, ev, "conflicting Content-Length");
        p->has_length = 1;
        p->left = x;
    } else if (h1r_ieq(buf, nl, "transfer-encoding")) {
        /* chunked must be the last coding; anything else is read to the end of the connection */
        size_t i = vl;
        while (i > 0 && v[i - 1] != ',')
            i--;
        while (i < vl && h1r_ows(v[i]))
            i++;
        p->chunked = h1r_ieq(v + i, vl - i, "chunked");
        if (!p->chunked)
            p->close = 1;
    } else if (h1r_ieq(buf, nl, "connection")) {
        if (h1r_has_token(v, vl, "close"))
            p->close = 1;
        else if (h1r_has_token(v, vl, "keep-alive"))
            p->keep_alive = 1;
    }
    if (p->chunked)
        p->has_length = 0; /* Transfer-Encoding overrides Content-Length (RFC 9112 6.3) */
    ev->name = buf;
    ev->name_len = nl;
    ev->value = v;
    ev->value_len = vl;
    return h1r_event(ev, AP_H1R_HEADER, take);
}

static int h1r_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t h1r_chunk_size(struct ap_h1resp *p, const char *buf, size_t len, struct ap_h1resp_ev *ev)
{
    size_t n, take = h1r_line(buf, len, &n);
    if (take == 0)
        return len > H1R_MAX_LINE ? h1r_error(p, ev, "chunk size line too long") : h1r_event(ev, AP_H1R_MORE, 0);
    uint64_t x = 0;
    size_t i = 0;
    for (; i < n && h1r_hex(buf[i]) >= 0; i++) {
        if (i == 15)
            return h1r_error(p, ev, "chunk too large");
        x = x * 16 + (uint64_t)h1r_hex(buf[i]);
    }
    if (i == 0 || (i < n && buf[i] != ';' && !h1r_ows(buf[i])))
        return h1r_error(p, ev, "malformed chunk size");
    p->left = x;
    p->state = x ? S_CHUNK_DATA : S_TRAILERS;
    return h1r_event(ev, AP_H1R_MORE, take);
}

size_t ap_h1resp_next(struct ap_h1resp *p, const char *buf, size_t len, int eof, struct ap_h1resp_ev *ev)
{
    memset(ev, 0, sizeof(*ev));
    switch (p->state) {
    case S_STATUS:
        if (len == 0)
            return eof ? h1r_error(p, ev, "connection closed before an answer") : h1r_event(ev, AP_H1R_MORE, 0);
        {
            size_t t = h1r_status(p, buf, len, ev);
            if (t == 0 && ev->kind == AP_H1R_MORE && eof)
                return h1r_error(p, ev, "connection closed in the status line");
            return t;
        }
    case S_SKIP:
    case S_HEADERS: {
        size_t t = h1r_header(p, buf, len, ev);
        if (t == 0 && ev->kind == AP_H1R_MORE && eof)
            return h1r_error(p, ev, "connection closed in the headers");
        return t;
    }
    case S_BODY_LEN: {
        if (len == 0)
            return eof ? h1r_error(p, ev, "connection closed mid-body") : h1r_event(ev, AP_H1R_MORE, 0);
        size_t n = len < p->left ? len : (size_t)p->left;
        p->left -= n;
        if (p->left == 0)
            p->state = S_DONE;
        ev->data = buf;
        ev->len = n;
        return h1r_event(ev, AP_H1R_DATA, n);
    }
    case S_BODY_EOF:
        if (len == 0) {
            if (!eof)
                return h1r_event(ev, AP_H1R_MORE, 0);
            p->state = S_DONE;
            return h1r_event(ev, AP_H1R_DONE, 0);
        }
        ev->data = buf;
        ev->len = len;
        return h1r_event(ev, AP_H1R_DATA, len);
    case S_CHUNK_SIZE: {
        size_t t = h1r_chunk_size(p, buf, len, ev);
        if (t == 0 && ev->kind == AP_H1R_MORE && eof)
            return h1r_error(p, ev, "connection closed mid-body");
        return t;
    }
    case S_CHUNK_DATA: {
        if (len == 0)
            return eof ? h1r_error(p, ev, "connection closed mid-chunk") : h1r_event(ev, AP_H1R_MORE, 0);
        size_t n = len < p->left ? len : (size_t)p->left;
        p->left -= n;
        if (p->left == 0)
            p->state = S_CHUNK_END;
        ev->data = buf;
        ev->len = n;
        return h1r_event(ev, AP_H1R_DATA, n);
    }
    case S_CHUNK_END: {
        size_t n, take = h1r_line(buf, len, &n);
        if (take == 0)
            return eof || len >= 2 ? h1r_error(p, ev, "malformed chunk end") : h1r_event(ev, AP_H1R_MORE, 0);
        if (n != 0)
            return h1r_error(p, ev, "chunk longer than its size");
        p->state = S_CHUNK_SIZE;
        return h1r_event(ev, AP_H1R_MORE, take);
    }
    case S_TRAILERS: {
        size_t n, take = h1r_line(buf, len, &n);
        if (take == 0) {
            if (p->trailer + len > H1R_MAX_LINE || eof)
                return h1r_error(p, ev, "malformed trailers");
            return h1r_event(ev, AP_H1R_MORE, 0);
        }
        if (n == 0) {
            p->state = S_DONE;
            return h1r_event(ev, AP_H1R_DONE, take);
        }
        if ((p->trailer += take) > H1R_MAX_LINE)
            return h1r_error(p, ev, "trailers too long");
        return h1r_event(ev, AP_H1R_MORE, take);
    }
    case S_DONE:
        return h1r_event(ev, AP_H1R_DONE, 0);
    default:
        ev->error = "malformed response";
        return h1r_event(ev, AP_H1R_ERROR, 0);
    }
}

int ap_h1resp_reusable(const struct ap_h1resp *p)
{
    return p->state == S_DONE && !p->close && p->keep_alive;
}
