/*
 * The fleet: each replica writes a heartbeat to Redis every
 * FLEET_HEARTBEAT_MS (and at once when Redis comes up or the replica starts
 * draining): its id, version, start time and what it is doing, under a key
 * that expires after FLEET_WINDOW_MS, with its last-seen time in a sorted
 * set. Times are Redis's clock, so replicas whose clocks disagree still agree
 * on who was seen when. GET /admin/fleet, on any replica, lists the replicas
 * seen within the window. A replica that stops gracefully removes itself; one
 * that dies drops out when its heartbeat is older than the window.
 *
 *   replica ──every beat──▶ SET {p}fleet:<id> JSON PX 30000; ZADD {p}fleet now <id>
 *   GET /admin/fleet ─────▶ ZRANGEBYSCORE {p}fleet now-30000 +inf, GET each record
 */
#include "px.h"

#include "ap_log.h"
#include "ap_store.h"
#include "ap_time.h"
#include "ap_version.h"

#include <cJSON.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLEET_WINDOW_MS 30000

struct px_fleet {
    struct px_ctx *ctx;             /* borrowed */
    struct event *timer;            /* owned: the next heartbeat */
    int64_t started_ms;
    char host[64];
    px_fleet_done_fn left;          /* px_fleet_leave's callback, until Redis answers */
    void *left_arg;
    unsigned leaving:1;             /* no more heartbeats */
};

static void fleet_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    px_fleet_beat(arg);
}

struct px_fleet *px_fleet_new(struct px_ctx *ctx)
{
    struct px_fleet *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->ctx = ctx;
    f->started_ms = ap_now_ms();
    if (gethostname(f->host, sizeof(f->host) - 1) < 0)
        snprintf(f->host, sizeof(f->host), "unknown");
    f->timer = evtimer_new(ctx->base, fleet_on_timer, f);
    if (f->timer == NULL) {
        free(f);
        return NULL;
    }
    return f;
}

void px_fleet_free(struct px_fleet *f)
{
    if (f == NULL)
        return;
    event_free(f->timer);
    free(f);
}

/* This replica's record: what an operator looking at the fleet wants to see. */
static char *fleet_record(const struct px_fleet *f)
{
    const struct px_ctx *ctx = f->ctx;
    char started[40];
    ap_time_iso((time_t)(f->started_ms / 1000), ctx->cfg.tz_offset, started, sizeof(started));
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", ctx->cfg.instance_id);
    cJSON_AddStringToObject(r, "version", ap_version);
    cJSON_AddStringToObject(r, "started", started);
    cJSON_AddNumberToObject(r, "started_ms", (double)f->started_ms);
    cJSON_AddStringToObject(r, "host", f->host);
    cJSON_AddNumberToObject(r, "pid", (double)getpid());
    cJSON_AddNumberToObject(r, "port", ctx->cfg.port);
    cJSON_AddNumberToObject(r, "in_flight", ctx->stats.active);
    cJSON_AddNumberToObject(r, "streams", ctx->stats.streams);
    cJSON_AddNumberToObject(r, "usage_pending", (double)px_usage_pending(ctx->usage));
    cJSON_AddNumberToObject(r, "cached_keys", (double)px_keys_count(ctx->keys));
    cJSON_AddBoolToObject(r, "draining", ctx->draining);
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return s;
}

void px_fleet_beat(struct px_fleet *f)
{
    if (f->leaving)
        return;
    struct timeval tv = {f->ctx->cfg.fleet_heartbeat_ms / 1000, (f->ctx->cfg.fleet_heartbeat_ms % 1000) * 1000};
    evtimer_add(f->timer, &tv); /* re-arms: a beat made early moves the next one */
    char *rec = fleet_record(f), ttl[16];
    if (rec == NULL)
        return;
    snprintf(ttl, sizeof(ttl), "%d", FLEET_WINDOW_MS);
    const char *argv[] = {"EVAL", ap_script_fleet_beat, "0", ap_store_prefix(), f->ctx->cfg.instance_id, rec, ttl};
    /* Redis down: nothing to do, the next beat (or coming up) writes it. */
    ap_redis_argv(f->ctx->redis, NULL, NULL, 7, argv, NULL);
    cJSON_free(rec);
}

static void fleet_on_left(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_fleet *f = priv;
    (void)ac;
    (void)reply;
    px_fleet_done_fn fn = f->left;
    f->left = NULL;
    if (fn != NULL)
        fn(f->left_arg);
}

void px_fleet_leave(struct px_fleet *f, px_fleet_done_fn fn, void *arg)
{
    f->leaving = 1;
    evtimer_del(f->timer);
    f->left = fn;
    f->left_arg = arg;
    const char *argv[] = {"EVAL", ap_script_fleet_leave, "0", ap_store_prefix(), f->ctx->cfg.instance_id};
    if (ap_redis_argv(f->ctx->redis, fleet_on_left, f, 5, argv, NULL) < 0)
        fleet_on_left(NULL, NULL, f);
}

/* ---- GET /admin/fleet ---- */

struct fleet_call {
    struct px_ctx *ctx;             /* borrowed */
    struct px_hreq *req;     /* borrowed until the reply is sent */
};

static int fleet_cmp_id(const void *a, const void *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(*(cJSON *const *)a, "id");
    const cJSON *y = cJSON_GetObjectItemCaseSensitive(*(cJSON *const *)b, "id");
    return strcmp(cJSON_IsString(x) ? x->valuestring : "", cJSON_IsString(y) ? y->valuestring : "");
}

/* The listing from the script's reply {now, {id, seen, record, ...}}; NULL if it has another shape. */
static cJSON *fleet_view(const redisReply *rep, const struct px_ctx *ctx)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    long tz = ctx->cfg.tz_offset;
    int64_t now = rep->element[0]->integer;
    const redisReply *list = rep->element[1];
    size_t n = 0;
    cJSON **items = calloc(list->elements / 3 + 1, sizeof(*items));
    if (items == NULL)
        return NULL;
    for (size_t i = 0; i + 2 < list->elements; i += 3) {
        const redisReply *seen = list->element[i + 1], *rec = list->element[i + 2];
        if (seen->type != REDIS_REPLY_STRING || rec->type != REDIS_REPLY_STRING)
            continue;
        cJSON *r = cJSON_ParseWithLength(rec->str, rec->len);
        if (!cJSON_IsObject(r)) {
            cJSON_Delete(r); /* not ours: a record is always an object */
            continue;
        }
        int64_t seen_ms = strtoll(seen->str, NULL, 10);
        char iso[40];
        ap_time_iso((time_t)(seen_ms / 1000), tz, iso, sizeof(iso));
        cJSON_AddStringToObject(r, "last_seen", iso);
        cJSON_AddNumberToObject(r, "age_seconds", (double)(now - seen_ms) / 1000.0);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "started_ms");
        if (cJSON_IsNumber(st))
            cJSON_AddNumberToObject(r, "uptime_seconds", (double)(now - (int64_t)st->valuedouble) / 1000.0);
        items[n++] = r;
    }
    qsort(items, n, sizeof(*items), fleet_cmp_id);
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "replicas");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, items[i]);
    free(items);

    char iso[40], day[11];
    ap_time_iso((time_t)(now / 1000), tz, iso, sizeof(iso));
    ap_time_day((time_t)(now / 1000), tz, day);
    cJSON_AddNumberToObject(doc, "window_seconds", FLEET_WINDOW_MS / 1000);
    cJSON_AddStringToObject(doc, "answered_by", ctx->cfg.instance_id);
    cJSON_AddStringToObject(doc, "now", iso);
    cJSON_AddStringToObject(doc, "today", day);
    cJSON_AddStringToObject(doc, "usage_tz", iso + strlen(iso) - 6); /* the ISO time's "+hh:mm" */
    return doc;
}

static void fleet_on_list(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet_call *c = priv;
    redisReply *rep = reply;
    (void)ac;
    cJSON *doc = NULL;
    if (rep == NULL)
        px_reply_error(c->req, PX_FMT_ADMIN, 503, "Redis is unavailable; try again shortly");
    else if ((doc = fleet_view(rep, c->ctx)) == NULL)
        px_reply_error(c->req, PX_FMT_ADMIN, 500, "unexpected reply from storage");
    else
        px_reply_json(c->req, 200, doc);
    c->ctx->stats.active--;
    free(c);
}

void px_fleet_admin(struct px_ctx *ctx, struct px_hreq *req)
{
    struct fleet_call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        return;
    }
    c->ctx = ctx;
    c->req = req;
    ctx->stats.active++; /* a graceful stop waits for it */
    char window[16];
    snprintf(window, sizeof(window), "%d", FLEET_WINDOW_MS);
    const char *argv[] = {"EVAL", ap_script_fleet_list, "0", ap_store_prefix(), window};
    if (ap_redis_argv(ctx->redis, fleet_on_list, c, 5, argv, NULL) < 0)
        fleet_on_list(NULL, NULL, c);
}
