/*
 * One-pass JSON validation with top-level member capture; see ap_jscan.h.
 * A recursive descent over the bytes; strings are skipped eight bytes at a
 * time. Duplicate names: every open object owns a run of entries on one name
 * stack (and its escaped names' decoded bytes a run of one arena); when the
 * object closes its run is checked and popped, so memory follows the nesting,
 * not the document. Small objects are checked pair by pair, large ones sorted
 * by (hash, length, bytes): O(k log k) whatever the names, no seed needed.
 *
 *   {"a":1,"b":{"c":2,"a":3},"d":4}
 *   names: [a] [a b] [a b | c] [a b | c a]  close: check {c,a}, pop  [a b d]  close: check
 */
#include "ap_jscan.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSCAN_MAX_DEPTH 1000  /* cJSON's CJSON_NESTING_LIMIT */
#define JSCAN_MAX_NUMBER 63   /* cJSON copies at most 63 characters of a number */
#define JSCAN_PAIRWISE 8      /* objects up to this many members are checked pair by pair */
#define JSCAN_NO_ARENA SIZE_MAX

/* Capture levels: the document's members, stream_options' members, nothing. */
enum { JSCAN_TOP, JSCAN_OPTIONS, JSCAN_NONE };

struct jname {
    const unsigned char *raw;   /* the name as written (into the input) */
    size_t rawlen;
    const unsigned char *d;     /* decoded bytes: raw, or the arena once resolved */
    size_t dlen;
    size_t aoff;                /* offset of the decoded bytes in the arena, or JSCAN_NO_ARENA */
    uint64_t h;                 /* set only for sorting */
};

struct jscan {
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    struct ap_jscan *top;       /* the caller's result */
    int verdict;                /* the first AP_JSCAN_DUPLICATE / NUL_NAME seen; the scan goes on */
    struct jname *names;        /* the name stack: inl, or malloc'd past it */
    size_t nnames, cap;
    unsigned char *arena;       /* decoded escaped names: ainl, or malloc'd past it */
    size_t alen, acap;
    struct jname inl[32];
    unsigned char ainl[256];
};

struct jstr {
    const unsigned char *b;     /* contents, between the quotes */
    size_t len;
    int escaped;                /* holds a backslash escape */
    int nul;                    /* decodes to something holding U+0000 */
};

static void jscan_ws(struct jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int jscan_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The code unit of "\uXXXX" at p (p[0] is the backslash), or -1. */
static long jscan_u4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    long v = 0;
    for (int i = 2; i < 6; i++) {
        int x = jscan_hexval(p[i]);
        if (x < 0)
            return -1;
        v = v << 4 | x;
    }
    return v;
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

/*
 * At the opening quote; leaves p after the closing one. Escapes are checked
 * as cJSON decodes them: \u surrogates only as a high-low pair.
 */
static int jscan_string(struct jscan *s, struct jstr *out)
{
    const unsigned char *p = s->p + 1;
    int esc = 0, nul = 0;
    for (;;) {
        p = jscan_plain(p, s->end);
        if (p >= s->end || *p < 0x20)
            goto bad;
        if (*p == '"')
            break;
        esc = 1;
        if (p + 1 >= s->end)
            goto bad;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            break;
        case 'u': {
            long u = jscan_u4(p, s->end);
            if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
                goto bad;
            if (u >= 0xD800 && u <= 0xDBFF) {
                long lo = jscan_u4(p + 6, s->end);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                p += 6;
            }
            nul |= u == 0;
            p += 6;
            break;
        }
        default:
            goto bad;
        }
    }
    out->b = s->p + 1;
    out->len = (size_t)(p - (s->p + 1));
    out->escaped = esc;
    out->nul = nul;
    s->p = p + 1;
    return 0;
bad:
    s->p = p;
    return AP_JSCAN_INVALID;
}

/*
 * Decodes validated string contents into out, writing at most cap bytes;
 * returns the whole decoded length (never more than len).
 */
static size_t jscan_decode(const unsigned char *p, size_t len, unsigned char *out, size_t cap)
{
    const unsigned char *end = p + len;
    size_t n = 0;
    while (p < end) {
        unsigned long c;
        if (*p != '\\') {
            if (n < cap)
                out[n] = *p;
            n++;
            p++;
            continue;
        }
        switch (p[1]) {
        case 'b': c = '\b'; p += 2; break;
        case 'f': c = '\f'; p += 2; break;
        case 'n': c = '\n'; p += 2; break;
        case 'r': c = '\r'; p += 2; break;
        case 't': c = '\t'; p += 2; break;
        case 'u':
            c = (unsigned long)jscan_u4(p, end);
            p += 6;
            if (c >= 0xD800 && c <= 0xDBFF) {
                c = 0x10000 + ((c & 0x3FF) << 10) + ((unsigned long)jscan_u4(p, end) & 0x3FF);
                p += 6;
            }
            break;
        default: c = p[1]; p += 2; break; /* " \ / */
        }
        unsigned char u[4];
        int k;
        if (c < 0x80) {
            u[0] = (unsigned char)c;
            k = 1;
        } else if (c < 0x800) {
            u[0] = (unsigned char)(0xC0 | c >> 6);
            u[1] = (unsigned char)(0x80 | (c & 0x3F));
            k = 2;
        } else if (c < 0x10000) {
            u[0] = (unsigned char)(0xE0 | c >> 12);
            u[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            u[2] = (unsigned char)(0x80 | (c & 0x3F));
            k = 3;
        } else {
            u[0] = (unsigned char)(0xF0 | c >> 18);
            u[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            u[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            u[3] = (unsigned char)(0x80 | (c & 0x3F));
            k = 4;
        }
        for (int i = 0; i < k; i++, n++)
            if (n < cap)
                out[n] = u[i];
    }
    return n;
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
    const unsigned char *b = s->p;
    if (*s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return AP_JSCAN_INVALID;
    if (*s->p == '0')
        s->p++;
    else if (jscan_digits(s) < 0)
        return AP_JSCAN_INVALID;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (jscan_digits(s) < 0)
            return AP_JSCAN_INVALID;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (jscan_digits(s) < 0)
            return AP_JSCAN_INVALID;
    }
    return s->p - b > JSCAN_MAX_NUMBER ? AP_JSCAN_INVALID : 0;
}

/* A validated number token as a token limit. */
static void jscan_int(const unsigned char *b, const unsigned char *e, struct ap_jnum *n)
{
    char buf[JSCAN_MAX_NUMBER + 1];
    size_t len = (size_t)(e - b);
    memcpy(buf, b, len);
    buf[len] = '\0';
    double v = strtod(buf, NULL);
    n->in_range = v >= 1 && v <= (double)AP_JSCAN_INT_MAX && v == floor(v);
    n->value = n->in_range ? (long)v : 0;
}

static int jscan_literal(struct jscan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return AP_JSCAN_INVALID;
    s->p += n;
    return 0;
}

/* ---- the name stack ---- */

static int jscan_grow(void **buf, size_t *cap, void *inl, size_t size, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap * 2 > need ? *cap * 2 : need;
    void *n = *buf == inl ? malloc(ncap * size) : realloc(*buf, ncap * size);
    if (n == NULL)
        return -1;
    if (*buf == inl)
        memcpy(n, inl, *cap * size);
    *buf = n;
    *cap = ncap;
    return 0;
}

/* Pushes a member name; *d / *dlen get its decoded bytes (valid until the next push). */
static int jscan_push(struct jscan *s, const struct jstr *k, const unsigned char **d, size_t *dlen)
{
    if (s->nnames == s->cap && jscan_grow((void **)&s->names, &s->cap, s->inl, sizeof(*s->names), s->nnames + 1) < 0)
        goto oom;
    struct jname *e = &s->names[s->nnames++];
    e->raw = k->b;
    e->rawlen = k->len;
    e->d = k->b;
    e->dlen = k->len;
    e->aoff = JSCAN_NO_ARENA;
    if (k->escaped) {
        if (jscan_grow((void **)&s->arena, &s->acap, s->ainl, 1, s->alen + k->len) < 0)
            goto oom;
        e->aoff = s->alen;
        e->dlen = jscan_decode(k->b, k->len, s->arena + s->alen, k->len);
        e->d = s->arena + s->alen;
        s->alen += e->dlen;
    }
    *d = e->d;
    *dlen = e->dlen;
    return 0;
oom:
    return AP_JSCAN_INVALID; /* out of memory: the body cannot be checked */
}

static uint64_t jscan_hash(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 29);
}

static int jscan_name_cmp(const void *a, const void *b)
{
    const struct jname *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    if (x->dlen != y->dlen)
        return x->dlen < y->dlen ? -1 : 1;
    return memcmp(x->d, y->d, x->dlen);
}

static int jscan_same(const struct jname *x, const struct jname *y)
{
    return x->dlen == y->dlen && memcmp(x->d, y->d, x->dlen) == 0;
}

/*
 * Notes a duplicate or a U+0000 name (the first one wins) and lets the scan go
 * on: a document that is also malformed further on is reported as malformed.
 */
static void jscan_verdict(struct jscan *s, int rc, const unsigned char *at, const struct jname *e)
{
    if (s->verdict != AP_JSCAN_OK)
        return;
    s->verdict = rc;
    s->top->error_offset = (size_t)(at - s->start);
    if (e != NULL) {
        s->top->dup_name = (const char *)e->raw;
        s->top->dup_len = e->rawlen;
    }
}

/* Checks the names of the object whose run starts at `base`, then pops them. */
static void jscan_close(struct jscan *s, size_t base, size_t abase)
{
    struct jname *v = s->names + base;
    size_t k = s->nnames - base;
    int found = 0;

    for (size_t i = 0; s->alen > abase && i < k; i++)
        if (v[i].aoff != JSCAN_NO_ARENA)
            v[i].d = s->arena + v[i].aoff; /* the arena may have moved since the push */
    if (k <= JSCAN_PAIRWISE) {
        for (size_t i = 1; i < k && !found; i++)
            for (size_t j = 0; j < i; j++)
                if (jscan_same(&v[i], &v[j])) {
                    jscan_verdict(s, AP_JSCAN_DUPLICATE, v[i].raw, &v[i]);
                    found = 1;
                    break;
                }
    } else {
        for (size_t i = 0; i < k; i++)
            v[i].h = jscan_hash(v[i].d, v[i].dlen);
        qsort(v, k, sizeof(*v), jscan_name_cmp);
        for (size_t i = 1; i < k; i++)
            if (v[i].h == v[i - 1].h && jscan_same(&v[i], &v[i - 1])) {
                /* the later of the two in the text, as the pair-by-pair check reports it */
                const struct jname *e = v[i].raw > v[i - 1].raw ? &v[i] : &v[i - 1];
                jscan_verdict(s, AP_JSCAN_DUPLICATE, e->raw, e);
                break;
            }
    }
    s->nnames = base;
    s->alen = abase;
}

/* ---- values ---- */

static int jscan_value(struct jscan *s, enum ap_jtype *type, int level);

static int jscan_is(const unsigned char *d, size_t dlen, const char *name)
{
    size_t n = strlen(name);
    return dlen == n && memcmp(d, name, n) == 0;
}

/*
 * The value of a top-level member; p is at its first byte. The name (d) is
 * matched before the value is scanned: nested names may move the arena.
 */
static int jscan_top_member(struct jscan *s, const unsigned char *d, size_t dlen, enum ap_jtype *t)
{
    struct ap_jscan *top = s->top;
    enum ap_jtype *slot = jscan_is(d, dlen, "model")            ? &top->model
                          : jscan_is(d, dlen, "stream")         ? &top->stream
                          : jscan_is(d, dlen, "stream_options") ? &top->stream_options
                          : jscan_is(d, dlen, "content")        ? &top->content
                          : jscan_is(d, dlen, "choices")        ? &top->choices
                          : jscan_is(d, dlen, "usage")          ? &top->usage
                                                                : NULL;
    struct ap_jnum *num = jscan_is(d, dlen, "max_tokens")              ? &top->max_tokens
                          : jscan_is(d, dlen, "max_completion_tokens") ? &top->max_completion_tokens
                                                                       : NULL;
    const unsigned char *b = s->p;
    int rc;

    if (slot == &top->model && *s->p == '"') {
        struct jstr v;
        if ((rc = jscan_string(s, &v)) < 0)
            return rc;
        *t = AP_J_STRING;
        top->model_raw = (const char *)v.b;
        top->model_len = v.len;
        top->model_escaped = v.escaped;
        top->model_nul = v.nul;
        top->has_nul |= v.nul;
        top->model_str_len = jscan_decode(v.b, v.len, (unsigned char *)top->model_str, AP_JSCAN_MODEL_MAX - 1);
        top->model_str[top->model_str_len < AP_JSCAN_MODEL_MAX ? top->model_str_len : AP_JSCAN_MODEL_MAX - 1] = '\0';
    } else if ((rc = jscan_value(s, t, slot == &top->stream_options ? JSCAN_OPTIONS : JSCAN_NONE)) < 0) {
        return rc;
    }
    if (slot != NULL)
        *slot = *t;
    if (slot == &top->usage) {
        top->usage_raw = (const char *)b;
        top->usage_len = (size_t)(s->p - b);
    }
    if (num != NULL) {
        num->type = *t;
        if (*t == AP_J_NUMBER)
            jscan_int(b, s->p, num);
    }
    return 0;
}

/* An object; at level TOP (the document) and OPTIONS (stream_options) members of interest are captured. */
static int jscan_object(struct jscan *s, int level)
{
    size_t base = s->nnames, abase = s->alen;
    int rc;
    s->p++;
    jscan_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        struct jstr k;
        const unsigned char *d;
        size_t dlen;
        if (s->p >= s->end || *s->p != '"')
            return AP_JSCAN_INVALID;
        if ((rc = jscan_string(s, &k)) < 0)
            return rc;
        if (k.nul)
            jscan_verdict(s, AP_JSCAN_NUL_NAME, k.b, NULL);
        if ((rc = jscan_push(s, &k, &d, &dlen)) < 0)
            return rc;
        jscan_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return AP_JSCAN_INVALID;
        s->p++;
        jscan_ws(s);
        if (s->p >= s->end)
            return AP_JSCAN_INVALID;

        enum ap_jtype t;
        if (level == JSCAN_TOP) {
            rc = jscan_top_member(s, d, dlen, &t);
        } else {
            int usage = level == JSCAN_OPTIONS && jscan_is(d, dlen, "include_usage");
            rc = jscan_value(s, &t, JSCAN_NONE);
            if (rc == 0 && usage)
                s->top->include_usage = t;
        }
        if (rc < 0)
            return rc;
        jscan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            jscan_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            jscan_close(s, base, abase);
            return 0;
        }
        return AP_JSCAN_INVALID;
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
        int rc = jscan_value(s, &t, JSCAN_NONE);
        if (rc < 0)
            return rc;
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
        return AP_JSCAN_INVALID;
    }
}

static int jscan_value(struct jscan *s, enum ap_jtype *type, int level)
{
    if (s->p >= s->end)
        return AP_JSCAN_INVALID;
    int rc;
    struct jstr str;
    switch (*s->p) {
    case '{':
        if (++s->depth > JSCAN_MAX_DEPTH)
            return AP_JSCAN_INVALID;
        *type = AP_J_OBJECT;
        rc = jscan_object(s, level);
        s->depth--;
        return rc;
    case '[':
        if (++s->depth > JSCAN_MAX_DEPTH)
            return AP_JSCAN_INVALID;
        *type = AP_J_ARRAY;
        rc = jscan_array(s);
        s->depth--;
        return rc;
    case '"':
        *type = AP_J_STRING;
        rc = jscan_string(s, &str);
        if (rc == 0)
            s->top->has_nul |= str.nul;
        return rc;
    case 't':
        *type = AP_J_TRUE;
        return jscan_literal(s, "true", 4);
    case 'f':
        *type = AP_J_FALSE;
        return jscan_literal(s, "false", 5);
    case 'n':
        *type = AP_J_NULL;
        return jscan_literal(s, "null", 4);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            *type = AP_J_NUMBER;
            return jscan_number(s);
        }
        return AP_JSCAN_INVALID;
    }
}

int ap_jscan(const char *buf, size_t len, struct ap_jscan *out)
{
    struct jscan s;
    s.start = s.p = (const unsigned char *)buf;
    s.end = s.p + len;
    s.verdict = AP_JSCAN_OK;
    s.depth = 0;
    s.top = out;
    s.names = s.inl;
    s.nnames = 0;
    s.cap = sizeof(s.inl) / sizeof(s.inl[0]);
    s.arena = s.ainl;
    s.alen = 0;
    s.acap = sizeof(s.ainl);
    memset(out, 0, sizeof(*out));

    jscan_ws(&s);
    int rc = jscan_value(&s, &out->root, JSCAN_TOP);
    if (rc == 0) {
        jscan_ws(&s);
        if (s.p != s.end)
            rc = AP_JSCAN_INVALID;
    }
    if (s.names != s.inl)
        free(s.names);
    if (s.arena != s.ainl)
        free(s.arena);
    if (rc != AP_JSCAN_OK) {
        out->error_offset = (size_t)(s.p - s.start);
        out->dup_name = NULL;
        out->dup_len = 0;
        return rc;
    }
    return s.verdict;
}

const char *ap_jscan_strerror(int rc)
{
    switch (rc) {
    case AP_JSCAN_OK:
        return "ok";
    case AP_JSCAN_DUPLICATE:
        return "duplicate member name";
    case AP_JSCAN_NUL_NAME:
        return "member name holds U+0000";
    default:
        return "not valid JSON";
    }
}
