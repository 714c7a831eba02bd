/*
 * px: the proxy replica. Internal header shared by the proxy sources.
 *
 *   client ──HTTP/1.1──▶ px_listen / px_conn / px_hreq (our server: framing, deadlines)
 *                           │
 *                           ▼
 *                        px_router ──▶ px_admin, px_health, px_metrics, px_lark
 *                           │
 *                           └──▶ px_request (auth, plan, finish) ──▶ px_attempt ──curl multi──▶ upstream
 *                                   │ decisions: px_outbound, px_verdict (pure)
 *                                   └──▶ px_usage (batched, idempotent flush ──▶ Redis)
 *
 * One event loop per process; nothing here blocks. A request's async state
 * lives in one struct (px_request for proxied requests, admin_call for an
 * admin call), freed in one place. docs/architecture.md has the whole picture.
 */
#ifndef PX_H
#define PX_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "ap_redis.h"
#include "ap_sse.h"
#include "ap_usage.h"
#include "px_http.h"

struct event_base;
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
    struct ap_sentinel_cfg sentinel;  /* REDIS_SENTINELS (n = 0: none), REDIS_SENTINEL_MASTER */
    long redis_min_acks;            /* REDIS_MIN_REPLICAS_ACK: replicas that must have a usage batch (WAIT) */
    long redis_wait_ms;             /* REDIS_WAIT_TIMEOUT_MS: how long WAIT may take */
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
    long usage_commit_us;           /* USAGE_COMMIT_WINDOW_US: least time between two batches under load */
    long shutdown_grace_s;          /* SHUTDOWN_GRACE_SECONDS */
    long max_connections;           /* MAX_CONNECTIONS: client connections at once */
    struct px_allow *passthrough;   /* owned: PASSTHROUGH: which other /v1 paths pass through */
    char upstream_shown[1024];      /* UPSTREAM_URL without credentials, for /health and logs */
    long fleet_heartbeat_ms;        /* FLEET_HEARTBEAT_MS: how often the replica's heartbeat is written */
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
struct px_fleet;
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
    struct px_server *server;       /* owned: the listener */
    struct px_conn *conns;          /* every client connection (each frees itself) */
    size_t nconns;
    int cork;                       /* depth of px_conn_cork: replies are queued, written at the end */
    struct px_conn *corked;         /* connections with replies queued while corked (each held) */
    /* Answers a request read whole (px_router_dispatch; a pointer so the connection layer
     * stays below the handlers). */
    void (*dispatch)(struct px_ctx *ctx, struct px_hreq *h);
    struct ap_redis *redis;         /* owned */
    struct ap_curl *curl;           /* owned */
    struct px_keys *keys;           /* owned */
    struct px_usage *usage;         /* owned */
    struct ap_fallback *fallback;   /* owned (one reference); replaced when the chain changes */
    struct px_fallback *fb;         /* owned: quota and exhausted marks */
    struct px_lark *lark;           /* owned */
    struct px_import *import;       /* owned; NULL when no KEYS_FILE */
    struct px_fleet *fleet;         /* owned: this replica's heartbeat */
    struct px_policy *policy;       /* owned: per-key limits (px_policy.c) */
    struct ap_prices *prices;       /* owned; NULL without PRICES_CONFIG */
    char *admin_key;                /* borrowed: cfg.admin_key or the imported one */
    struct px_stats stats;
    struct px_upstream *upstream;   /* owned: our HTTP/1.1 client's pools (px_upstream.c) */
    CURL *easy_pool[128];           /* owned: idle easy handles, reused (curl_easy_init is not cheap) */
    int easy_pool_n;
    unsigned draining:1;            /* SIGTERM: finishing in-flight work */
};

/* ---- routing (px_router.c) and reply helpers (px_reply.c) ---- */

/* Answers one request (called by the connection once the request is read whole). */
void px_router_dispatch(struct px_ctx *ctx, struct px_hreq *h);
/* ---- error formats (px_errfmt.c, pure) ---- */

/* The error format of the endpoint a path belongs to. */
enum px_fmt px_fmt_for_path(const char *path);
/* The error body itself (new object), e.g. to embed in a stream. */
struct cJSON *px_error_doc(enum px_fmt fmt, int status, const char *message);
/* "Not Found" for 404 and so on (static). */
const char *px_status_reason(int status);

/* ---- the pass-through allow-list (px_allow.c, pure) ---- */

struct px_allow;
/* Parses "METHOD /path,..." (a path ending in '*' is a prefix); NULL with *err set when malformed. */
struct px_allow *px_allow_parse(const char *spec, const char **err);
void px_allow_free(struct px_allow *a);
/* 1 when the method may reach the (decoded) path. */
int px_allow_match(const struct px_allow *a, const char *method, const char *path);

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
/* Counter updates not yet acknowledged by Redis (with REDIS_MIN_REPLICAS_ACK: by its replicas, while replies wait for them). */
size_t px_usage_pending(const struct px_usage *u);
/* Counter updates written to a master that no replica has acknowledged yet (kept, and written again on a new connection). */
size_t px_usage_unreplicated(const struct px_usage *u);
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
struct ap_import;
/* Loads KEYS_FILE; NULL with *failed = 1 when the file is unusable. */
struct px_import *px_import_new(struct px_ctx *ctx, const char *path, int *failed);
/* The admin key the file carried, or NULL. */
const char *px_import_admin_key(const struct px_import *im);
/* Sends the import (once it succeeded, again only after a restart). */
void px_import_run(struct px_import *im);
void px_import_free(struct px_import *im);

/* How one run of an import went. */
struct px_import_result {
    size_t keys;         /* commands of the run (one per key) */
    size_t imported;     /* keys newly imported */
    size_t present;      /* keys already there */
    size_t id_taken;     /* keys not imported: their id belongs to another key there */
    size_t refused;      /* commands Redis answered with an error */
    size_t lost;         /* commands whose connection went away before the reply */
    size_t unsent;       /* commands that could not be sent (Redis down) */
    char error[160];     /* the first refusal's text, "" when none */
};

/*
 * The one runner of an import, for KEYS_FILE at startup and POST /admin/import:
 * sends the EVAL of every key of `data` (borrowed: it must live until `done`
 * runs) and calls done exactly once, after the last reply, whatever the replies
 * were (also at once when nothing could be sent). A run is complete when
 * refused + lost + unsent == 0. Returns 0, or -1 (out of memory; done is not called).
 */
int px_import_send(struct px_ctx *ctx, const struct ap_import *data,
                   void (*done)(void *arg, const struct px_import_result *res), void *arg);

/* ---- admin API (px_admin.c) and health (px_health.c) ---- */

void px_admin_handle(struct px_ctx *ctx, struct px_hreq *req, const char *path);
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
uint64_t px_fallback_switches(const struct px_fallback *fb);
struct ap_quota;
struct ap_marks;
/* The state behind the decisions (borrowed; valid until the next event). */
const struct ap_quota *px_fallback_quota(const struct px_fallback *fb);
const struct ap_marks *px_fallback_marks(const struct px_fallback *fb);
/* GET /admin/fallback (px_fallback_view.c). */
void px_fallback_admin(struct px_ctx *ctx, struct px_hreq *req);
void px_health_handle(struct px_ctx *ctx, struct px_hreq *req);

/* ---- proxied requests (px_request.c) ---- */

enum px_route { PX_ROUTE_MESSAGES, PX_ROUTE_CHAT, PX_ROUTE_PASS };

void px_request_handle(struct px_ctx *ctx, struct px_hreq *req, enum px_route route);
/* Frees the idle curl handles (shutdown). */
void px_attempt_pool_free(struct px_ctx *ctx);

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
void px_lark_handle(struct px_ctx *ctx, struct px_hreq *req);
/* GET /admin/lark/authorize: a fresh state and the authorization URL. */
void px_lark_authorize(struct px_ctx *ctx, struct px_hreq *req);

/* ---- metrics (px_metrics.c) ---- */

int px_metrics_init(void);
void px_metrics_free(void);
/* route: a string literal (remembered by address); tier and model: "" when there is none
 * (e.g. the key was refused); the caller bounds them. */
void px_metrics_request(const char *route, int status, const char *tier, const char *model);
/* ttfb_s < 0: unknown. */
void px_metrics_upstream(const char *tier, double total_s, double ttfb_s);
void px_metrics_tokens(const struct ap_usage *u);
/* kind: "proactive" or "reactive". */
void px_metrics_switch(const char *kind);
void px_metrics_handle(struct px_ctx *ctx, struct px_hreq *req);

/* ---- the fleet (px_fleet.c) ---- */

struct px_fleet *px_fleet_new(struct px_ctx *ctx);
void px_fleet_free(struct px_fleet *f);
/* Writes the heartbeat now (Redis came up, or the replica started draining). */
void px_fleet_beat(struct px_fleet *f);
typedef void (*px_fleet_done_fn)(void *arg);
/* Stops the heartbeat and removes it from Redis; fn(arg) once done, or at once when Redis is down. */
void px_fleet_leave(struct px_fleet *f, px_fleet_done_fn fn, void *arg);
/* GET /admin/fleet: the replicas seen in the last 30 s. */
void px_fleet_admin(struct px_ctx *ctx, struct px_hreq *req);

/* ---- admin console (px_ui.c, px_ui_map.c; see px_ui.h) ---- */

/* 1 when the console answers `path`: "/", "/ui" and "/ui/...". */
int px_ui_owns(const char *path);
void px_ui_handle(struct px_ctx *ctx, struct px_hreq *req, const char *path);

/* ---- pub/sub events (px_events.c) ---- */

void px_events_on_message(struct ap_redis *r, const char *payload, size_t len, void *arg);
void px_events_on_up(struct ap_redis *r, void *arg);
void px_events_on_down(struct ap_redis *r, void *arg);

#endif
