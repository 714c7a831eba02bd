/*
 * Admin API (docs/contract.md section 3): key management and usage views. Each
 * endpoint is one EVAL of an ap_store script (one round trip, atomic), and
 * the JSON is built by ap_views, shared with the admin command line. One
 * admin_call per request carries the async state and is freed by the reply
 * callback.
 */
#include "px.h"

#include "ap_import.h"
#include "ap_json.h"
#include "ap_keys.h"
#include "ap_log.h"
#include "ap_range.h"
#include "ap_policy.h"
#include "ap_store.h"
#include "ap_time.h"
#include "ap_views.h"

#include <cJSON.h>
#include <openssl/crypto.h>
#include <event2/keyvalq_struct.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum admin_kind {
    ADMIN_KEYS_LIST, ADMIN_KEY_CREATE, ADMIN_KEY_USAGE, ADMIN_KEY_ENABLE, ADMIN_KEY_DISABLE,
    ADMIN_KEY_DELETE, ADMIN_USAGE, ADMIN_USAGE_DAILY, ADMIN_USAGE_HOURLY, ADMIN_IMPORT,
    ADMIN_POLICY_GET, ADMIN_POLICY_SET, ADMIN_EXPORT,
};

struct admin_call {
    struct px_ctx *ctx;             /* borrowed */
    struct px_hreq *req;     /* borrowed until the reply is sent */
    enum admin_kind kind;
    struct ap_new_key nk;           /* ADMIN_KEY_CREATE; the secret is wiped on free */
    struct ap_import imp;           /* ADMIN_IMPORT: owned, read by the import run until it is done */
    char from[11], to[11];          /* ADMIN_USAGE_DAILY/HOURLY over a range; "" otherwise */
    char *policy;                   /* ADMIN_KEY_CREATE: canonical policy JSON, owned; NULL: none */
};

/* The longest ranges the usage views read (days; hourly ranges read 24 buckets a day). */
#define ADMIN_RANGE_DAYS 1000
#define ADMIN_RANGE_DAYS_HOURLY 92

static void admin_call_free(struct admin_call *c)
{
    c->ctx->stats.active--; /* counted so that a graceful stop waits for it */
    OPENSSL_cleanse(&c->nk, sizeof(c->nk));
    ap_import_free(&c->imp);
    free(c->policy);
    free(c);
}

static void admin_unavailable(struct px_hreq *req)
{
    px_reply_error(req, PX_FMT_ADMIN, 503, "Redis is unavailable; try again shortly");
}

static void admin_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct admin_call *c = priv;
    redisReply *rep = reply;
    long tz = c->ctx->cfg.tz_offset;
    cJSON *doc = NULL;
    (void)ac;

    if (rep == NULL) {
        admin_unavailable(c->req);
        admin_call_free(c);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        ap_error(NULL, "admin: Redis refused a command: %s", rep->str);
        px_reply_error(c->req, PX_FMT_ADMIN, 500, "storage error");
        admin_call_free(c);
        return;
    }
    switch (c->kind) {
    case ADMIN_KEYS_LIST:
        doc = ap_view_keys_list(rep, tz);
        break;
    case ADMIN_KEY_USAGE:
        doc = rep->type == REDIS_REPLY_NIL ? NULL : ap_view_key_usage(rep, tz);
        break;
    case ADMIN_USAGE:
        doc = ap_view_usage_total(rep);
        break;
    case ADMIN_USAGE_DAILY:
    case ADMIN_USAGE_HOURLY:
        doc = c->kind == ADMIN_USAGE_DAILY ? ap_view_usage_daily(rep) : ap_view_usage_hourly(rep);
        if (doc != NULL && c->from[0] != '\0') {
            cJSON_AddStringToObject(doc, "from", c->from);
            cJSON_AddStringToObject(doc, "to", c->to);
        }
        break;
    case ADMIN_KEY_CREATE:
        if (rep->integer != 1) {
            px_reply_error(c->req, PX_FMT_ADMIN, 500, "key collision; try again");
            admin_call_free(c);
            return;
        }
        doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "api_key", c->nk.secret);
        cJSON_AddStringToObject(doc, "id", c->nk.id);
        cJSON_AddStringToObject(doc, "name", c->nk.name);
        cJSON_AddStringToObject(doc, "key", c->nk.masked);
        cJSON_AddItemToObject(doc, "policy", c->policy ? cJSON_Parse(c->policy) : cJSON_CreateObject());
        ap_info(NULL, "admin: created key %s (%s)%s", c->nk.id, c->nk.name, c->policy ? " with a policy" : "");
        break;
    case ADMIN_POLICY_GET:
    case ADMIN_POLICY_SET:
        doc = rep->type == REDIS_REPLY_NIL ? NULL : ap_view_key_policy(rep);
        if (doc != NULL && c->kind == ADMIN_POLICY_SET)
            ap_info(NULL, "admin: key %s policy %s", rep->element[0]->str ? rep->element[0]->str : "?",
                    cJSON_GetArraySize(doc) ? "set" : "cleared");
        break;
    case ADMIN_EXPORT:
        doc = ap_view_export(rep, tz, ap_now_ms());
        break;
    case ADMIN_KEY_ENABLE:
    case ADMIN_KEY_DISABLE:
    case ADMIN_KEY_DELETE:
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2)
            break;
        doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "status", c->kind == ADMIN_KEY_ENABLE    ? "enabled"
                                               : c->kind == ADMIN_KEY_DISABLE ? "disabled"
                                                                              : "deleted");
        cJSON_AddStringToObject(doc, "name", rep->element[1]->str ? rep->element[1]->str : "");
        cJSON_AddStringToObject(doc, "id", rep->element[0]->str ? rep->element[0]->str : "");
        ap_info(NULL, "admin: key %s %s", rep->element[0]->str ? rep->element[0]->str : "?",
                cJSON_GetObjectItem(doc, "status")->valuestring);
        break;
    case ADMIN_IMPORT: /* answered by admin_on_imported */
        break;
    }
    if (doc == NULL && (c->kind == ADMIN_KEY_USAGE || c->kind == ADMIN_KEY_ENABLE || c->kind == ADMIN_KEY_DISABLE ||
                        c->kind == ADMIN_KEY_DELETE || c->kind == ADMIN_POLICY_GET || c->kind == ADMIN_POLICY_SET))
        px_reply_error(c->req, PX_FMT_ADMIN, 404, "Key not found");
    else if (doc == NULL)
        px_reply_error(c->req, PX_FMT_ADMIN, 500, "unexpected reply from storage");
    else
        px_reply_json(c->req, 200, doc);
    admin_call_free(c);
}

static struct admin_call *admin_call_new(struct px_ctx *ctx, struct px_hreq *req, enum admin_kind kind)
{
    struct admin_call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    c->req = req;
    c->kind = kind;
    ctx->stats.active++;
    return c;
}

/* EVAL script 0 prefix args... ; replies 503 itself when Redis is down. */
static void admin_eval(struct admin_call *c, const char *script, int nargs, const char **args)
{
    const char *small[16];
    const char **argv = nargs + 4 <= 16 ? small : malloc((size_t)(nargs + 4) * sizeof(*argv));
    int n = 0;
    if (argv == NULL) {
        px_reply_error(c->req, PX_FMT_ADMIN, 500, "out of memory");
        admin_call_free(c);
        return;
    }
    argv[n++] = "EVAL";
    argv[n++] = script;
    argv[n++] = "0";
    argv[n++] = ap_store_prefix();
    for (int i = 0; i < nargs; i++)
        argv[n++] = args[i];
    /* hiredis copies the arguments into its buffer before returning. */
    int rc = ap_redis_argv(c->ctx->redis, admin_on_reply, c, n, argv, NULL);
    if (argv != small)
        free(argv);
    if (rc < 0) {
        admin_unavailable(c->req);
        admin_call_free(c);
    }
}

/*
 * A policy object validated into its canonical text (*out NULL when empty).
 * 0, or -1 after replying 400 with what is wrong.
 */
static int admin_policy_text(struct px_hreq *req, const cJSON *obj, char **out)
{
    char err[300], msg[340];
    *out = NULL;
    struct ap_policy *p = ap_policy_parse(obj, err, sizeof(err));
    if (p == NULL) {
        snprintf(msg, sizeof(msg), "invalid policy: %s", err);
        px_reply_error(req, PX_FMT_ADMIN, 400, msg);
        return -1;
    }
    if (!ap_policy_empty(p) && (*out = ap_policy_print(p)) == NULL) {
        ap_policy_free(p);
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        return -1;
    }
    ap_policy_free(p);
    return 0;
}

/* The request body as a JSON object, or NULL after replying 400. */
static cJSON *admin_body(struct px_hreq *req, int optional)
{
    size_t len;
    const char *body = px_hreq_body(req, &len);
    if (len == 0 && optional)
        return cJSON_CreateObject();
    const char *err = NULL;
    cJSON *j = ap_json_parse_client(body, len, &err);
    if (!cJSON_IsObject(j)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "body must be a JSON object%s%s", err ? ": " : "", err ? err : "");
        cJSON_Delete(j);
        px_reply_error(req, PX_FMT_ADMIN, 400, msg);
        return NULL;
    }
    return j;
}

static void admin_create(struct px_ctx *ctx, struct px_hreq *req)
{
    cJSON *body = admin_body(req, 1);
    if (body == NULL)
        return;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(body, "name");
    if (name != NULL && (!cJSON_IsString(name) || strlen(name->valuestring) > 200)) {
        cJSON_Delete(body);
        px_reply_error(req, PX_FMT_ADMIN, 400, "name must be a string of at most 200 characters");
        return;
    }
    char *policy;
    if (admin_policy_text(req, cJSON_GetObjectItemCaseSensitive(body, "policy"), &policy) < 0) {
        cJSON_Delete(body);
        return;
    }
    struct admin_call *c = admin_call_new(ctx, req, ADMIN_KEY_CREATE);
    if (c == NULL) {
        free(policy);
        cJSON_Delete(body);
        return;
    }
    c->policy = policy;
    int rc = ap_store_new_key(&c->nk, name ? name->valuestring : NULL, ctx->cfg.tz_offset);
    cJSON_Delete(body);
    if (rc < 0) {
        px_reply_error(req, PX_FMT_ADMIN, 500, "no randomness available");
        admin_call_free(c);
        return;
    }
    const char *args[7];
    ap_store_new_key_args(&c->nk, args);
    args[6] = policy ? policy : "";
    admin_eval(c, ap_script_key_create, 7, args);
}

/* The import run is over (every reply is in): answer, then free the call. */
static void admin_on_imported(void *arg, const struct px_import_result *res)
{
    struct admin_call *c = arg;
    size_t missing = res->refused + res->lost + res->unsent;
    if (missing == 0) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "status", "ok");
        cJSON_AddNumberToObject(doc, "keys", (double)res->keys);
        cJSON_AddNumberToObject(doc, "imported", (double)res->imported);
        cJSON_AddNumberToObject(doc, "already_present", (double)res->present);
        cJSON_AddNumberToObject(doc, "id_taken", (double)res->id_taken);
        cJSON_AddNumberToObject(doc, "skipped", (double)c->imp.skipped);
        px_reply_json(c->req, 200, doc);
    } else {
        char msg[320];
        if (res->refused > 0)
            ap_error(NULL, "admin: import: Redis refused %zu of %zu keys: %s", res->refused, res->keys, res->error);
        snprintf(msg, sizeof(msg), "%zu of %zu keys not imported (%s); importing again is safe",
                 missing, res->keys, res->refused > 0 ? "storage error" : "Redis is unavailable");
        px_reply_error(c->req, PX_FMT_ADMIN, res->refused > 0 ? 500 : 503, msg);
    }
    admin_call_free(c);
}

static void admin_import(struct px_ctx *ctx, struct px_hreq *req)
{
    char err[256];
    struct admin_call *c = admin_call_new(ctx, req, ADMIN_IMPORT);
    if (c == NULL)
        return;
    size_t len;
    const char *body = px_hreq_body(req, &len);
    if (ap_import_parse(body, len, &c->imp, err, sizeof(err)) < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "not a keys.json document: %s", err);
        px_reply_error(req, PX_FMT_ADMIN, 400, msg);
        admin_call_free(c);
        return;
    }
    if (c->imp.ncmds == 0) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "status", "ok");
        cJSON_AddNumberToObject(doc, "keys", 0);
        cJSON_AddNumberToObject(doc, "imported", 0);
        cJSON_AddNumberToObject(doc, "already_present", 0);
        cJSON_AddNumberToObject(doc, "id_taken", 0);
        cJSON_AddNumberToObject(doc, "skipped", (double)c->imp.skipped);
        px_reply_json(req, 200, doc);
        admin_call_free(c);
        return;
    }
    if (px_import_send(ctx, &c->imp, admin_on_imported, c) < 0) {
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        admin_call_free(c);
    }
}

/*
 * Splits "/admin/keys/<k>/<action>" (the path is decoded already): writes <k>
 * and returns the action ("" if none), or NULL when <k> cannot be a key or an
 * id. Keys and ids are made of letters, digits, '-', '_' and '.', so anything
 * else (a space, a NUL, a slash that was encoded) is refused rather than
 * trimmed: "<key>%20" must not act on <key>.
 */
static const char *admin_key_path(const char *rest, char *key, size_t n)
{
    const char *slash = strchr(rest, '/');
    size_t kl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (kl == 0 || kl >= n)
        return NULL;
    for (size_t i = 0; i < kl; i++) {
        char ch = rest[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.'))
            return NULL;
    }
    memcpy(key, rest, kl);
    key[kl] = '\0';
    return slash ? slash + 1 : "";
}

static void admin_key_action(struct px_ctx *ctx, struct px_hreq *req, const char *rest)
{
    char key[300], hash[AP_SHA256_HEX];
    enum px_method m = px_hreq_method(req);
    const char *action = admin_key_path(rest, key, sizeof(key));
    if (action == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 404, "Key not found");
        return;
    }
    enum admin_kind kind;
    const char *script;
    char *policy = NULL;
    if (strcmp(action, "policy") == 0 && m == PX_PUT) {
        cJSON *body = admin_body(req, 0);
        int rc = body ? admin_policy_text(req, body, &policy) : -1;
        cJSON_Delete(body);
        if (rc < 0)
            return;
        kind = ADMIN_POLICY_SET;
        script = ap_script_key_set_policy;
    } else if (strcmp(action, "policy") == 0 && m == PX_GET) {
        kind = ADMIN_POLICY_GET;
        script = ap_script_key_get;
    } else if (strcmp(action, "usage") == 0 && m == PX_GET) {
        kind = ADMIN_KEY_USAGE;
        script = ap_script_key_usage;
    } else if (strcmp(action, "disable") == 0 && m == PX_POST) {
        kind = ADMIN_KEY_DISABLE;
        script = ap_script_key_set_enabled;
    } else if (strcmp(action, "enable") == 0 && m == PX_POST) {
        kind = ADMIN_KEY_ENABLE;
        script = ap_script_key_set_enabled;
    } else if (action[0] == '\0' && m == PX_DELETE) {
        kind = ADMIN_KEY_DELETE;
        script = ap_script_key_delete;
    } else if (action[0] == '\0' && m == PX_GET) {
        kind = ADMIN_KEY_USAGE; /* GET /admin/keys/<k>: the same detail document */
        script = ap_script_key_usage;
    } else {
        px_reply_error(req, PX_FMT_ADMIN, 405, "method not allowed on this path");
        return;
    }
    struct admin_call *c = admin_call_new(ctx, req, kind);
    if (c == NULL) {
        free(policy);
        return;
    }
    c->policy = policy;
    char id[17];
    ap_store_key_ref(key, id, hash);
    OPENSSL_cleanse(key, sizeof(key));
    const char *args[] = {id, hash, kind == ADMIN_POLICY_SET ? (policy ? policy : "") : kind == ADMIN_KEY_ENABLE ? "1" : "0"};
    int three = kind == ADMIN_KEY_ENABLE || kind == ADMIN_KEY_DISABLE || kind == ADMIN_POLICY_SET;
    admin_eval(c, script, three ? 3 : 2, args);
}

/*
 * The usage views' query: ?date=YYYY-MM-DD (one day, as the original had it)
 * into date ("" when absent), or a range (from=, to=, days=; ap_range.h) into
 * r. Returns 0 (no range), 1 (a range) or -1 after replying 400.
 */
static int admin_usage_query(struct px_ctx *ctx, struct px_hreq *req, enum admin_kind kind, char *date,
                             struct ap_range *r)
{
    struct evkeyvalq q;
    const char *query = px_hreq_query(req);
    date[0] = '\0';
    if (query == NULL)
        return 0;
    if (evhttp_parse_query_str(query, &q) < 0) {
        px_reply_error(req, PX_FMT_ADMIN, 400, "malformed query string");
        return -1;
    }
    const char *d = evhttp_find_header(&q, "date");
    const char *from = evhttp_find_header(&q, "from"), *to = evhttp_find_header(&q, "to");
    const char *days = evhttp_find_header(&q, "days");
    int y, mo, dd, n = 0, rc = 0;
    char err[128];
    long today = (long)((ap_now_ms() / 1000 + ctx->cfg.tz_offset) / 86400);
    if (d != NULL && (from != NULL || to != NULL || days != NULL)) {
        snprintf(err, sizeof(err), "date cannot be combined with from, to or days");
        rc = -1;
    } else if (d != NULL && (sscanf(d, "%4d-%2d-%2d%n", &y, &mo, &dd, &n) != 3 || n != 10 || d[10] != '\0')) {
        snprintf(err, sizeof(err), "date must be YYYY-MM-DD");
        rc = -1;
    } else if (d != NULL) {
        memcpy(date, d, 11);
    } else {
        rc = ap_range_parse(from, to, days, today,
                            kind == ADMIN_USAGE_HOURLY ? ADMIN_RANGE_DAYS_HOURLY : ADMIN_RANGE_DAYS, r, err,
                            sizeof(err));
    }
    evhttp_clear_headers(&q);
    if (rc < 0)
        px_reply_error(req, PX_FMT_ADMIN, 400, err);
    return rc;
}

/* Reads the buckets of a range (one EVAL, whatever the number of buckets). */
static void admin_usage_range(struct admin_call *c, const struct ap_range *r)
{
    int hourly = c->kind == ADMIN_USAGE_HOURLY;
    size_t n;
    char **buckets = ap_range_buckets(r, hourly, &n);
    const char **args = buckets ? malloc((n + 1) * sizeof(*args)) : NULL;
    if (args == NULL) {
        free(buckets);
        px_reply_error(c->req, PX_FMT_ADMIN, 500, "out of memory");
        admin_call_free(c);
        return;
    }
    ap_time_day_name(r->first, c->from);
    ap_time_day_name(r->last, c->to);
    args[0] = hourly ? "h" : "d";
    memcpy(args + 1, buckets, n * sizeof(*args));
    admin_eval(c, ap_script_usage_buckets, (int)n + 1, args);
    free(args);
    free(buckets);
}

static void admin_usage(struct px_ctx *ctx, struct px_hreq *req, enum admin_kind kind)
{
    char date[11];
    struct ap_range range;
    int ranged = 0;
    if (kind != ADMIN_USAGE && (ranged = admin_usage_query(ctx, req, kind, date, &range)) < 0)
        return;
    struct admin_call *c = admin_call_new(ctx, req, kind);
    if (c == NULL)
        return;
    const char *args[] = {date};
    if (ranged)
        admin_usage_range(c, &range);
    else if (kind == ADMIN_USAGE)
        admin_eval(c, ap_script_usage_total, 0, args);
    else
        admin_eval(c, kind == ADMIN_USAGE_DAILY ? ap_script_usage_daily : ap_script_usage_hourly, 1, args);
}

/* 0 when the caller holds the admin key; otherwise replies and returns -1. */
static int admin_authorize(struct px_ctx *ctx, struct px_hreq *req)
{
    if (ctx->admin_key == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 503, "admin API disabled: set ADMIN_KEY");
        return -1;
    }
    const char *k = px_hreq_key(req);
    if (k == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 401, "Admin key required");
        return -1;
    }
    if (!ap_secret_equal(k, ctx->admin_key)) {
        px_reply_error(req, PX_FMT_ADMIN, 403, "Admin key required");
        return -1;
    }
    return 0;
}

void px_admin_handle(struct px_ctx *ctx, struct px_hreq *req, const char *path)
{
    if (admin_authorize(ctx, req) < 0)
        return;
    enum px_method m = px_hreq_method(req);
    if (strcmp(path, "/admin/keys") == 0 && m == PX_GET) {
        struct admin_call *c = admin_call_new(ctx, req, ADMIN_KEYS_LIST);
        if (c != NULL)
            admin_eval(c, ap_script_keys_list, 0, NULL);
    } else if (strcmp(path, "/admin/keys") == 0 && m == PX_POST) {
        admin_create(ctx, req);
    } else if (strncmp(path, "/admin/keys/", 12) == 0) {
        admin_key_action(ctx, req, path + 12);
    } else if (strcmp(path, "/admin/usage") == 0 && m == PX_GET) {
        admin_usage(ctx, req, ADMIN_USAGE);
    } else if (strcmp(path, "/admin/usage/daily") == 0 && m == PX_GET) {
        admin_usage(ctx, req, ADMIN_USAGE_DAILY);
    } else if (strcmp(path, "/admin/usage/hourly") == 0 && m == PX_GET) {
        admin_usage(ctx, req, ADMIN_USAGE_HOURLY);
    } else if (strcmp(path, "/admin/import") == 0 && m == PX_POST) {
        admin_import(ctx, req);
    } else if (strcmp(path, "/admin/export") == 0 && m == PX_GET) {
        struct admin_call *c = admin_call_new(ctx, req, ADMIN_EXPORT);
        if (c != NULL)
            admin_eval(c, ap_script_export, 0, NULL);
    } else if (strcmp(path, "/admin/lark/authorize") == 0 && m == PX_GET) {
        px_lark_authorize(ctx, req);
    } else if (strcmp(path, "/admin/fallback") == 0 && m == PX_GET) {
        px_fallback_admin(ctx, req);
    } else if (strcmp(path, "/admin/fleet") == 0 && m == PX_GET) {
        px_fleet_admin(ctx, req);
    } else {
        px_reply_error(req, PX_FMT_ADMIN, 404, "Not Found");
    }
}
