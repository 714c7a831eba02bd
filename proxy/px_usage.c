/*
 * Usage accounting: finished requests are merged in memory and a timer
 * writes them to Redis in batches, one command per batch (an RPUSH, or the
 * flush script when the batch settles policy admissions), one command in
 * flight at a time.
 *
 *   record ─▶ tuples ──take──▶ queue (ap_ackq) ──write──▶ master ──WAIT──▶ acknowledged: freed
 *                                  ▲                         │ reply lost, reconnected,
 *                                  └──── rewritten ──────────┘ failover (same batch number)
 *
 * A request costs one tree lookup: it is merged into a tuple per (key,
 * model, outcome, hour). A batch carries each tuple as one usage line, which
 * it appends to the usage journal in Redis ({p}u:journal): a plain RPUSH
 * behind a header naming the batch, or the flush script when the batch
 * also settles policy admissions (ap_delta_take_flush);
 * Redis folds the journal into the ~45 counters of each line once it holds
 * AP_USAGE_FOLD_LINES lines, summing the lines of the same tuple first, and
 * every script that reads usage folds it before reading (ap_store.h). So a
 * batch costs Redis one append whatever it carries, and the counter updates
 * are made once for many batches: with one client, a request is a batch.
 * A replica that wrote lines folds the journal within USAGE_FOLD_MS, so the
 * counters in Redis itself are never further behind.
 *
 * A batch keeps its number until it is acknowledged, and each number is
 * applied at most once (by the fold for an append, by the flush script for a
 * batch with settlements: both against this process's mark), so a batch can
 * be written again after a lost reply, a reconnect or a failover without
 * counting twice. While Redis
 * is down tuples keep merging; nothing counted is dropped.
 *
 * Replica acknowledgement (REDIS_MIN_REPLICAS_ACK > 0, the default with
 * Sentinel): a written batch is acknowledged only once WAIT says that many
 * replicas have it, so a failover (the promoted replica becomes the master)
 * cannot lose it; until then it stays in the queue and is written again,
 * with the same id, on every new connection. Writes and WAIT go on a lane of
 * their own, since WAIT blocks its connection. When a WAIT comes back short
 * (no replica, or one too slow), replies stop waiting for replicas (the batches
 * are still kept and rewritten until acknowledged) and a WAIT is tried again
 * every WAIT_RETRY_MS until enough replicas answer.
 *
 * Durable completion (USAGE_DURABLE, on by default): a successful reply is
 * handed to the client only once its usage is acknowledged (px_usage_wait),
 * so a replica killed with SIGKILL loses no request a client saw complete.
 * Waiters make the next batch go out at once: batches grow with the load
 * (group commit). While Redis is unreachable nobody waits.
 */
#include "px.h"

#include "ap_ackq.h"
#include "ap_delta.h"
#include "ap_keys.h"
#include "ap_log.h"
#include "ap_prices.h"
#include "ap_put.h"
#include "ap_store.h"
#include "ap_time.h"

#include <event2/event.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_BATCH_MAX_OPS 4000
/* Journal lines per batch: a fold's work stays bounded (each line may become ~45 counter updates). */
#define USAGE_BATCH_MAX_LINES 64
#define WAIT_RETRY_MS 1000
/* A replica that appended to the usage journal folds it within this time, so the counters in Redis lag by no more. */
#define USAGE_FOLD_MS 1000
/* Written batches kept for replicas that do not answer, at most (about 230 bytes an update: ~45 MB). */
#define USAGE_RETAIN_MAX_OPS 200000

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
    struct usage_waiter *w_next; /* owned: their usage is not in a batch yet */
    size_t nwait;               /* waiters alive: in w_next and in batches not yet acknowledged */
    void *tuples;               /* owned: tsearch tree of usage_tuple */
    size_t ntuples;
    struct ap_delta *pending;   /* owned: policy settlements */
    struct ap_ackq q;           /* owned: batches taken, not yet acknowledged (each with its waiters) */
    struct ap_ackq_item *sent;  /* borrowed from q: its write awaits a reply */
    char boot[17];              /* random per process: batch ids never repeat across restarts */
    char mark[AP_STORE_KEY_MAX]; /* {p}flush:<INSTANCE_ID>:<boot>: this process's batches, numbered by seq */
    char flush_sha[41];         /* SHA-1 of ap_script_flush: script batches go as EVALSHA */
    unsigned use_eval:1;        /* Redis answered NOSCRIPT: send the next one in full */
    unsigned sending:1;         /* a batch's write or a WAIT awaits its reply */
    unsigned degraded:1;        /* the last WAIT came back short: replies do not wait for replicas */
    int lane;                   /* Redis lane of writes and WAIT */
    uint64_t seq;
    uint64_t wait_gen;          /* connection the WAIT in flight vouches for */
    int64_t next_wait_ms;       /* degraded: when to try a WAIT again (monotonic) */
    struct event *timer;        /* owned */
    struct event *commit;       /* owned: the end of the commit window (USAGE_COMMIT_WINDOW_US) */
    struct event *soon;         /* owned: made active by hand to send at the end of this loop turn */
    int64_t last_take_us;       /* monotonic: when the last batch was taken */
    unsigned urgent:1;          /* pending settlements free concurrency slots: send without waiting for the timer */
    unsigned unfolded:1;        /* journal lines written since the last fold this replica asked for */
    int64_t last_fold_ms;       /* monotonic: when it last asked */
};

static int64_t usage_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Group commit with a window (USAGE_COMMIT_WINDOW_US): a reply waiting for
 * its usage goes out with the next batch, and while batches follow each
 * other closer than the window, the next one is taken only when the window
 * has passed since the last, or as soon as every request in flight waits for
 * its usage (none left that could join the batch). Under load, batches grow
 * (each holds what the window gathered) and Redis takes one append for many
 * requests; a quiet replica, or a client that sends one request at a time,
 * writes at once and waits for nothing. The window's timer is only an upper
 * bound: epoll's timeout counts whole milliseconds, so an idle loop may keep
 * it up to 1 ms, and the in-flight rule usually ends it first. libevent's
 * precise timers would keep it exactly, at the price of a timerfd_settime
 * before every poll (measured: more CPU on every row of make bench).
 */
static int usage_commit_later(struct px_usage *u)
{
    long win = u->ctx->cfg.usage_commit_us;
    if (win <= 0)
        return 0;
    /* Every request in flight waits already: none could join, waiting would gain nothing. */
    if (u->ctx->stats.active <= 0 || u->nwait >= (size_t)u->ctx->stats.active)
        return 0;
    int64_t since = usage_now_us() - u->last_take_us;
    if (since >= win)
        return 0;
    if (!evtimer_pending(u->commit, NULL)) {
        int64_t left = win - since;
        struct timeval tv = {left / 1000000, left % 1000000};
        evtimer_add(u->commit, &tv);
    }
    return 1;
}

static void usage_on_reply(redisAsyncContext *ac, void *reply, void *priv);
static void usage_on_wait(redisAsyncContext *ac, void *reply, void *priv);

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

/* The tuples a batch takes, collected by a tree walk. */
struct usage_pick {
    struct usage_tuple **items; /* borrowed: the caller's array of `cap`; the tuples stay the tree's */
    size_t n, cap;
};

static void usage_collect(const void *node, VISIT which, void *arg)
{
    struct usage_pick *l = arg;
    if ((which == postorder || which == leaf) && l->n < l->cap)
        l->items[l->n++] = *(struct usage_tuple *const *)node;
}

/*
 * Writes up to USAGE_BATCH_MAX_LINES tuples as journal lines into `buf`
 * (AP_STORE_LINE_MAX each) and `lines`; `taken` gets the tuples, which stay
 * in the tree until usage_drop (once the batch holds its copy of the lines).
 */
static size_t usage_lines(struct px_usage *u, char *buf, const char **lines, struct usage_tuple **taken)
{
    struct usage_pick l = {taken, 0, USAGE_BATCH_MAX_LINES};
    if (u->ntuples == 0)
        return 0;
    twalk_r(u->tuples, usage_collect, &l);
    for (size_t k = 0; k < l.n; k++) {
        const struct usage_tuple *t = l.items[k];
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
        lines[k] = buf + k * AP_STORE_LINE_MAX;
        /* Every field is bounded: a line always fits (ap_store_usage_line truncates nothing). */
        ap_store_usage_line(buf + k * AP_STORE_LINE_MAX, AP_STORE_LINE_MAX, &r);
    }
    return l.n;
}

/* Removes tuples now in a batch from the tree. */
static void usage_drop(struct px_usage *u, struct usage_tuple **taken, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        tdelete(taken[k], &u->tuples, usage_tuple_cmp);
        usage_tuple_free(taken[k]);
        u->ntuples--;
    }
}

/* Runs and frees a list of waiters (detached first: a callback may add new ones). */
static void usage_release(struct px_usage *u, struct usage_waiter *w)
{
    while (w != NULL) {
        struct usage_waiter *next = w->next;
        u->nwait--;
        w->fn(w->arg);
        free(w);
        w = next;
    }
}

/* ap_ackq's release callback (arg: the px_usage). */
static void usage_release_cb(void *waiters, void *arg)
{
    usage_release(arg, waiters);
}

static void usage_release_all(struct px_usage *u)
{
    struct usage_waiter *w = u->w_next;
    u->w_next = NULL;
    usage_release(u, w);
    ap_ackq_release_all(&u->q, usage_release_cb, u);
}

/* Appends list b to list *a. */
static void usage_append(struct usage_waiter **a, struct usage_waiter *b)
{
    while (*a != NULL)
        a = &(*a)->next;
    *a = b;
}

static uint64_t usage_gen(const struct px_usage *u)
{
    return ap_redis_stats(u->ctx->redis)->connects;
}

/* 1 when replies wait for replicas (not only for the write). */
static int usage_waits_for_replicas(const struct px_usage *u)
{
    return u->ctx->cfg.redis_min_acks > 0 && !u->degraded;
}

/*
 * Waiters whose usage is already in the queue wait for its newest batch; when
 * the queue is empty, or that batch's waiters were let go already, they go now.
 */
static void usage_attach(struct px_usage *u, struct usage_waiter *w)
{
    struct ap_ackq_item *tail = u->q.tail;
    if (tail == NULL || (!usage_waits_for_replicas(u) && tail->gen == usage_gen(u))) {
        usage_release(u, w);
        return;
    }
    struct usage_waiter *l = tail->waiters;
    usage_append(&l, w);
    tail->waiters = l;
}

/* Takes what is pending into a new batch at the end of the queue; 0, or -1 when there was nothing. */
static int usage_take(struct px_usage *u)
{
    char id[160];
    static char buf[USAGE_BATCH_MAX_LINES * AP_STORE_LINE_MAX]; /* the lines, until the batch holds its copy */
    const char *lines[USAGE_BATCH_MAX_LINES];
    struct usage_tuple *taken[USAGE_BATCH_MAX_LINES];
    size_t nlines = usage_lines(u, buf, lines, taken);
    snprintf(id, sizeof(id), "%.120s:%llu", u->mark, (unsigned long long)(u->seq + 1)); /* for the logs */
    /* A settlement never goes before the usage of the request it settles: none while tuples stay behind. */
    size_t max_ops = u->ntuples > nlines ? 0 : USAGE_BATCH_MAX_OPS;
    struct ap_batch *b = ap_delta_take_flush(u->pending, max_ops, u->mark, u->seq + 1, ap_store_prefix(), lines,
                                             nlines);
    if (b == NULL && nlines > 0)
        return -1; /* out of memory: everything stays pending for the next try */
    if (b == NULL) {
        struct usage_waiter *w = u->w_next;
        u->w_next = NULL;
        usage_attach(u, w); /* their usage is already in a batch */
        return -1;
    }
    usage_drop(u, taken, nlines);
    u->seq++;
    /* Waiters ride on the batch that holds everything recorded before they asked. */
    struct usage_waiter *w = NULL;
    if (ap_delta_count(u->pending) == 0 && u->ntuples == 0) {
        w = u->w_next;
        u->w_next = NULL;
    }
    if (ap_ackq_push(&u->q, b, id, w) < 0) {
        ap_error(NULL, "usage: out of memory queueing batch %s", id);
        usage_release(u, w);
        return -1;
    }
    return 0;
}

static void usage_write(struct px_usage *u, struct ap_ackq_item *it)
{
    struct ap_batch *b = it->batch;
    const char *argv[2] = {b->argv[0], b->argv[1]};
    size_t lens[2] = {b->lens[0], b->lens[1]};
    if (!b->journal && !u->use_eval) {
        /* The same batch naming the script by its SHA-1 instead of sending its text
         * (hiredis copies the command before returning, so the swap is brief). */
        b->argv[0] = (char *)"EVALSHA";
        b->lens[0] = 7;
        b->argv[1] = u->flush_sha;
        b->lens[1] = 40;
    }
    if (ap_redis_argv_lane(u->ctx->redis, u->lane, usage_on_reply, u, b->argc, (const char **)b->argv, b->lens) == 0) {
        u->sending = 1;
        u->sent = it;
    }
    b->argv[0] = (char *)argv[0];
    b->argv[1] = (char *)argv[1];
    b->lens[0] = lens[0];
    b->lens[1] = lens[1];
}

static void usage_wait_replicas(struct px_usage *u)
{
    char n[24], ms[24];
    snprintf(n, sizeof(n), "%ld", u->ctx->cfg.redis_min_acks);
    snprintf(ms, sizeof(ms), "%ld", u->ctx->cfg.redis_wait_ms);
    const char *argv[] = {"WAIT", n, ms};
    if (ap_redis_argv_lane(u->ctx->redis, u->lane, usage_on_wait, u, 3, argv, NULL) == 0) {
        u->sending = 1;
        u->wait_gen = usage_gen(u);
    }
    if (u->degraded)
        u->next_wait_ms = ap_mono_ms() + WAIT_RETRY_MS;
}

/*
 * The one place that sends, one command in flight at a time: first what a
 * new connection has not seen (rewrites), then WAIT for what was written,
 * then (when `take`) a new batch of what is pending. WAIT goes before new
 * batches, so a steady stream of them cannot starve it.
 */
static void usage_send(struct px_usage *u, int take)
{
    if (u->sending)
        return;
    if (!ap_redis_up(u->ctx->redis)) {
        usage_release_all(u); /* nobody waits for a Redis that is not there */
        return;
    }
    uint64_t gen = usage_gen(u);
    struct ap_ackq_item *it = ap_ackq_next_unwritten(&u->q, gen);
    if (it != NULL) {
        usage_write(u, it);
        return;
    }
    if (u->ctx->cfg.redis_min_acks > 0 && ap_ackq_written_count(&u->q, gen) > 0 &&
        (!u->degraded || ap_mono_ms() >= u->next_wait_ms)) {
        usage_wait_replicas(u);
        return;
    }
    if (take && usage_take(u) == 0) {
        u->urgent = 0;
        u->last_take_us = usage_now_us();
        usage_write(u, u->q.tail);
    }
}

/* After a reply: go on without waiting for the timer when someone waits, a backlog grew, or shutting down. */
static void usage_continue(struct px_usage *u)
{
    size_t left = ap_delta_count(u->pending) + u->ntuples;
    int waiters = u->w_next != NULL;
    for (const struct ap_ackq_item *it = u->q.head; it != NULL && !waiters; it = it->next)
        waiters = it->waiters != NULL;
    int full = ap_delta_count(u->pending) >= USAGE_BATCH_MAX_OPS || u->ntuples >= USAGE_BATCH_MAX_LINES ||
               (left > 0 && (u->ctx->draining || u->urgent));
    usage_send(u, full || (waiters && !usage_commit_later(u)));
}

/* Replies stop waiting for replicas: they wait for the write only. Batches stay until acknowledged. */
static void usage_let_go(struct px_usage *u)
{
    uint64_t gen = usage_gen(u);
    ap_ackq_release_written(&u->q, gen, usage_release_cb, u);
    size_t dropped = ap_ackq_trim(&u->q, gen, USAGE_RETAIN_MAX_OPS, usage_release_cb, u);
    if (dropped > 0)
        ap_error(NULL, "usage: %zu counter updates written to the master but never acknowledged by a replica are "
                 "no longer kept for a rewrite (more than %d held)", dropped, USAGE_RETAIN_MAX_OPS);
}

static void usage_fold(struct px_usage *u, int force);

static void usage_reply(struct px_usage *u, redisReply *rep)
{
    struct ap_ackq_item *it = u->sent;
    u->sending = 0;
    u->sent = NULL;
    if (rep == NULL) {
        /* Lost with the connection: maybe applied, maybe not; written again on the next one. */
        usage_release_all(u);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !u->use_eval && !it->batch->journal) {
        /* Redis restarted, failed over or flushed its script cache: send it in full (which loads it again). */
        u->use_eval = 1;
        usage_send(u, 0);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        ap_error(NULL, "usage: flush refused by Redis (will retry): %s", rep->str);
        usage_release_all(u);
        return;
    }
    if (it->batch->nlines > 0)
        u->unfolded = 1;
    uint64_t gen = usage_gen(u);
    if (it->batch->journal) {
        /* The reply is the journal's length: past the fold size, fold it now (the script would have). */
        ap_debug(NULL, "usage: batch %s appended (%zu lines)", it->id, it->batch->nlines);
        if (rep->type == REDIS_REPLY_INTEGER && rep->integer >= AP_USAGE_FOLD_LINES)
            usage_fold(u, 1);
    } else {
        u->use_eval = 0;
        ap_debug(NULL, "usage: batch %s %s (%zu updates)", it->id,
                 rep->integer == 1 ? "applied" : "was already applied", it->batch->nops);
    }
    ap_ackq_written(it, gen);
    if (u->ctx->cfg.redis_min_acks == 0)
        ap_ackq_ack(&u->q, gen, usage_release_cb, u);
    else if (u->degraded)
        usage_let_go(u);
    usage_continue(u);
}

/*
 * The replies a batch releases (each request's last event and end) are corked:
 * each client gets them in one write.
 */
static void usage_corked(struct px_usage *u, void (*fn)(struct px_usage *, redisReply *), redisReply *rep)
{
    struct px_ctx *ctx = u->ctx;
    px_conn_cork(ctx);
    fn(u, rep);
    px_conn_uncork(ctx);
}

static void usage_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    usage_corked(priv, usage_reply, reply);
}

static void usage_wait_reply(struct px_usage *u, redisReply *rep)
{
    u->sending = 0;
    if (rep == NULL) {
        usage_release_all(u); /* lost with the connection: the batches are written again on the next one */
        return;
    }
    long long acks = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (acks >= u->ctx->cfg.redis_min_acks) {
        if (u->degraded)
            ap_info(NULL, "usage: %lld Redis replicas acknowledge usage batches again: replies wait for them", acks);
        u->degraded = 0;
        ap_ackq_ack(&u->q, u->wait_gen, usage_release_cb, u);
    } else {
        if (!u->degraded) {
            if (acks < 0)
                ap_warn(NULL, "usage: WAIT refused: %s", rep->type == REDIS_REPLY_ERROR ? rep->str : "bad reply");
            ap_warn(NULL, "usage: %lld of %ld Redis replicas acknowledged within %ld ms: replies stop waiting for "
                    "replicas; batches are kept and written again until acknowledged", acks < 0 ? 0 : acks,
                    u->ctx->cfg.redis_min_acks, u->ctx->cfg.redis_wait_ms);
            u->next_wait_ms = ap_mono_ms() + WAIT_RETRY_MS;
        }
        u->degraded = 1;
        usage_let_go(u);
    }
    usage_continue(u);
}

static void usage_on_wait(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    usage_corked(priv, usage_wait_reply, reply);
}

static void usage_on_fold(redisAsyncContext *ac, void *reply, void *priv)
{
    const redisReply *rep = reply;
    (void)ac;
    (void)priv;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
        ap_warn(NULL, "usage: folding the usage journal failed (the next reader or batch folds it): %s", rep->str);
}

/*
 * A batch that leaves the journal long enough folds it (the flush script in
 * the same step; a plain append asks right after its reply, `force`), and
 * every reader folds it first; the timer's call keeps the counters in Redis
 * itself within USAGE_FOLD_MS of the journal when traffic stops short of
 * that, for whoever reads them directly.
 */
static void usage_fold(struct px_usage *u, int force)
{
    int64_t now = ap_mono_ms();
    if (!u->unfolded || (!force && now - u->last_fold_ms < USAGE_FOLD_MS) || !ap_redis_up(u->ctx->redis))
        return;
    const char *argv[] = {"EVAL", ap_script_usage_fold, "0", ap_store_prefix()};
    /* No private pointer: the reply may come after this struct is gone. */
    if (ap_redis_argv(u->ctx->redis, usage_on_fold, NULL, 4, argv, NULL) == 0) {
        u->unfolded = 0;
        u->last_fold_ms = now;
    }
}

static void usage_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    usage_fold(arg, 0);
    usage_send(arg, 1);
}

/*
 * A reply that waits for its usage sends the batch from here, at the end of
 * the loop turn it completed in, not from its own completion: the other
 * replies that complete in the same turn (one poll returns several upstream
 * answers under load) then go in the same batch, and Redis runs one script
 * for all of them instead of one for the first and one for the rest.
 */
static void usage_on_soon(evutil_socket_t fd, short what, void *arg)
{
    struct px_usage *u = arg;
    (void)fd;
    (void)what;
    if (u->w_next != NULL)
        usage_send(u, !usage_commit_later(u));
}

static void usage_on_commit(evutil_socket_t fd, short what, void *arg)
{
    struct px_usage *u = arg;
    (void)fd;
    (void)what;
    usage_send(u, u->w_next != NULL);
}

struct px_usage *px_usage_new(struct px_ctx *ctx)
{
    struct px_usage *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->ctx = ctx;
    u->lane = ctx->cfg.redis_min_acks > 0 ? 1 : 0;
    ap_ackq_init(&u->q);
    if (ap_random_hex(u->boot, 8) < 0) {
        free(u);
        return NULL;
    }
    /* INSTANCE_ID may be reused by a restarted replica; the boot nonce keeps the mark its own. */
    ap_store_key(u->mark, sizeof(u->mark), "flush:%s:%s", ctx->cfg.instance_id, u->boot);
    ap_sha1_hex(ap_script_flush, u->flush_sha);
    u->pending = ap_delta_new();
    u->timer = event_new(ctx->base, -1, EV_PERSIST, usage_on_timer, u);
    u->commit = evtimer_new(ctx->base, usage_on_commit, u);
    u->soon = event_new(ctx->base, -1, 0, usage_on_soon, u);
    if (u->pending == NULL || u->timer == NULL || u->commit == NULL || u->soon == NULL) {
        px_usage_free(u);
        return NULL;
    }
    struct timeval tv = {ctx->cfg.usage_flush_ms / 1000, (ctx->cfg.usage_flush_ms % 1000) * 1000};
    event_add(u->timer, &tv);
    return u;
}

static void usage_free_waiters(struct usage_waiter *w)
{
    while (w != NULL) {
        struct usage_waiter *n = w->next;
        free(w);
        w = n;
    }
}

static void usage_free_waiters_cb(void *waiters, void *arg)
{
    (void)arg;
    usage_free_waiters(waiters);
}

void px_usage_free(struct px_usage *u)
{
    if (u == NULL)
        return;
    size_t unwritten = u->ntuples + ap_delta_count(u->pending) + u->q.ops - ap_ackq_ever_written_ops(&u->q);
    size_t unreplicated = ap_ackq_ever_written_ops(&u->q);
    if (unwritten > 0 && u->pending != NULL)
        ap_error(NULL, "usage: %zu counter updates could not be written to Redis before exit", unwritten);
    if (unreplicated > 0)
        ap_warn(NULL, "usage: %zu counter updates were written to the master but no replica acknowledged them "
                "before exit", unreplicated);
    if (u->timer != NULL)
        event_free(u->timer);
    if (u->commit != NULL)
        event_free(u->commit);
    if (u->soon != NULL)
        event_free(u->soon);
    tdestroy(u->tuples, usage_tuple_free);
    usage_free_waiters(u->w_next);
    ap_ackq_clear(&u->q, usage_free_waiters_cb, NULL);
    ap_delta_free(u->pending);
    free(u);
}

void px_usage_record(struct px_usage *u, const char *key_id, const char *model,
                     const struct ap_usage *usage, int ok)
{
    int64_t now = ap_now_ms();
    long long hour = (long long)((now / 1000 + u->ctx->cfg.tz_offset) / 3600);
    char idbuf[AP_MODEL_MAX + 64];
    const char *mname = model && model[0] ? model : "unknown";
    size_t kl = strlen(key_id), ml = strlen(mname);
    /* "<key>|<ok>|<hour>|<model>", without snprintf on the common path (every request passes here). */
    if (hour >= 0 && ok >= 0 && kl + ml + 46 <= sizeof(idbuf)) {
        size_t o = ap_put(idbuf, 0, key_id, kl);
        idbuf[o++] = '|';
        o = ap_put_dec(idbuf, o, (unsigned)ok); /* AP_REC_OK, _ERROR or _REFUSED */
        idbuf[o++] = '|';
        o = ap_put_dec(idbuf, o, (unsigned long long)hour);
        idbuf[o++] = '|';
        o = ap_put(idbuf, o, mname, ml);
        idbuf[o] = '\0';
    } else {
        snprintf(idbuf, sizeof(idbuf), "%s|%d|%lld|%s", key_id, ok, hour, mname);
    }
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
    usage_send(u, 1);
}

size_t px_usage_pending(const struct px_usage *u)
{
    /* Requests merged in tuples count once per tuple here: this is a backlog figure. */
    size_t n = u->ntuples + ap_delta_count(u->pending) + u->q.ops;
    /* Written batches still count while replies wait for replicas, or until the connection they went on is gone. */
    if (ap_redis_up(u->ctx->redis) && !usage_waits_for_replicas(u))
        n -= ap_ackq_written_ops(&u->q, usage_gen(u));
    return n;
}

size_t px_usage_unreplicated(const struct px_usage *u)
{
    return ap_ackq_ever_written_ops(&u->q);
}

void px_usage_kick(struct px_usage *u)
{
    usage_send(u, 1);
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
    /* Prepended: a burst of completions must not walk the list each time; they all go together anyway. */
    w->next = u->w_next;
    u->w_next = w;
    u->nwait++;
    event_active(u->soon, EV_TIMEOUT, 1);
}

static void usage_cancel_in(struct px_usage *u, struct usage_waiter **l, void *arg)
{
    while (*l != NULL) {
        if ((*l)->arg == arg) {
            struct usage_waiter *w = *l;
            *l = w->next;
            u->nwait--;
            free(w);
        } else {
            l = &(*l)->next;
        }
    }
}

void px_usage_cancel(struct px_usage *u, void *arg)
{
    usage_cancel_in(u, &u->w_next, arg);
    for (struct ap_ackq_item *it = u->q.head; it != NULL; it = it->next) {
        struct usage_waiter *l = it->waiters;
        usage_cancel_in(u, &l, arg);
        it->waiters = l;
    }
}

void px_usage_redis_down(struct px_usage *u)
{
    usage_release_all(u);
}
