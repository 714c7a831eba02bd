/*
 * px: the proxy replica. Internal header shared by the proxy sources.
 *
 *   client ──HTTP──▶ px_http (evhttp, routing, framing checks, error formats)
 *                      │
 *                      ├─▶ px_admin  ──EVAL──▶ Redis (keys, usage views)
 *                      ├─▶ px_health
 *                      └─▶ px_auth (key cache ◀─pub/sub── Redis)
 *                            └─▶ px_relay ──curl multi──▶ upstream
 *                                  └─▶ px_usage (batched, idempotent flush ──▶ Redis)
 *
 * One event loop per process; nothing here blocks. A request's async state
 * lives in one struct (px_req for proxied requests, px_call for an admin
 * call), freed in one place.
 */
#ifndef PX_H
#define PX_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "ap_redis.h"
#include "ap_sse.h"
#include "ap_usage.h"

struct event_base;
struct evdns_base;
struct ap_curl;
struct ap_fallback;
struct cJSON;

/* ---- configuration (px_config.c) ---- */

struct px_config {
    int port;
    char bind[64];
    char upstream_url[1024];
    int upstream_openai;            /* UPSTREAM_FORMAT=openai */
    char *upstream_api_key;         /* owned; NULL: none */
    struct ap_redis_url redis;
    char redis_prefix[64];
    char *admin_key;                /* owned; NULL: admin API disabled */
    char fallback_path[1024];
    char keys_file[1024];           /* empty: none */
    long tz_offset;                 /* USAGE_TZ in seconds */
    long max_body;                  /* MAX_BODY_BYTES */
    long max_headers;               /* MAX_HEADER_BYTES */
    long client_timeout;            /* CLIENT_TIMEOUT_SECONDS: idle read/write */
    long request_read_s;            /* REQUEST_READ_TIMEOUT_SECONDS: whole request, first byte to last */
    long upstream_connect_ms;       /* UPSTREAM_CONNECT_TIMEOUT_MS */
    long upstream_read_s;           /* UPSTREAM_READ_TIMEOUT_SECONDS: max silence */
    long stream_buffer;             /* STREAM_BUFFER_BYTES: back-pressure limit per client */
    long usage_flush_ms;            /* USAGE_FLUSH_MS */
    long usage_durable;             /* USAGE_DURABLE: success replies wait for their usage to be in Redis */
    long shutdown_grace_s;          /* SHUTDOWN_GRACE_SECONDS */
    char instance_id[64];
    char prices_path[1024];         /* PRICES_CONFIG; empty: no prices */
    int policy_fail_open;           /* POLICY_FAIL_MODE: 1 open, 0 closed */
    long policy_lease_ms;           /* POLICY_LEASE_SECONDS */
    long policy_timeout_ms;         /* POLICY_TIMEOUT_MS: the longest an admission waits for Redis */
    long policy_default_max_tokens; /* POLICY_DEFAULT_MAX_TOKENS: reserved when a request names none */
};

/* Reads the environment; 0, or -1 after logging what is wrong. */
int px_config_load(struct px_config *c);
void px_config_free(struct px_config *c);

/* ---- process context ---- */

struct px_keys;
struct px_usage;
struct px_fallback;
struct px_lark;
struct px_policy;
struct ap_tier;
struct ap_prices;
struct ap_policy;

struct px_stats {
    uint64_t upstream_errors;
    int active;                     /* requests in flight (proxied, admin, Lark): a graceful stop waits for them */
    int streams;                    /* streamed replies in flight */
};

struct px_ctx {
    struct px_config cfg;
    struct event_base *base;        /* owned */
    struct evdns_base *dns;         /* owned */
    struct evhttp *http;            /* owned */
    struct evhttp_bound_socket *listener; /* owned by http; NULL once draining */
    struct ap_redis *redis;         /* owned */
    struct ap_curl *curl;           /* owned */
    struct px_keys *keys;           /* owned */
    struct px_usage *usage;         /* owned */
    struct ap_fallback *fallback;   /* owned (one reference); replaced when the chain changes */
    struct px_fallback *fb;         /* owned: quota and exhausted marks */
    struct px_lark *lark;           /* owned */
    struct px_import *import;       /* owned; NULL when no KEYS_FILE */
    struct px_policy *policy;       /* owned: per-key limits (px_policy.c) */
    struct ap_prices *prices;       /* owned; NULL without PRICES_CONFIG */
    char *admin_key;                /* borrowed: cfg.admin_key or the imported one */
    struct px_stats stats;
    CURL *easy_pool[128];           /* owned: idle easy handles, reused (curl_easy_init is not cheap) */
    int easy_pool_n;
    unsigned draining:1;            /* SIGTERM: finishing in-flight work */
};

/* ---- HTTP helpers (px_http.c) ---- */

/* Which error format an endpoint speaks. */
enum px_fmt { PX_FMT_ANTHROPIC, PX_FMT_OPENAI, PX_FMT_ADMIN };

int px_http_start(struct px_ctx *ctx);
void px_http_stop_accepting(struct px_ctx *ctx);

/* Sends a JSON document (takes ownership of `doc`) with `status`. */
void px_reply_json(struct evhttp_request *req, int status, struct cJSON *doc);
/* Sends a JSON text as is. */
void px_reply_raw_json(struct evhttp_request *req, int status, const char *json, size_t len);
/* Sends an error in the endpoint's format. */
void px_reply_error(struct evhttp_request *req, enum px_fmt fmt, int status, const char *message);
/* The error body itself (new object), e.g. to embed in a stream. */
struct cJSON *px_error_doc(enum px_fmt fmt, int status, const char *message);
/* Anthropic/OpenAI error type for a status. */
const char *px_error_type(enum px_fmt fmt, int status);

/* The presented client key (x-api-key wins over Authorization: Bearer), or NULL. */
const char *px_request_key(struct evhttp_request *req);

/* Request id: the client's x-request-id if sane, else a new one (out >= 33 bytes). */
void px_request_id(struct evhttp_request *req, char *out);

/* Writes the path of `uri` with secrets masked, for logs (no query string). */
void px_log_path(const char *uri, char *out, size_t n);

/* ---- client connections (px_conn.c) ---- */

/* Wraps every accepted connection (request deadline, write limit). Before binding. */
void px_conn_setup(struct px_ctx *ctx);
/* A request was read whole: stops its deadline until the reply is out. */
void px_conn_request_read(struct evhttp_request *req);
/* Bytes of reply waiting to reach the client's socket. */
size_t px_conn_backlog(struct evhttp_connection *evcon);
typedef void (*px_conn_close_fn)(void *arg);
/* Calls fn(arg) if the client's connection closes (fn NULL: stop watching). */
void px_conn_watch_close(struct evhttp_connection *evcon, px_conn_close_fn fn, void *arg);
/* Releases what is left of every connection (after evhttp_free, before the base goes). */
void px_conn_shutdown(void);

/* ---- keys (px_keys.c) ---- */

enum px_key_state { PX_KEY_ENABLED, PX_KEY_DISABLED, PX_KEY_UNKNOWN };

struct px_key_info {
    enum px_key_state state;
    char id[17];
};

struct px_keys *px_keys_new(struct px_ctx *ctx);
void px_keys_free(struct px_keys *k);

/* Cached verdict for a key hash; 0 if cached (info filled), -1 if not cached. */
int px_keys_lookup(struct px_keys *k, const char *hash_hex, struct px_key_info *info);

typedef void (*px_keys_cb)(void *arg, int ok, const struct px_key_info *info);
/* Reads a key from Redis and caches it; cb(ok=0) when Redis cannot answer. 0, or -1 if Redis is down (cb not called). */
int px_keys_fetch(struct px_keys *k, const char *hash_hex, px_keys_cb cb, void *arg);

/* The policy of a cached key (a new reference), or NULL when it has none or is not cached. */
struct ap_policy *px_keys_policy(struct px_keys *k, const char *hash_hex);

/* A {"type":"key",...} event from pub/sub. */
void px_keys_on_event(struct px_keys *k, const struct cJSON *ev);
/* Re-reads every cached key (after a (re)subscribe: events may have been missed). */
void px_keys_revalidate(struct px_keys *k);
size_t px_keys_count(const struct px_keys *k);

/* ---- usage (px_usage.c) ---- */

struct px_usage *px_usage_new(struct px_ctx *ctx);
void px_usage_free(struct px_usage *u);
/* ok: AP_REC_OK, AP_REC_ERROR or AP_REC_REFUSED (ap_store.h). */
void px_usage_record(struct px_usage *u, const char *key_id, const char *model,
                     const struct ap_usage *usage, int ok);
/*
 * Settles a policy admission in the next usage batch, with the usage recorded
 * so far (ap_delta_settle); the batch goes out at once.
 */
void px_usage_settle(struct px_usage *u, const char *base, const char *admission_id, int64_t tokens);
/* Counter updates not yet acknowledged by Redis. */
size_t px_usage_pending(const struct px_usage *u);
/* Tries to write now (Redis came back, or shutting down). */
void px_usage_kick(struct px_usage *u);
typedef void (*px_usage_done_fn)(void *arg);
/*
 * Calls fn(arg) once what was recorded so far is in Redis, or at once when
 * Redis is unreachable (or as soon as it becomes so). May call it before returning.
 */
void px_usage_wait(struct px_usage *u, px_usage_done_fn fn, void *arg);
/* Forgets the waits of arg (their callbacks will not run). */
void px_usage_cancel(struct px_usage *u, void *arg);
/* Redis went away: nobody waits any more. */
void px_usage_redis_down(struct px_usage *u);

/* ---- keys.json import (px_import.c) ---- */

struct px_import;
/* Loads KEYS_FILE; NULL with *failed = 1 when the file is unusable. */
struct px_import *px_import_new(struct px_ctx *ctx, const char *path, int *failed);
/* The admin key the file carried, or NULL. */
const char *px_import_admin_key(const struct px_import *im);
/* Sends the import (once it succeeded, again only after a restart). */
void px_import_run(struct px_import *im);
void px_import_free(struct px_import *im);

/* ---- admin API (px_admin.c) and health (px_health.c) ---- */

void px_admin_handle(struct px_ctx *ctx, struct evhttp_request *req, const char *path);
/* ---- fallback state (px_fallback.c) ---- */

struct px_fallback *px_fallback_new(struct px_ctx *ctx);
void px_fallback_free(struct px_fallback *fb);
/* Re-reads chain, quota and marks from Redis (after a (re)subscribe or a config event). */
void px_fallback_reload(struct px_fallback *fb);
void px_fallback_on_event(struct px_fallback *fb, const char *type, const struct cJSON *ev);
/* Tiers to try for a model, best first (0: pass through unchanged). */
size_t px_fallback_plan(struct px_fallback *fb, const char *model, const struct ap_tier **out, size_t max);
/* 0 when the tier is marked exhausted now. */
int px_fallback_usable(struct px_fallback *fb, const struct ap_tier *t);
/* Marks a tier's model exhausted on every replica (reactive fallback). */
void px_fallback_mark(struct px_fallback *fb, const struct ap_tier *t, const char *why);
/* 1 when an error text says quota, capacity, credit, rate limit... */
int px_reactive_text(const char *s, size_t len);
uint64_t px_fallback_switches(const struct px_fallback *fb);
/* GET /admin/fallback. */
void px_fallback_admin(struct px_ctx *ctx, struct evhttp_request *req);
void px_health_handle(struct px_ctx *ctx, struct evhttp_request *req);

/* ---- proxied requests (px_relay.c) ---- */

enum px_route { PX_ROUTE_MESSAGES, PX_ROUTE_CHAT, PX_ROUTE_PASS };

void px_relay_handle(struct px_ctx *ctx, struct evhttp_request *req, enum px_route route);

/* ---- child processes (px_spawn.c) ---- */

/* ok: exited 0 within the limit; otherwise reason says why ("timed out", "exit status 2: ..."). */
typedef void (*px_spawn_cb)(void *arg, int ok, const char *reason);
/* Runs argv (PATH lookup, no shell) with a time limit; 0, or -1 if it could not start (cb not called). */
int px_spawn_run(struct event_base *base, char *const argv[], int timeout_s, px_spawn_cb cb, void *arg);

/* ---- Lark callbacks (px_lark.c) ---- */

struct px_lark;
struct px_lark *px_lark_new(struct px_ctx *ctx);
void px_lark_free(struct px_lark *l);
/* POST and GET /oauth/callback. */
void px_lark_handle(struct px_ctx *ctx, struct evhttp_request *req);
/* GET /admin/lark/authorize: a fresh state and the authorization URL. */
void px_lark_authorize(struct px_ctx *ctx, struct evhttp_request *req);

/* ---- metrics (px_metrics.c) ---- */

int px_metrics_init(void);
void px_metrics_free(void);
void px_metrics_request(const char *route, int status, const char *tier, const char *model);
/* ttfb_s < 0: unknown. */
void px_metrics_upstream(const char *tier, double total_s, double ttfb_s);
void px_metrics_tokens(const struct ap_usage *u);
/* kind: "proactive" or "reactive". */
void px_metrics_switch(const char *kind);
/* A request refused by its key's policy (reason: ap_refusal_fmt.reason). */
void px_metrics_refused(const char *reason);
/* An admission of a limited key: "checked" (by Redis) or "unchecked" (POLICY_FAIL_MODE=open). */
void px_metrics_admission(const char *kind);
void px_metrics_handle(struct px_ctx *ctx, struct evhttp_request *req);

/* ---- pub/sub events (px_events.c) ---- */

void px_events_on_message(struct ap_redis *r, const char *payload, size_t len, void *arg);
void px_events_on_up(struct ap_redis *r, void *arg);
void px_events_on_down(struct ap_redis *r, void *arg);

#endif
