/*
 * Usage delta accumulator; see ap_delta.h.
 * Entries live in a glibc tsearch tree (a red-black tree from libc, so no
 * hand-written map) keyed by "op \x1f key \x1f field".
 */
#include "ap_delta.h"

#include "ap_store.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct delta_entry {
    char *id;  /* owned: op, key and field joined with \x1f */
    int64_t v;
};

struct ap_delta {
    void *root;
    size_t count;
};

static int delta_cmp(const void *a, const void *b)
{
    return strcmp(((const struct delta_entry *)a)->id, ((const struct delta_entry *)b)->id);
}

static void delta_entry_free(void *p)
{
    struct delta_entry *e = p;
    free(e->id);
    free(e);
}

struct ap_delta *ap_delta_new(void)
{
    return calloc(1, sizeof(struct ap_delta));
}

void ap_delta_free(struct ap_delta *d)
{
    if (d == NULL)
        return;
    tdestroy(d->root, delta_entry_free);
    free(d);
}

static int delta_apply(struct ap_delta *d, char op, const char *key, const char *field, int64_t v)
{
    size_t kl = strlen(key), fl = strlen(field);
    struct delta_entry *e = malloc(sizeof(*e));
    if (e == NULL)
        return -1;
    e->id = malloc(kl + fl + 4);
    if (e->id == NULL) {
        free(e);
        return -1;
    }
    e->id[0] = op;
    e->id[1] = '\x1f';
    memcpy(e->id + 2, key, kl);
    e->id[2 + kl] = '\x1f';
    memcpy(e->id + 3 + kl, field, fl + 1);
    e->v = v;

    struct delta_entry **slot = tsearch(e, &d->root, delta_cmp);
    if (slot == NULL) {
        delta_entry_free(e);
        return -1;
    }
    if (*slot != e) {
        struct delta_entry *old = *slot;
        if (op == 'i')
            old->v += v;
        else if (op == 'm' && v > old->v)
            old->v = v;
        else if (op == 'p')
            old->v = v; /* the same admission settled again: the last word counts */
        delta_entry_free(e);
    } else {
        d->count++;
    }
    return 0;
}

int ap_delta_incr(struct ap_delta *d, const char *key, const char *field, int64_t by)
{
    return by == 0 ? 0 : delta_apply(d, 'i', key, field, by);
}

int ap_delta_max(struct ap_delta *d, const char *key, const char *field, int64_t v)
{
    return delta_apply(d, 'm', key, field, v);
}

int ap_delta_sadd(struct ap_delta *d, const char *key, const char *member)
{
    return delta_apply(d, 's', key, member, 0);
}

int ap_delta_settle(struct ap_delta *d, const char *base, const char *admission_id, int64_t tokens)
{
    return delta_apply(d, 'p', base, admission_id, tokens);
}

size_t ap_delta_count(const struct ap_delta *d)
{
    return d->count;
}

void ap_batch_free(struct ap_batch *b)
{
    if (b == NULL)
        return;
    free(b->arena);
    free(b->argv);
    free(b->lens);
    free(b);
}

struct delta_walk {
    struct delta_entry **items;
    size_t n;
};

static void delta_collect(const void *node, VISIT which, void *arg)
{
    struct delta_walk *w = arg;
    if (which == postorder || which == leaf)
        w->items[w->n++] = *(struct delta_entry *const *)node;
}

/* Places one string in the batch's arena. */
static void batch_set(struct ap_batch *b, char **at, int i, const char *s, size_t len)
{
    memcpy(*at, s, len);
    (*at)[len] = '\0';
    b->argv[i] = *at;
    b->lens[i] = len;
    *at += len + 1;
}

/* A value's decimal text with its NUL: "-9223372036854775808" and one. */
#define DELTA_NUM_MAX 21

/*
 * A batch is taken every few milliseconds under load with ~50 updates of 4
 * strings each: sized first, then laid out in one block.
 */
struct ap_batch *ap_delta_take(struct ap_delta *d, size_t max_ops, const char *const *head, int nhead)
{
    struct delta_walk w = {calloc(d->count ? d->count : 1, sizeof(*w.items)), 0};
    struct ap_batch *b = calloc(1, sizeof(*b));
    size_t take = d->count < max_ops ? d->count : max_ops;
    size_t argc = (size_t)nhead + 4 * take;
    if (w.items == NULL || b == NULL)
        goto fail;
    b->argv = calloc(argc, sizeof(char *));
    b->lens = calloc(argc, sizeof(size_t));
    if (b->argv == NULL || b->lens == NULL)
        goto fail;
    if (take > 0) /* a journal batch takes no operation: no walk */
        twalk_r(d->root, delta_collect, &w);

    /* An entry's id is "<op>\x1f<key>\x1f<field>": op, key and field with their NULs take its length + 1. */
    size_t size = 0;
    for (int i = 0; i < nhead; i++)
        size += strlen(head[i]) + 1;
    for (size_t k = 0; k < take; k++)
        size += strlen(w.items[k]->id) + 1 + DELTA_NUM_MAX;
    if ((b->arena = malloc(size ? size : 1)) == NULL)
        goto fail;
    char *at = b->arena;
    int i = 0;
    for (; i < nhead; i++)
        batch_set(b, &at, i, head[i], strlen(head[i]));
    b->nhead = nhead;
    for (size_t k = 0; k < take; k++) {
        const struct delta_entry *e = w.items[k];
        const char *key = e->id + 2;
        const char *sep = strchr(key, '\x1f');
        char num[DELTA_NUM_MAX];
        int nl = snprintf(num, sizeof(num), "%lld", (long long)e->v);
        batch_set(b, &at, i++, e->id, 1);
        batch_set(b, &at, i++, key, (size_t)(sep - key));
        batch_set(b, &at, i++, sep + 1, strlen(sep + 1));
        batch_set(b, &at, i++, num, (size_t)nl);
    }
    b->argc = i;
    b->nops = take;
    /* Only now, with the batch complete, remove its entries from the tree. */
    for (size_t k = 0; k < take; k++) {
        tdelete(w.items[k], &d->root, delta_cmp);
        delta_entry_free(w.items[k]);
    }
    d->count -= take;
    free(w.items);
    return b;
fail:
    free(w.items);
    ap_batch_free(b);
    return NULL;
}

/* Lines only: RPUSH {prefix}u:journal "#<mark>:j\t<seq>\t<n>" <line 1> ... <line n>. */
static struct ap_batch *delta_take_journal(struct ap_delta *d, const char *mark, uint64_t seq, const char *prefix,
                                           const char *const *lines, size_t nlines)
{
    size_t klen = strlen(prefix) + sizeof("u:journal");
    size_t hlen = strlen(mark) + 2 * DELTA_NUM_MAX + 5;
    char *key = malloc(klen), *header = malloc(hlen);
    const char **head = malloc((3 + nlines) * sizeof(*head));
    struct ap_batch *b = NULL;
    if (key != NULL && header != NULL && head != NULL) {
        snprintf(key, klen, "%su:journal", prefix);
        snprintf(header, hlen, "#%s:j\t%llu\t%zu", mark, (unsigned long long)seq, nlines);
        head[0] = "RPUSH";
        head[1] = key;
        head[2] = header;
        memcpy(head + 3, lines, nlines * sizeof(*head));
        b = ap_delta_take(d, 0, head, (int)(3 + nlines));
    }
    if (b != NULL) {
        b->nops = nlines;
        b->nlines = nlines;
        b->journal = 1;
    }
    free(head);
    free(header);
    free(key);
    return b;
}

struct ap_batch *ap_delta_take_flush(struct ap_delta *d, size_t max_ops, const char *mark, uint64_t seq,
                                     const char *prefix, const char *const *lines, size_t nlines)
{
    char seqs[24], nls[24], *skey;
    if (d->count == 0 && nlines == 0)
        return NULL;
    /* A mark its header could not carry (a tab or newline) goes as the script. */
    if (nlines > 0 && (d->count == 0 || max_ops == 0) && strpbrk(mark, "\t\n") == NULL)
        return delta_take_journal(d, mark, seq, prefix, lines, nlines);
    snprintf(seqs, sizeof(seqs), "%llu", (unsigned long long)seq);
    snprintf(nls, sizeof(nls), "%zu", nlines);
    size_t slen = strlen(mark) + sizeof(":s");
    const char **head = malloc((7 + nlines) * sizeof(*head));
    if (head == NULL || (skey = malloc(slen)) == NULL) {
        free(head);
        return NULL;
    }
    snprintf(skey, slen, "%s:s", mark);
    const char *fixed[] = {"EVAL", ap_script_flush, "0", skey, seqs, prefix, nls};
    memcpy(head, fixed, sizeof(fixed));
    if (nlines > 0)
        memcpy(head + 7, lines, nlines * sizeof(*head));
    struct ap_batch *b = ap_delta_take(d, max_ops, head, (int)(7 + nlines));
    free(head);
    free(skey);
    if (b != NULL) {
        b->nops += nlines;
        b->nlines = nlines;
    }
    return b;
}

int ap_delta_put_back(struct ap_delta *d, const struct ap_batch *b)
{
    for (int i = b->nhead; i + 3 < b->argc; i += 4) {
        char op = b->argv[i][0];
        int64_t v = strtoll(b->argv[i + 3], NULL, 10);
        if (delta_apply(d, op, b->argv[i + 1], b->argv[i + 2], v) < 0)
            return -1;
    }
    return 0;
}
