/*
 * One-pass JSON validation with top-level member capture; see ap_jscan.h.
 * A recursive descent over the bytes; strings are skipped with memchr-like
 * loops, nothing is allocated.
 */
#include "ap_jscan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSCAN_MAX_DEPTH 1000

struct jscan {
    const unsigned char *p;
    const unsigned char *end;
    int depth;
};

static void jscan_ws(struct jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int jscan_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * Skips plain string bytes 8 at a time (long prompts are most of a request):
 * stops at the first word holding a quote, a backslash or a control byte.
 */
static const unsigned char *jscan_plain(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        uint64_t special = ((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w);
        if (special & highs)
            break;
        p += 8;
    }
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20)
        p++;
    return p;
}

/* At the opening quote; leaves p after the closing one. Reports the contents. */
static int jscan_string(struct jscan *s, const char **start, size_t *len, int *escaped)
{
    const unsigned char *p = s->p + 1;
    int esc = 0;
    for (;;) {
        p = jscan_plain(p, s->end);
        if (p >= s->end || *p < 0x20)
            return -1;
        if (*p == '"')
            break;
        esc = 1;
        if (p + 1 >= s->end)
            return -1;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            break;
        case 'u':
            if (p + 5 >= s->end || !jscan_hex(p[2]) || !jscan_hex(p[3]) || !jscan_hex(p[4]) || !jscan_hex(p[5]))
                return -1;
            p += 6;
            break;
        default:
            return -1;
        }
    }
    if (start != NULL) {
        *start = (const char *)s->p + 1;
        *len = (size_t)(p - (s->p + 1));
        *escaped = esc;
    }
    s->p = p + 1;
    return 0;
}

static int jscan_digits(struct jscan *s)
{
    const unsigned char *b = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > b ? 0 : -1;
}

static int jscan_number(struct jscan *s)
{
    if (*s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return -1;
    if (*s->p == '0')
        s->p++;
    else if (jscan_digits(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (jscan_digits(s) < 0)
            return -1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (jscan_digits(s) < 0)
            return -1;
    }
    return 0;
}

static int jscan_literal(struct jscan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int jscan_value(struct jscan *s, enum ap_jtype *type, struct ap_jscan *top, int level);

/* An object; at level 0 (the document) and 1 (stream_options) members of interest are captured. */
static int jscan_object(struct jscan *s, struct ap_jscan *top, int level)
{
    s->p++;
    jscan_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        const char *k;
        size_t kl;
        int kesc;
        if (s->p >= s->end || *s->p != '"' || jscan_string(s, &k, &kl, &kesc) < 0)
            return -1;
        jscan_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -1;
        s->p++;
        jscan_ws(s);
        if (s->p >= s->end)
            return -1;

        enum ap_jtype t, *slot = NULL;
        const char **raw = NULL, *vstart = (const char *)s->p;
        int is_model = 0, is_options = 0;
        if (top != NULL && level == 0 && !kesc) {
            if (kl == 5 && memcmp(k, "model", 5) == 0 && top->model == AP_J_ABSENT) {
                slot = &top->model;
                is_model = 1;
            } else if (kl == 6 && memcmp(k, "stream", 6) == 0 && top->stream == AP_J_ABSENT) {
                slot = &top->stream;
            } else if (kl == 14 && memcmp(k, "stream_options", 14) == 0 && top->stream_options == AP_J_ABSENT) {
                slot = &top->stream_options;
                is_options = 1;
            } else if (kl == 10 && memcmp(k, "max_tokens", 10) == 0 && top->max_tokens == AP_J_ABSENT) {
                slot = &top->max_tokens;
                raw = &top->max_tokens_raw;
            } else if (kl == 21 && memcmp(k, "max_completion_tokens", 21) == 0 &&
                       top->max_completion_tokens == AP_J_ABSENT) {
                slot = &top->max_completion_tokens;
                raw = &top->max_completion_tokens_raw;
            }
        } else if (top != NULL && level == 1 && !kesc && kl == 13 && memcmp(k, "include_usage", 13) == 0 &&
                   top->include_usage == AP_J_ABSENT) {
            slot = &top->include_usage;
        }
        if (is_model && *s->p == '"') {
            if (jscan_string(s, &top->model_raw, &top->model_len, &top->model_escaped) < 0)
                return -1;
            t = AP_J_STRING;
        } else if (jscan_value(s, &t, is_options ? top : NULL, is_options ? 1 : 2) < 0) {
            return -1;
        }
        if (slot != NULL)
            *slot = t;
        if (raw != NULL && t == AP_J_NUMBER)
            *raw = vstart;
        jscan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            jscan_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 0;
        }
        return -1;
    }
}

static int jscan_array(struct jscan *s)
{
    s->p++;
    jscan_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        enum ap_jtype t;
        if (jscan_value(s, &t, NULL, 2) < 0)
            return -1;
        jscan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            jscan_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        return -1;
    }
}

static int jscan_value(struct jscan *s, enum ap_jtype *type, struct ap_jscan *top, int level)
{
    if (s->p >= s->end)
        return -1;
    int rc;
    switch (*s->p) {
    case '{':
        if (++s->depth > JSCAN_MAX_DEPTH)
            return -1;
        *type = AP_J_OBJECT;
        rc = jscan_object(s, top, level);
        s->depth--;
        return rc;
    case '[':
        if (++s->depth > JSCAN_MAX_DEPTH)
            return -1;
        *type = AP_J_ARRAY;
        rc = jscan_array(s);
        s->depth--;
        return rc;
    case '"':
        *type = AP_J_STRING;
        return jscan_string(s, NULL, NULL, NULL);
    case 't':
        *type = AP_J_TRUE;
        return jscan_literal(s, "true");
    case 'f':
        *type = AP_J_FALSE;
        return jscan_literal(s, "false");
    case 'n':
        *type = AP_J_NULL;
        return jscan_literal(s, "null");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            *type = AP_J_NUMBER;
            return jscan_number(s);
        }
        return -1;
    }
}

int ap_jscan(const char *buf, size_t len, struct ap_jscan *out)
{
    struct jscan s = {(const unsigned char *)buf, (const unsigned char *)buf + len, 0};
    memset(out, 0, sizeof(*out));
    jscan_ws(&s);
    if (jscan_value(&s, &out->root, out, 0) < 0)
        return -1;
    jscan_ws(&s);
    return s.p == s.end ? 0 : -1;
}

long long ap_jscan_max_tokens(const struct ap_jscan *js)
{
    const char *raw = js->max_completion_tokens == AP_J_NUMBER ? js->max_completion_tokens_raw
                      : js->max_tokens == AP_J_NUMBER          ? js->max_tokens_raw
                                                               : NULL;
    if (raw == NULL)
        return -1;
    /* The scan proved it a JSON number, and a number's text ends before the next delimiter. */
    double v = strtod(raw, NULL);
    return v >= 0 && v < 1e15 ? (long long)v : -1;
}
