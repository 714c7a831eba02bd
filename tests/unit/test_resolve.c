/*
 * ap_resolve: literals are answered at once (the call returns NULL); names are
 * answered on the loop, never before ap_resolve returns, exactly once; a
 * cancelled lookup never calls back (and its thread frees it: the sanitizer
 * pass's leak check would see otherwise). Only names every machine resolves
 * without a network: localhost, numeric addresses, and "" (refused).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/event.h>
#include <time.h>

#include "ap_resolve.h"

struct answer {
    int calls;
    int ok;
    char addr[64];
    char why[320];
};

static void on_answer(void *arg, const char *addr, const char *why)
{
    struct answer *a = arg;
    a->calls++;
    a->ok = addr != NULL;
    if (addr != NULL)
        snprintf(a->addr, sizeof(a->addr), "%s", addr);
    if (why != NULL)
        snprintf(a->why, sizeof(a->why), "%s", why);
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

static void literals_at_once(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct answer a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    assert_null(ap_resolve(base, "127.0.0.1", on_answer, &a));
    assert_int_equal(a.calls, 1);
    assert_string_equal(a.addr, "127.0.0.1");
    assert_null(ap_resolve(base, "::1", on_answer, &b));
    assert_int_equal(b.calls, 1);
    assert_string_equal(b.addr, "::1");
    event_base_free(base);
}

static void names_on_the_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    const char *hosts[] = {"localhost", ""};
    struct answer as[2];
    memset(as, 0, sizeof(as));
    for (int i = 0; i < 2; i++) {
        assert_non_null(ap_resolve(base, hosts[i], on_answer, &as[i]));
        assert_int_equal(as[i].calls, 0); /* never from inside the call */
    }
    run_until(base, as, 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(as[i].calls, 1);
    assert_true(as[0].ok);
    assert_true(strcmp(as[0].addr, "127.0.0.1") == 0 || strcmp(as[0].addr, "::1") == 0); /* IPv4 first when both */
    assert_false(as[1].ok);
    assert_non_null(strstr(as[1].why, "cannot resolve"));
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
    struct ap_resolve *r = ap_resolve(base, "localhost", on_answer, &a);
    assert_non_null(r);
    assert_non_null(ap_resolve(base, "localhost", on_answer, &b));
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
        cmocka_unit_test(literals_at_once),
        cmocka_unit_test(names_on_the_loop),
        cmocka_unit_test(cancelled_never_calls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
