/*
 * ap_delta: Redis updates waiting to be written (policy settlements of the
 * usage batches, an import's counters), merged by (operation, key, field) so
 * memory grows with the number of distinct counters touched, not with the
 * number of requests.
 *
 * A batch taken out of the accumulator is immutable; a usage batch carries
 * its replica's mark and its number, so re-sending it after a lost reply is
 * applied at most once (ap_delta_take_flush). Pure data structure, no I/O.
 */
#ifndef AP_DELTA_H
#define AP_DELTA_H

#include <stddef.h>
#include <stdint.h>

struct ap_delta;

struct ap_batch {
    int argc;      /* the caller's head arguments, then op/key/field/value quads */
    char **argv;   /* owned; the strings point into `arena` */
    size_t *lens;  /* owned */
    char *arena;   /* owned: every string, NUL-terminated (one allocation, not four per update) */
    int nhead;     /* arguments before the first quad */
    size_t nops;   /* updates it carries: quads, and the flush batch's journal lines */
    size_t nlines; /* of which journal lines (in the head arguments) */
    int journal;   /* 1: a plain RPUSH of journal lines (ap_delta_take_flush); its reply is the journal's length */
};

struct ap_delta *ap_delta_new(void);
void ap_delta_free(struct ap_delta *d); /* NULL allowed */

/* HINCRBY key field by (merged with earlier increments). 0 or -1 (no memory). */
int ap_delta_incr(struct ap_delta *d, const char *key, const char *field, int64_t by);
/* HSET key field v if v is greater than what is stored (merged: keeps the max). */
int ap_delta_max(struct ap_delta *d, const char *key, const char *field, int64_t v);
/* SADD key member. */
int ap_delta_sadd(struct ap_delta *d, const char *key, const char *member);

/*
 * Settles a policy admission (ap_policy_redis.h) in the flush script: releases
 * what it holds and counts `tokens` in the tpm window (< 0: takes it back).
 */
int ap_delta_settle(struct ap_delta *d, const char *base, const char *admission_id, int64_t tokens);

/* Number of pending operations. */
size_t ap_delta_count(const struct ap_delta *d);

/*
 * Moves up to max_ops pending operations into a new batch: the `nhead`
 * strings of `head` (e.g. EVAL, script, numkeys, script arguments) followed by
 * one op/key/field/value quad per operation (none when nothing is pending).
 * Returns NULL on allocation failure (the operations then stay).
 */
struct ap_batch *ap_delta_take(struct ap_delta *d, size_t max_ops, const char *const *head, int nhead);

/*
 * The usage flush batch of a replica process's batch number `seq` (numbered
 * from 1, written in order): the `nlines` usage journal lines (copied;
 * ap_store_usage_line) under key prefix `prefix`, and up to max_ops pending
 * operations. A batch is applied once, by `seq` against a high-water mark
 * under `mark` (one key per replica process, not one per batch).
 * With lines only (no settlements: the common case), it is a plain RPUSH to
 * {prefix}u:journal of a header "#<mark>:j\t<seq>\t<nlines>" and the lines
 * (`journal` set), and the fold checks the mark (AP_LUA_USAGE_FOLD): Redis
 * runs no script per batch. With operations, it is ap_script_flush, which
 * checks the mark "<mark>:s" as it appends (the two kinds are applied at
 * different times, so each keeps its own mark). `nops` counts lines and
 * operations. NULL when there is neither (or no memory).
 */
struct ap_batch *ap_delta_take_flush(struct ap_delta *d, size_t max_ops, const char *mark, uint64_t seq,
                                     const char *prefix, const char *const *lines, size_t nlines);

/* Adds a batch's operations back (used when a batch cannot be sent as is). */
int ap_delta_put_back(struct ap_delta *d, const struct ap_batch *b);

void ap_batch_free(struct ap_batch *b); /* NULL allowed */

#endif
