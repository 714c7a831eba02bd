/*
 * ap_resolve: answers arrive on the loop, never before ap_resolve_start returns,
 * exactly once; a cancelled lookup never calls back (and its thread frees it: the
 * sanitizer pass's leak check would see otherwise). Only names every machine
 * resolves without a network: localhost, numeric addresses, and "" (refused).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/event.h>
#include <netdb.h>
#include <time.h>

#include "ap_resolve.h"

struct answer {
    int calls;
    int err;
    char addr[64];
};

static void on_answer(int err, const char *addr, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->err = err;
    if (addr != NULL)
        snprintf(a->addr, sizeof(a->addr), "%s", addr);
}

/* Runs the loop until every answer came, or 5 s. */
static void run_until(struct event_base *base, struct answer *as, int n)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int pending = 0;
        for (int i = 0; i < n; i++)
            pending += as[i].calls == 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (pending == 0 || now.tv_sec - t0.tv_sec > 5)
            return;
        event_base_loop(base, EVLOOP_ONCE);
    }
}

static void resolves_names_and_numbers(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    const char *hosts[] = {"localhost", "127.0.0.1", "::1", ""};
    struct answer as[4];
    memset(as, 0, sizeof(as));
    for (int i = 0; i < 4; i++) {
        assert_non_null(ap_resolve_start(base, hosts[i], on_answer, &as[i]));
        assert_int_equal(as[i].calls, 0); /* never from inside start */
    }
    run_until(base, as, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(as[i].calls, 1);
    assert_int_equal(as[0].err, 0);
    assert_true(strcmp(as[0].addr, "127.0.0.1") == 0 || strcmp(as[0].addr, "::1") == 0); /* IPv4 first when both */
    assert_int_equal(as[1].err, 0);
    assert_string_equal(as[1].addr, "127.0.0.1");
    assert_int_equal(as[2].err, 0);
    assert_string_equal(as[2].addr, "::1");
    assert_int_not_equal(as[3].err, 0);
    assert_non_null(gai_strerror(as[3].err));
    /* Nothing is left on the loop. */
    assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 1);
    event_base_free(base);
}

static void cancelled_never_calls_back(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct answer a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    struct ap_resolve *r = ap_resolve_start(base, "localhost", on_answer, &a);
    assert_non_null(r);
    assert_non_null(ap_resolve_start(base, "127.0.0.1", on_answer, &b));
    ap_resolve_cancel(r);
    run_until(base, &b, 1);
    assert_int_equal(b.calls, 1);
    /* Give the cancelled lookup's thread time to finish and free it; the loop stays quiet. */
    struct timespec ms200 = {0, 200 * 1000 * 1000};
    nanosleep(&ms200, NULL);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(a.calls, 0);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resolves_names_and_numbers),
        cmocka_unit_test(cancelled_never_calls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
