/*
 * HTTP/1.1 request framing, strictly (see ap_http1.h for why strict).
 * Written by hand: libevent's evhttp parser is not separable from its server,
 * and no other dependency parses HTTP requests.
 */
#include "ap_http1.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP1_MAX_LENGTH ((uint64_t)1 << 62)
#define HTTP1_MAX_CHUNK_LINE 4096
#define HTTP1_MAX_TRAILERS 8192

static int http1_fail(struct ap_http1_err *err, int status, const char *reason)
{
    err->status = status;
    err->reason = reason;
    return -1;
}

/* RFC 9110 5.6.2 token characters. */
static int http1_tchar(unsigned char c)
{
    static const unsigned char t[256] = {
        ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
        ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
        ['8'] = 1, ['9'] = 1,
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
        ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
        ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
        ['Y'] = 1, ['Z'] = 1,
        ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
        ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
        ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
        ['y'] = 1, ['z'] = 1,
    };
    return t[c];
}

long ap_http1_head_end(const char *buf, size_t len, size_t *scan, struct ap_http1_err *err)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t i = *scan;

    /* A TLS handshake (0x16 0x03) on the plain port: say so at once instead of waiting. */
    if (len > 0 && b[0] == 0x16)
        return http1_fail(err, 400, "this port speaks plain HTTP, not TLS");
    /* The method is the first thing on the wire: garbage there is refused without waiting. */
    size_t m = 0;
    while (m < len && m < 32 && http1_tchar(b[m]))
        m++;
    if (m < len && (m == 32 || b[m] != ' '))
        return http1_fail(err, 400, "malformed request line");
    for (; i < len; i++) {
        unsigned char c = b[i];
        if (c == '\n') {
            if (i == 0 || b[i - 1] != '\r')
                return http1_fail(err, 400, "bare LF in the request head");
            if (i >= 3 && b[i - 2] == '\n' && b[i - 3] == '\r')
                return (long)(i + 1);
        } else if (c == '\r') {
            if (i + 1 == len)
                break; /* is an LF next? wait and see */
            if (b[i + 1] != '\n')
                return http1_fail(err, 400, "bare CR in the request head");
        } else if (c == '\0') {
            return http1_fail(err, 400, "NUL byte in the request head");
        }
    }
    *scan = i;
    return 0;
}

static int http1_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Case-insensitive: is `tok` one of the comma-separated tokens of `list`? */
static int http1_has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    const char *p = list;
    while (*p != '\0') {
        while (*p == ',' || http1_ows(*p))
            p++;
        const char *s = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *e = p;
        while (e > s && http1_ows(e[-1]))
            e--;
        if ((size_t)(e - s) == n && strncasecmp(s, tok, n) == 0)
            return 1;
    }
    return 0;
}

static int http1_parse_length(const char *v, uint64_t *out)
{
    uint64_t n = 0;
    if (*v == '\0')
        return -1;
    for (; *v != '\0'; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        n = n * 10 + (uint64_t)(*v - '0');
        if (n > HTTP1_MAX_LENGTH)
            return -1;
    }
    *out = n;
    return 0;
}

/* The request line: method SP request-target SP HTTP-version. Returns the next line or NULL. */
static char *http1_request_line(char *p, char *end, struct ap_http1_req *r, struct ap_http1_err *err)
{
    char *m = p;
    while (p < end && http1_tchar((unsigned char)*p))
        p++;
    if (p == m || p >= end || *p != ' ') {
        http1_fail(err, 400, "malformed request line");
        return NULL;
    }
    *p++ = '\0';
    r->method = m;
    char *t = p;
    while (p < end && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && *p != '#')
        p++;
    if (p == t || p >= end || *p != ' ') {
        http1_fail(err, 400, "malformed request target");
        return NULL;
    }
    r->target = t;
    r->target_len = (size_t)(p - t);
    *p++ = '\0';
    if (end - p < 10 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[8] != '\r' || p[9] != '\n' ||
        p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9') {
        http1_fail(err, 400, "malformed HTTP version");
        return NULL;
    }
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1')) {
        http1_fail(err, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
        return NULL;
    }
    r->minor = p[7] - '0';
    if (t[0] != '/' && !(t[0] == '*' && t[1] == '\0' && strcmp(m, "OPTIONS") == 0)) {
        http1_fail(err, 400, "the request target must be a path");
        return NULL;
    }
    return p + 10;
}

/* One header line [p, eol) (eol at its CR). 0, or -1 with err. */
static int http1_header_line(char *p, char *eol, struct ap_http1_req *r, struct ap_http1_err *err)
{
    if (http1_ows(*p))
        return http1_fail(err, 400, "obsolete line folding in a header");
    char *name = p;
    while (p < eol && http1_tchar((unsigned char)*p))
        p++;
    if (p == name)
        return http1_fail(err, 400, "malformed header name");
    if (p >= eol || *p != ':')
        return http1_fail(err, 400, http1_ows(*p) ? "whitespace before a header's colon" : "malformed header line");
    *p++ = '\0';
    while (p < eol && http1_ows(*p))
        p++;
    char *v = p, *ve = eol;
    while (ve > v && http1_ows(ve[-1]))
        ve--;
    for (char *q = v; q < ve; q++) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 ? c != '\t' : c == 0x7f)
            return http1_fail(err, 400, "control character in a header value");
    }
    *ve = '\0';
    if (r->nhdr == AP_HTTP1_MAX_HEADERS)
        return http1_fail(err, 431, "too many header lines");
    r->hdr[r->nhdr++] = (struct ap_http1_hdr){name, v, (size_t)(ve - v)};
    return 0;
}

/* What the headers mean for the framing and the connection. */
static int http1_semantics(struct ap_http1_req *r, struct ap_http1_err *err)
{
    const char *cl = NULL, *te = NULL;
    int hosts = 0;
    r->keep_alive = r->minor == 1;
    for (size_t i = 0; i < r->nhdr; i++) {
        const char *n = r->hdr[i].name, *v = r->hdr[i].value;
        size_t nl = strlen(n);
        if (AP_HTTP1_IS(n, nl, "content-length")) {
            if (cl != NULL && strcmp(cl, v) != 0)
                return http1_fail(err, 400, "conflicting Content-Length headers");
            cl = v;
        } else if (AP_HTTP1_IS(n, nl, "transfer-encoding")) {
            if (te != NULL)
                return http1_fail(err, 501, "unsupported Transfer-Encoding");
            te = v;
        } else if (AP_HTTP1_IS(n, nl, "host")) {
            hosts++;
        } else if (AP_HTTP1_IS(n, nl, "connection")) {
            if (http1_has_token(v, "close"))
                r->keep_alive = 0;
            else if (r->minor == 0 && http1_has_token(v, "keep-alive"))
                r->keep_alive = 1;
        } else if (AP_HTTP1_IS(n, nl, "expect")) {
            if (strcasecmp(v, "100-continue") != 0)
                return http1_fail(err, 417, "unsupported expectation");
            r->expect_continue = r->minor == 1;
        }
    }
    if (r->minor == 1 && hosts != 1)
        return http1_fail(err, 400, hosts ? "more than one Host header" : "missing Host header");
    if (te != NULL) {
        if (cl != NULL)
            return http1_fail(err, 400, "Content-Length together with Transfer-Encoding");
        if (r->minor == 0)
            return http1_fail(err, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (strcasecmp(te, "chunked") != 0)
            return http1_fail(err, 501, "unsupported Transfer-Encoding");
        r->body = AP_HTTP1_BODY_CHUNKED;
    } else if (cl != NULL) {
        if (http1_parse_length(cl, &r->content_length) < 0)
            return http1_fail(err, 400, "malformed Content-Length");
        r->body = r->content_length > 0 ? AP_HTTP1_BODY_LENGTH : AP_HTTP1_BODY_NONE;
    }
    return 0;
}

int ap_http1_parse(char *head, size_t len, struct ap_http1_req *r, struct ap_http1_err *err)
{
    char *end = head + len;
    memset(r, 0, offsetof(struct ap_http1_req, hdr));
    r->nhdr = 0;
    r->body = AP_HTTP1_BODY_NONE;
    r->content_length = 0;
    r->keep_alive = 0;
    r->expect_continue = 0;
    char *p = http1_request_line(head, end, r, err);
    if (p == NULL)
        return -1;
    while (p < end) {
        char *eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
            return http1_fail(err, 400, "malformed request head");
        if (eol == p)
            return p + 2 == end ? http1_semantics(r, err) : http1_fail(err, 400, "malformed request head");
        if (http1_header_line(p, eol, r, err) < 0)
            return -1;
        p = eol + 2;
    }
    return http1_fail(err, 400, "malformed request head");
}

int ap_http1_name_in(const char *name, size_t len, const struct ap_http1_name *tab, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i].len == len && strcasecmp(name, tab[i].s) == 0)
            return 1;
    return 0;
}

const char *ap_http1_header(const struct ap_http1_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (strcasecmp(r->hdr[i].name, name) == 0)
            return r->hdr[i].value;
    return NULL;
}

/* ---- chunked bodies ---- */

enum { CH_SIZE, CH_SIZE_WS, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF,
       CH_END_LF, CH_DONE };

static int http1_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int http1_append(char **out, size_t *out_len, size_t *out_cap, const char *p, size_t n)
{
    if (*out_len + n + 1 > *out_cap) {
        size_t cap = *out_cap ? *out_cap : 4096;
        while (cap < *out_len + n + 1)
            cap *= 2;
        char *q = realloc(*out, cap);
        if (q == NULL)
            return -1;
        *out = q;
        *out_cap = cap;
    }
    memcpy(*out + *out_len, p, n);
    *out_len += n;
    (*out)[*out_len] = '\0';
    return 0;
}

long ap_http1_chunked_feed(struct ap_http1_chunked *c, const char *in, size_t len, char **out,
                           size_t *out_len, size_t *out_cap, size_t max, int *done,
                           struct ap_http1_err *err)
{
    size_t i = 0;
    *done = c->state == CH_DONE;
    while (i < len && c->state != CH_DONE) {
        char ch = in[i];
        switch (c->state) {
        case CH_SIZE: {
            int d = http1_hex(ch);
            if (d >= 0) {
                if (++c->digits > 15)
                    return http1_fail(err, 400, "chunk size too large");
                c->left = c->left * 16 + (uint64_t)d;
                break;
            }
            if (c->digits == 0)
                return http1_fail(err, 400, "malformed chunk size");
            if (http1_ows(ch))
                c->state = CH_SIZE_WS;
            else if (ch == ';')
                c->state = CH_EXT;
            else if (ch == '\r')
                c->state = CH_SIZE_LF;
            else
                return http1_fail(err, 400, "malformed chunk size");
            break;
        }
        case CH_SIZE_WS:
            if (ch == ';')
                c->state = CH_EXT;
            else if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (!http1_ows(ch))
                return http1_fail(err, 400, "malformed chunk size");
            break;
        case CH_EXT:
            if (++c->line > HTTP1_MAX_CHUNK_LINE)
                return http1_fail(err, 400, "chunk extension too long");
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if ((unsigned char)ch < 0x20 && ch != '\t')
                return http1_fail(err, 400, "malformed chunk extension");
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return http1_fail(err, 400, "malformed chunk size line");
            c->line = 0;
            c->digits = 0;
            if (c->left == 0) {
                c->state = CH_TRAILER;
            } else {
                if (*out_len + c->left > max)
                    return http1_fail(err, 413, "request body too large");
                c->state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t n = len - i < c->left ? len - i : (size_t)c->left;
            if (http1_append(out, out_len, out_cap, in + i, n) < 0)
                return http1_fail(err, 500, "out of memory");
            c->left -= n;
            i += n;
            if (c->left == 0)
                c->state = CH_DATA_CR;
            continue;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                return http1_fail(err, 400, "chunk data longer than its size");
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return http1_fail(err, 400, "malformed chunk end");
            c->state = CH_SIZE;
            break;
        case CH_TRAILER:
            /* A trailer line, or the empty line ending the body. Trailers are read and dropped. */
            if (ch == '\r') {
                c->state = c->line == 0 ? CH_END_LF : CH_TRAILER_LF;
                break;
            }
            if (++c->trailer > HTTP1_MAX_TRAILERS)
                return http1_fail(err, 400, "trailers too long");
            if ((unsigned char)ch < 0x20 && ch != '\t')
                return http1_fail(err, 400, "malformed trailer");
            c->line++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                return http1_fail(err, 400, "malformed trailer");
            c->line = 0;
            c->state = CH_TRAILER;
            break;
        case CH_END_LF:
            if (ch != '\n')
                return http1_fail(err, 400, "malformed end of chunked body");
            c->state = CH_DONE;
            break;
        }
        i++;
    }
    if (c->state == CH_DONE) {
        *done = 1;
        if (*out == NULL && http1_append(out, out_len, out_cap, "", 0) < 0)
            return http1_fail(err, 500, "out of memory");
    }
    return (long)i;
}

/* ---- paths ---- */

int ap_http1_path_decode(const char *target, size_t target_len, char *out, size_t out_size)
{
    size_t o = 0;
    if (target_len == 0 || target[0] != '/')
        return -1;
    for (size_t i = 0; i < target_len && target[i] != '?'; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c == '%') {
            int hi = i + 2 < target_len ? http1_hex(target[i + 1]) : -1;
            int lo = hi >= 0 ? http1_hex(target[i + 2]) : -1;
            if (lo < 0)
                return -1;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= out_size)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    /* Dot segments, with a backslash counted as a slash (some servers do). */
    for (size_t s = 0; s < o;) {
        size_t e = s + 1;
        while (e < o && out[e] != '/' && out[e] != '\\')
            e++;
        size_t n = e - s - 1;
        if ((n == 1 && out[s + 1] == '.') || (n == 2 && out[s + 1] == '.' && out[s + 2] == '.'))
            return -1;
        s = e;
    }
    return 0;
}
