/*
 * Usage accounting: finished requests become counter deltas in memory
 * (ap_delta) and a timer writes them to Redis in batches, one EVAL per
 * batch, one batch in flight at a time.
 *
 *   record ─▶ pending ──take──▶ inflight ──EVAL──▶ Redis
 *                                   ▲                 │ reply lost / error
 *                                   └──── resend ─────┘ (same batch id)
 *
 * A request costs one tree lookup: it is merged into a tuple per (key,
 * model, outcome, hour), and tuples are expanded into Redis counter updates
 * (about 45 per tuple) only when a batch is prepared.
 *
 * A batch keeps its id until Redis acknowledges it, and the flush script
 * applies a given id at most once, so a reply lost to a disconnect can be
 * resent without counting twice. While Redis is down deltas keep merging
 * in `pending`; nothing counted is dropped.
 *
 * Durable completion (USAGE_DURABLE, on by default): a successful reply is
 * handed to the client only once its usage is in Redis (px_usage_wait), so a
 * replica killed with SIGKILL loses no request a client saw complete. Waiters
 * make the next batch go out at once: batches grow with the load (group
 * commit), one EVAL per batch. While Redis is unreachable nobody waits.
 */
#include "px.h"

#include "ap_delta.h"
#include "ap_keys.h"
#include "ap_log.h"
#include "ap_prices.h"
#include "ap_store.h"
#include "ap_time.h"

#include <event2/event.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_BATCH_MAX_OPS 4000
#define USAGE_DEDUPE_TTL_S 86400

/* Requests of one key, model and outcome within one hour, summed. */
struct usage_tuple {
    char *id;                   /* owned: key id, outcome, hour and model joined (the sort key) */
    char key_id[17];
    char model[AP_MODEL_MAX];
    int ok;
    int64_t last_ms;            /* latest completion (last_used; its hour is the tuple's) */
    int64_t count;
    struct ap_usage sum;
};

struct usage_waiter {
    px_usage_done_fn fn;
    void *arg;
    struct usage_waiter *next;
};

struct px_usage {
    struct px_ctx *ctx;         /* borrowed */
    struct usage_waiter *w_flight; /* owned: released when the batch in flight is acknowledged */
    struct usage_waiter *w_next;   /* owned: their usage is not in a batch yet */
    unsigned flight_covers:1;   /* the batch in flight holds everything that was pending */
    void *tuples;               /* owned: tsearch tree of usage_tuple */
    size_t ntuples;
    struct ap_delta *pending;   /* owned: expanded counter updates */
    struct ap_batch *inflight;  /* owned; sent or waiting to be resent */
    char inflight_id[160];
    char boot[17];              /* random per process: batch ids never repeat across restarts */
    char flush_sha[41];         /* SHA-1 of ap_script_flush: batches go as EVALSHA */
    unsigned use_eval:1;        /* Redis answered NOSCRIPT: send the next one in full */
    uint64_t seq;
    struct event *timer;        /* owned */
    unsigned sending:1;         /* an EVAL is awaiting its reply */
    unsigned urgent:1;          /* pending settlements free concurrency slots: send without waiting for the timer */
};

static void usage_on_reply(redisAsyncContext *ac, void *reply, void *priv);

static int usage_tuple_cmp(const void *a, const void *b)
{
    return strcmp(((const struct usage_tuple *)a)->id, ((const struct usage_tuple *)b)->id);
}

static void usage_tuple_free(void *p)
{
    struct usage_tuple *t = p;
    free(t->id);
    free(t);
}

static void usage_expand_one(const void *node, VISIT which, void *arg)
{
    struct px_usage *u = arg;
    if (which != postorder && which != leaf)
        return;
    const struct usage_tuple *t = *(const struct usage_tuple *const *)node;
    struct ap_usage_rec r = {
        .key_id = t->key_id,
        .model = t->model,
        .usage = t->sum,
        /* Prices are linear: the cost of a sum is the sum of the costs, exactly. */
        .cost_nano = ap_price_cost(ap_prices_find(u->ctx->prices, t->model), &t->sum),
        .when_ms = t->last_ms,
        .tz_offset = u->ctx->cfg.tz_offset,
        .ok = t->ok,
        .count = t->count,
    };
    if (ap_store_record(u->pending, &r) < 0)
        ap_error(NULL, "usage: out of memory expanding the usage of key %s", t->key_id);
}

/* Turns the tuples into counter updates (only when a batch is about to be made). */
static void usage_expand(struct px_usage *u)
{
    if (u->ntuples == 0)
        return;
    twalk_r(u->tuples, usage_expand_one, u);
    tdestroy(u->tuples, usage_tuple_free);
    u->tuples = NULL;
    u->ntuples = 0;
}

/* Runs and frees a list of waiters (detached first: a callback may add new ones). */
static void usage_release(struct usage_waiter *w)
{
    while (w != NULL) {
        struct usage_waiter *next = w->next;
        w->fn(w->arg);
        free(w);
        w = next;
    }
}

static void usage_release_all(struct px_usage *u)
{
    struct usage_waiter *a = u->w_flight, *b = u->w_next;
    u->w_flight = u->w_next = NULL;
    usage_release(a);
    usage_release(b);
}

/* Appends list b to list *a. */
static void usage_append(struct usage_waiter **a, struct usage_waiter *b)
{
    while (*a != NULL)
        a = &(*a)->next;
    *a = b;
}

static void usage_send(struct px_usage *u)
{
    if (u->sending)
        return;
    if (!ap_redis_up(u->ctx->redis)) {
        usage_release_all(u); /* nobody waits for a Redis that is not there */
        return;
    }
    if (u->inflight == NULL) {
        usage_expand(u);
        /* INSTANCE_ID may be reused by a restarted replica; the boot nonce keeps ids unique. */
        ap_store_key(u->inflight_id, sizeof(u->inflight_id), "flush:%s:%s:%llu", u->ctx->cfg.instance_id, u->boot,
                     (unsigned long long)++u->seq);
        u->inflight = ap_delta_take_flush(u->pending, USAGE_BATCH_MAX_OPS, u->inflight_id, USAGE_DEDUPE_TTL_S);
        u->urgent = 0;
        u->flight_covers = ap_delta_count(u->pending) == 0;
        struct usage_waiter *w = u->w_next;
        u->w_next = NULL;
        if (u->inflight == NULL) {
            usage_release(w); /* their usage is already written */
            return;
        }
        usage_append(&u->w_flight, w);
    }
    struct ap_batch *b = u->inflight;
    const char *argv[2] = {b->argv[0], b->argv[1]};
    size_t lens[2] = {b->lens[0], b->lens[1]};
    if (!u->use_eval) {
        /* The same batch naming the script by its SHA-1 instead of sending its text
         * (hiredis copies the command before returning, so the swap is brief). */
        b->argv[0] = (char *)"EVALSHA";
        b->lens[0] = 7;
        b->argv[1] = u->flush_sha;
        b->lens[1] = 40;
    }
    if (ap_redis_argv(u->ctx->redis, usage_on_reply, u, b->argc, (const char **)b->argv, b->lens) == 0)
        u->sending = 1;
    b->argv[0] = (char *)argv[0];
    b->argv[1] = (char *)argv[1];
    b->lens[0] = lens[0];
    b->lens[1] = lens[1];
}

static void usage_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_usage *u = priv;
    redisReply *rep = reply;
    (void)ac;
    u->sending = 0;
    if (rep == NULL) {
        /* Lost with the connection: maybe applied, maybe not. The same id is resent. */
        usage_release_all(u);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !u->use_eval) {
        /* Redis restarted or flushed its script cache: send it in full (which loads it again). */
        u->use_eval = 1;
        usage_send(u);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        ap_error(NULL, "usage: flush refused by Redis (will retry): %s", rep->str);
        usage_release_all(u);
        return;
    }
    u->use_eval = 0;
    ap_debug(NULL, "usage: batch %s %s (%zu counters)", u->inflight_id,
             rep->integer == 1 ? "applied" : "was already applied", u->inflight->nops);
    ap_batch_free(u->inflight);
    u->inflight = NULL;
    if (u->flight_covers) {
        struct usage_waiter *w = u->w_flight;
        u->w_flight = NULL;
        usage_release(w);
    }
    /* Waiters, a backlog (after an outage) or shutdown: go on without waiting for the timer. */
    size_t left = ap_delta_count(u->pending) + u->ntuples;
    if (u->w_flight != NULL || u->w_next != NULL || ap_delta_count(u->pending) >= USAGE_BATCH_MAX_OPS ||
        (left > 0 && (u->ctx->draining || u->urgent)))
        usage_send(u);
}

static void usage_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    usage_send(arg);
}

struct px_usage *px_usage_new(struct px_ctx *ctx)
{
    struct px_usage *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->ctx = ctx;
    if (ap_random_hex(u->boot, 8) < 0) {
        free(u);
        return NULL;
    }
    ap_sha1_hex(ap_script_flush, u->flush_sha);
    u->pending = ap_delta_new();
    u->timer = event_new(ctx->base, -1, EV_PERSIST, usage_on_timer, u);
    if (u->pending == NULL || u->timer == NULL) {
        px_usage_free(u);
        return NULL;
    }
    struct timeval tv = {ctx->cfg.usage_flush_ms / 1000, (ctx->cfg.usage_flush_ms % 1000) * 1000};
    event_add(u->timer, &tv);
    return u;
}

void px_usage_free(struct px_usage *u)
{
    if (u == NULL)
        return;
    size_t lost = px_usage_pending(u);
    if (lost > 0 && u->pending != NULL)
        ap_error(NULL, "usage: %zu counter updates could not be written to Redis before exit", lost);
    if (u->timer != NULL)
        event_free(u->timer);
    tdestroy(u->tuples, usage_tuple_free);
    for (struct usage_waiter *w = u->w_flight, *n; w != NULL; w = n) {
        n = w->next;
        free(w);
    }
    for (struct usage_waiter *w = u->w_next, *n; w != NULL; w = n) {
        n = w->next;
        free(w);
    }
    ap_batch_free(u->inflight);
    ap_delta_free(u->pending);
    free(u);
}

void px_usage_record(struct px_usage *u, const char *key_id, const char *model,
                     const struct ap_usage *usage, int ok)
{
    int64_t now = ap_now_ms();
    long long hour = (long long)((now / 1000 + u->ctx->cfg.tz_offset) / 3600);
    char idbuf[AP_MODEL_MAX + 64];
    snprintf(idbuf, sizeof(idbuf), "%s|%d|%lld|%s", key_id, ok, hour, model && model[0] ? model : "unknown");
    struct usage_tuple probe = {.id = idbuf}, *t;
    struct usage_tuple **slot = tfind(&probe, &u->tuples, usage_tuple_cmp);
    if (slot != NULL) {
        t = *slot;
    } else {
        t = calloc(1, sizeof(*t));
        if (t == NULL || (t->id = strdup(idbuf)) == NULL || tsearch(t, &u->tuples, usage_tuple_cmp) == NULL) {
            if (t != NULL)
                free(t->id);
            free(t);
            ap_error(NULL, "usage: out of memory recording a request of key %s", key_id);
            return;
        }
        snprintf(t->key_id, sizeof(t->key_id), "%s", key_id);
        snprintf(t->model, sizeof(t->model), "%s", model ? model : "");
        t->ok = ok;
        u->ntuples++;
    }
    t->count++;
    t->last_ms = now > t->last_ms ? now : t->last_ms;
    t->sum.input += usage->input;
    t->sum.output += usage->output;
    t->sum.cache_creation += usage->cache_creation;
    t->sum.cache_read += usage->cache_read;
}

void px_usage_settle(struct px_usage *u, const char *base, const char *admission_id, int64_t tokens)
{
    if (ap_delta_settle(u->pending, base, admission_id, tokens) < 0) {
        ap_error(NULL, "usage: out of memory settling admission %s (its lease will lapse)", admission_id);
        return;
    }
    u->urgent = 1;
    usage_send(u);
}

size_t px_usage_pending(const struct px_usage *u)
{
    /* Requests merged in tuples count once per tuple here: this is a backlog figure. */
    return u->ntuples + ap_delta_count(u->pending) + (u->inflight ? u->inflight->nops : 0);
}

void px_usage_kick(struct px_usage *u)
{
    usage_send(u);
}

void px_usage_wait(struct px_usage *u, px_usage_done_fn fn, void *arg)
{
    struct usage_waiter *w = malloc(sizeof(*w));
    if (w == NULL || !ap_redis_up(u->ctx->redis)) {
        free(w);
        fn(arg);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    w->next = NULL;
    usage_append(&u->w_next, w);
    usage_send(u);
}

static void usage_cancel_in(struct usage_waiter **l, void *arg)
{
    while (*l != NULL) {
        if ((*l)->arg == arg) {
            struct usage_waiter *w = *l;
            *l = w->next;
            free(w);
        } else {
            l = &(*l)->next;
        }
    }
}

void px_usage_cancel(struct px_usage *u, void *arg)
{
    usage_cancel_in(&u->w_flight, arg);
    usage_cancel_in(&u->w_next, arg);
}

void px_usage_redis_down(struct px_usage *u)
{
    usage_release_all(u);
}
