/* The queue of usage batches awaiting replica acknowledgement; see ap_ackq.h. */
#include "ap_ackq.h"

#include "ap_delta.h"

#include <stdio.h>
#include <stdlib.h>

void ap_ackq_init(struct ap_ackq *q)
{
    q->head = q->tail = NULL;
    q->items = q->ops = 0;
}

static void ackq_release(struct ap_ackq_item *it, ap_ackq_release_fn release, void *arg)
{
    void *w = it->waiters;
    it->waiters = NULL;
    if (w != NULL && release != NULL)
        release(w, arg);
}

/* Unlinks and frees the head (its waiters released first). */
static void ackq_pop(struct ap_ackq *q, ap_ackq_release_fn release, void *arg)
{
    struct ap_ackq_item *it = q->head;
    q->head = it->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->items--;
    q->ops -= it->batch->nops;
    ap_batch_free(it->batch);
    /* Last: a release callback may push new items. */
    void *w = it->waiters;
    free(it);
    if (w != NULL && release != NULL)
        release(w, arg);
}

void ap_ackq_clear(struct ap_ackq *q, ap_ackq_release_fn release, void *arg)
{
    while (q->head != NULL)
        ackq_pop(q, release, arg);
}

int ap_ackq_push(struct ap_ackq *q, struct ap_batch *b, const char *id, void *waiters)
{
    struct ap_ackq_item *it = calloc(1, sizeof(*it));
    if (it == NULL) {
        ap_batch_free(b);
        return -1;
    }
    it->batch = b;
    snprintf(it->id, sizeof(it->id), "%s", id);
    it->waiters = waiters;
    if (q->tail != NULL)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->items++;
    q->ops += b->nops;
    return 0;
}

struct ap_ackq_item *ap_ackq_next_unwritten(const struct ap_ackq *q, uint64_t gen)
{
    struct ap_ackq_item *it = q->head;
    while (it != NULL && it->gen == gen && gen != 0)
        it = it->next;
    return it;
}

void ap_ackq_written(struct ap_ackq_item *it, uint64_t gen)
{
    it->gen = gen;
}

size_t ap_ackq_written_count(const struct ap_ackq *q, uint64_t gen)
{
    size_t n = 0;
    for (const struct ap_ackq_item *it = q->head; it != NULL && gen != 0 && it->gen == gen; it = it->next)
        n++;
    return n;
}

size_t ap_ackq_written_ops(const struct ap_ackq *q, uint64_t gen)
{
    size_t n = 0;
    for (const struct ap_ackq_item *it = q->head; it != NULL && gen != 0 && it->gen == gen; it = it->next)
        n += it->batch->nops;
    return n;
}

size_t ap_ackq_ever_written_ops(const struct ap_ackq *q)
{
    size_t n = 0;
    for (const struct ap_ackq_item *it = q->head; it != NULL; it = it->next)
        if (it->gen != 0)
            n += it->batch->nops;
    return n;
}

size_t ap_ackq_ack(struct ap_ackq *q, uint64_t gen, ap_ackq_release_fn release, void *arg)
{
    size_t n = 0;
    while (q->head != NULL && gen != 0 && q->head->gen == gen) {
        ackq_pop(q, release, arg);
        n++;
    }
    return n;
}

void ap_ackq_release_written(struct ap_ackq *q, uint64_t gen, ap_ackq_release_fn release, void *arg)
{
    for (struct ap_ackq_item *it = q->head; it != NULL && gen != 0 && it->gen == gen; it = it->next)
        ackq_release(it, release, arg);
}

void ap_ackq_release_all(struct ap_ackq *q, ap_ackq_release_fn release, void *arg)
{
    for (struct ap_ackq_item *it = q->head; it != NULL; it = it->next)
        ackq_release(it, release, arg);
}

size_t ap_ackq_trim(struct ap_ackq *q, uint64_t gen, size_t max_ops, ap_ackq_release_fn release, void *arg)
{
    size_t dropped = 0;
    while (q->ops > max_ops && q->head != NULL && gen != 0 && q->head->gen == gen) {
        dropped += q->head->batch->nops;
        ackq_pop(q, release, arg);
    }
    return dropped;
}
