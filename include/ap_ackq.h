/*
 * ap_ackq: usage batches from the moment they leave the accumulator until
 * enough Redis replicas hold them (WAIT), so that a failover loses none.
 *
 *   push ─▶ unwritten ──written(gen)──▶ written on gen ──ack──▶ freed
 *              ▲                              │
 *              └── a new connection (gen) ◀───┘  rewritten, oldest first, with the same
 *                                                 number: applied once (ap_delta_take_flush)
 *
 * `gen` numbers the connection a batch was written on: WAIT only vouches for
 * the writes of the connection it is sent on, so after a reconnect (maybe to
 * another master) every batch not yet acknowledged is written again first.
 * Items are written oldest first, so those written on a given connection are
 * always a prefix of the queue. Each item carries the caller's waiters (the
 * replies waiting for that usage), released through a callback when the item
 * is acknowledged or when the caller stops waiting for replicas.
 * Pure data structure, no I/O.
 */
#ifndef AP_ACKQ_H
#define AP_ACKQ_H

#include <stddef.h>
#include <stdint.h>

struct ap_batch;

struct ap_ackq_item {
    struct ap_batch *batch;     /* owned */
    char id[160];               /* the batch's name in the logs (its mark and number) */
    uint64_t gen;               /* connection it was last written on; 0: never written */
    void *waiters;              /* the caller's, handed to the release callback; NULL: none */
    struct ap_ackq_item *next;
};

struct ap_ackq {
    struct ap_ackq_item *head;  /* owned, oldest first */
    struct ap_ackq_item *tail;  /* borrowed */
    size_t items;
    size_t ops;                 /* counter updates in every item */
};

typedef void (*ap_ackq_release_fn)(void *waiters, void *arg);

void ap_ackq_init(struct ap_ackq *q);
/* Frees every item; waiters go to release (may be NULL: then they must be NULL). */
void ap_ackq_clear(struct ap_ackq *q, ap_ackq_release_fn release, void *arg);

/* Appends a batch (owned from now on, also on failure). 0, or -1 on allocation failure (batch freed). */
int ap_ackq_push(struct ap_ackq *q, struct ap_batch *b, const char *id, void *waiters);

/* The oldest item not written on connection gen (what to write next), or NULL. */
struct ap_ackq_item *ap_ackq_next_unwritten(const struct ap_ackq *q, uint64_t gen);
void ap_ackq_written(struct ap_ackq_item *it, uint64_t gen);

/* Items (a prefix) written on gen, and their counter updates. */
size_t ap_ackq_written_count(const struct ap_ackq *q, uint64_t gen);
size_t ap_ackq_written_ops(const struct ap_ackq *q, uint64_t gen);
/* Counter updates of the items written at least once, on any connection. */
size_t ap_ackq_ever_written_ops(const struct ap_ackq *q);

/* A WAIT on gen succeeded: frees the items written on gen, releasing their waiters. Returns how many. */
size_t ap_ackq_ack(struct ap_ackq *q, uint64_t gen, ap_ackq_release_fn release, void *arg);

/* Releases the waiters of the items written on gen (the items stay until acknowledged). */
void ap_ackq_release_written(struct ap_ackq *q, uint64_t gen, ap_ackq_release_fn release, void *arg);
/* Releases every waiter (Redis is unreachable: nobody waits); the items stay. */
void ap_ackq_release_all(struct ap_ackq *q, ap_ackq_release_fn release, void *arg);

/*
 * Bounds what is kept for replicas that do not answer: while more than
 * max_ops counter updates are held, the oldest items written on gen (they
 * are on the master in use) are dropped. Returns the counter updates dropped.
 */
size_t ap_ackq_trim(struct ap_ackq *q, uint64_t gen, size_t max_ops, ap_ackq_release_fn release, void *arg);

#endif
