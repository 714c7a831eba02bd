/*
 * ap_ackq: usage batches between the write and the replicas' acknowledgement.
 * The scenarios are the ones a failover produces: written then acknowledged,
 * a reconnect before the WAIT answered (rewrite everything, same ids), a WAIT
 * that came back short (waiters let go, batches kept), the bound on what is
 * kept, and release callbacks that queue more work while they run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_ackq.h"
#include "ap_delta.h"

/* A batch of `ops` counter updates. */
static struct ap_batch *batch(int ops)
{
    struct ap_delta *d = ap_delta_new();
    assert_non_null(d);
    for (int i = 0; i < ops; i++) {
        char f[16];
        snprintf(f, sizeof(f), "f%d", i);
        assert_int_equal(ap_delta_incr(d, "k", f, 1), 0);
    }
    const char *head[] = {"EVAL", "script", "0"};
    struct ap_batch *b = ap_delta_take(d, SIZE_MAX, head, 3);
    assert_non_null(b);
    assert_int_equal(b->nops, (size_t)ops);
    ap_delta_free(d);
    return b;
}

/* Waiters are tagged ints; released tags are recorded in order. */
struct log {
    int tags[64];
    int n;
    struct ap_ackq *push_into; /* when set, the first release pushes one more batch */
};

static void release(void *waiters, void *arg)
{
    struct log *l = arg;
    l->tags[l->n++] = (int)(intptr_t)waiters;
    if (l->push_into != NULL) {
        struct ap_ackq *q = l->push_into;
        l->push_into = NULL;
        assert_int_equal(ap_ackq_push(q, batch(1), "late", (void *)(intptr_t)99), 0);
    }
}

static void *tag(int t)
{
    return (void *)(intptr_t)t;
}

static void push3(struct ap_ackq *q)
{
    ap_ackq_init(q);
    assert_int_equal(ap_ackq_push(q, batch(2), "b1", tag(1)), 0);
    assert_int_equal(ap_ackq_push(q, batch(3), "b2", NULL), 0);
    assert_int_equal(ap_ackq_push(q, batch(5), "b3", tag(3)), 0);
    assert_int_equal(q->items, 3);
    assert_int_equal(q->ops, 10);
}

static void test_write_then_ack_in_order(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    /* written oldest first on connection 1 */
    struct ap_ackq_item *it = ap_ackq_next_unwritten(&q, 1);
    assert_string_equal(it->id, "b1");
    ap_ackq_written(it, 1);
    it = ap_ackq_next_unwritten(&q, 1);
    assert_string_equal(it->id, "b2");
    ap_ackq_written(it, 1);
    assert_int_equal(ap_ackq_written_count(&q, 1), 2);
    assert_int_equal(ap_ackq_written_ops(&q, 1), 5);
    assert_int_equal(ap_ackq_ever_written_ops(&q), 5);
    /* a WAIT on connection 1 vouches for b1 and b2 only */
    assert_int_equal(ap_ackq_ack(&q, 1, release, &l), 2);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.tags[0], 1);
    assert_int_equal(q.items, 1);
    assert_int_equal(q.ops, 5);
    assert_string_equal(q.head->id, "b3");
    assert_ptr_equal(q.head, q.tail);
    ap_ackq_written(ap_ackq_next_unwritten(&q, 1), 1);
    assert_null(ap_ackq_next_unwritten(&q, 1));
    assert_int_equal(ap_ackq_ack(&q, 1, release, &l), 1);
    assert_int_equal(l.tags[1], 3);
    assert_null(q.head);
    assert_null(q.tail);
    assert_int_equal(q.ops, 0);
    /* an empty queue can be pushed again */
    assert_int_equal(ap_ackq_push(&q, batch(1), "b4", NULL), 0);
    assert_ptr_equal(q.head, q.tail);
    ap_ackq_clear(&q, release, &l);
}

static void test_reconnect_rewrites_everything_unacknowledged(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    for (int i = 0; i < 3; i++)
        ap_ackq_written(ap_ackq_next_unwritten(&q, 1), 1);
    /* the connection dropped before WAIT answered; connection 2 (maybe a new master) */
    assert_int_equal(ap_ackq_written_count(&q, 2), 0);
    assert_int_equal(ap_ackq_ack(&q, 2, release, &l), 0);
    assert_int_equal(ap_ackq_ever_written_ops(&q), 10);
    struct ap_ackq_item *it = ap_ackq_next_unwritten(&q, 2);
    assert_string_equal(it->id, "b1"); /* same batch, same id: the script applies it once */
    ap_ackq_written(it, 2);
    /* a WAIT on connection 2 now covers b1 only: b2 and b3 were not written there yet */
    assert_int_equal(ap_ackq_ack(&q, 2, release, &l), 1);
    assert_int_equal(q.items, 2);
    assert_string_equal(ap_ackq_next_unwritten(&q, 2)->id, "b2");
    assert_int_equal(ap_ackq_ack(&q, 2, release, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(ap_ackq_ever_written_ops(&q), 8); /* b2, b3: written once, on the lost connection */
    ap_ackq_clear(&q, release, &l);
    assert_int_equal(l.n, 2);
}

static void test_gen_zero_is_never_written(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    assert_string_equal(ap_ackq_next_unwritten(&q, 0)->id, "b1");
    assert_int_equal(ap_ackq_written_count(&q, 0), 0);
    assert_int_equal(ap_ackq_ack(&q, 0, release, &l), 0);
    assert_int_equal(ap_ackq_trim(&q, 0, 0, release, &l), 0);
    assert_int_equal(ap_ackq_ever_written_ops(&q), 0);
    ap_ackq_clear(&q, release, &l);
    assert_int_equal(l.n, 2); /* clear releases what still waits */
}

static void test_short_wait_lets_waiters_go_and_keeps_batches(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    ap_ackq_written(ap_ackq_next_unwritten(&q, 4), 4);
    ap_ackq_written(ap_ackq_next_unwritten(&q, 4), 4);
    ap_ackq_release_written(&q, 4, release, &l);
    assert_int_equal(l.n, 1); /* b1's waiter; b3 is not written yet */
    assert_int_equal(l.tags[0], 1);
    assert_int_equal(q.items, 3);
    assert_null(q.head->waiters);
    assert_ptr_equal(q.tail->waiters, tag(3));
    /* releasing again is harmless */
    ap_ackq_release_written(&q, 4, release, &l);
    assert_int_equal(l.n, 1);
    /* later a WAIT succeeds: the batches go, with nothing left to release */
    assert_int_equal(ap_ackq_ack(&q, 4, release, &l), 2);
    assert_int_equal(l.n, 1);
    ap_ackq_clear(&q, release, &l);
}

static void test_release_all_keeps_items(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    ap_ackq_release_all(&q, release, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(q.items, 3);
    ap_ackq_clear(&q, release, &l);
    assert_int_equal(l.n, 2);
}

static void test_trim_drops_oldest_written_only(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    ap_ackq_written(ap_ackq_next_unwritten(&q, 7), 7);
    ap_ackq_written(ap_ackq_next_unwritten(&q, 7), 7);
    /* 10 held, bound 6: b1 (2) then b2 (3) go; b3 is the only copy, it stays */
    assert_int_equal(ap_ackq_trim(&q, 7, 6, release, &l), 5);
    assert_int_equal(q.items, 1);
    assert_int_equal(q.ops, 5);
    assert_int_equal(l.n, 1);
    assert_int_equal(ap_ackq_trim(&q, 7, 0, release, &l), 0);
    /* items written on another connection are not dropped either */
    ap_ackq_written(q.head, 6);
    assert_int_equal(ap_ackq_trim(&q, 7, 0, release, &l), 0);
    assert_int_equal(ap_ackq_trim(&q, 6, 5, release, &l), 0); /* within the bound */
    assert_int_equal(ap_ackq_trim(&q, 6, 4, release, &l), 5);
    assert_int_equal(q.items, 0);
    assert_null(q.tail);
}

static void test_release_may_push(void **state)
{
    (void)state;
    struct ap_ackq q;
    struct log l = {0};
    push3(&q);
    l.push_into = &q;
    ap_ackq_written(ap_ackq_next_unwritten(&q, 1), 1);
    assert_int_equal(ap_ackq_ack(&q, 1, release, &l), 1);
    /* the late batch went to the end, unwritten */
    assert_int_equal(q.items, 3);
    assert_string_equal(q.tail->id, "late");
    assert_int_equal(q.tail->gen, 0);
    assert_int_equal(q.ops, 9);
    ap_ackq_clear(&q, release, &l);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.tags[2], 99);
}

static const struct CMUnitTest tests[] = {
    {"written oldest first, acknowledged per connection", test_write_then_ack_in_order, NULL, NULL, NULL},
    {"reconnect: everything unacknowledged is written again", test_reconnect_rewrites_everything_unacknowledged,
     NULL, NULL, NULL},
    {"connection 0 means never written", test_gen_zero_is_never_written, NULL, NULL, NULL},
    {"short WAIT: waiters let go, batches kept", test_short_wait_lets_waiters_go_and_keeps_batches, NULL, NULL, NULL},
    {"Redis gone: every waiter released, items kept", test_release_all_keeps_items, NULL, NULL, NULL},
    {"bound: only the oldest written on this connection are dropped", test_trim_drops_oldest_written_only, NULL, NULL,
     NULL},
    {"a release callback may push a new batch", test_release_may_push, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("ackq", tests, NULL, NULL);
}
