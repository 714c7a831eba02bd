/*
 * api-proxy-admin: what an operator does without HTTP (docs/contract.md section 1).
 * It talks to Redis directly with the same scripts and views as the proxy's
 * admin API, so both always agree; changes are published on the events
 * channel like the API's, and every replica applies them at once.
 * A command-line tool, so plain blocking hiredis is right here.
 */
#include "ap_delta.h"
#include "ap_env.h"
#include "ap_file.h"
#include "ap_import.h"
#include "ap_log.h"
#include "ap_policy.h"
#include "ap_policy_redis.h"
#include "ap_redis.h"
#include "ap_sentinel.h"
#include "ap_store.h"
#include "ap_time.h"
#include "ap_views.h"

#include <cJSON.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: api-proxy-admin COMMAND [ARGS]\n"
    "\n"
    "  import FILE               import an original keys.json, or an export (keys, names, flags,\n"
    "                            policies, usage); idempotent\n"
    "  export [FILE]             every key (hashed, still usable after an import), its policy and\n"
    "                            its whole usage history, as JSON (stdout without FILE)\n"
    "  create NAME [POLICY]      create a key and print it (the only time it is shown);\n"
    "                            POLICY is a JSON object, e.g. '{\"rpm\": 60, \"daily_usd\": 5}'\n"
    "  policy show KEY-OR-ID     the key's policy ({} for none)\n"
    "  policy set KEY-OR-ID JSON replace it ('{}' clears it); every replica applies it at once\n"
    "  list                      list keys (masked) with their totals\n"
    "  usage [KEY-OR-ID]         usage of one key, or the totals of all keys\n"
    "  daily [YYYY-MM-DD]        daily usage with model and key breakdown\n"
    "  hourly [YYYY-MM-DD]       hourly usage\n"
    "  enable|disable|delete KEY-OR-ID\n"
    "  script NAME               print a Lua script the proxies run (admit, renew, flush, fold), e.g. to\n"
    "                            inspect or test it against a Redis\n"
    "\n"
    "Environment: REDIS_URL (redis://127.0.0.1:6379/0), REDIS_PREFIX (ap:), USAGE_TZ (+00:00);\n"
    "with Redis Sentinel: REDIS_SENTINELS (host:port,...), REDIS_SENTINEL_MASTER (mymaster),\n"
    "REDIS_SENTINEL_PASSWORD (password and db still come from REDIS_URL).\n";

/* Connects to u with AUTH and SELECT; NULL with the reason in why. */
static redisContext *admin_open(const struct ap_redis_url *u, char *why, size_t whyn)
{
    char at[300];
    ap_hostport_format(u->host, u->port, at, sizeof(at));
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
    if (c == NULL || c->err) {
        snprintf(why, whyn, "cannot connect to Redis at %s: %s", at, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (u->password[0] != '\0')
        r = u->user[0] ? redisCommand(c, "AUTH %s %s", u->user, u->password) : redisCommand(c, "AUTH %s", u->password);
    int bad = r != NULL && r->type == REDIS_REPLY_ERROR;
    freeReplyObject(r);
    r = NULL;
    if (!bad && u->db != 0) {
        r = redisCommand(c, "SELECT %d", u->db);
        bad = r == NULL || r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
    }
    if (bad) {
        snprintf(why, whyn, "Redis at %s refused AUTH/SELECT", at);
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Asks the sentinels in turn where the master is: 0 with u->host/port set, or -1 with why. */
static int admin_sentinel_master(const struct ap_sentinel_cfg *s, struct ap_redis_url *u, char *why, size_t whyn)
{
    snprintf(why, whyn, "no sentinel answered");
    for (size_t i = 0; i < s->n; i++) {
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectWithTimeout(s->addr[i].host, s->addr[i].port, tv);
        redisReply *r = NULL;
        int found = 0;
        if (c != NULL && !c->err) {
            redisSetTimeout(c, tv);
            if (s->password[0] != '\0')
                freeReplyObject(redisCommand(c, "AUTH %s", s->password));
            r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master);
            found = ap_sentinel_master_reply(r, u->host, sizeof(u->host), &u->port);
        }
        if (found != 1)
            snprintf(why, whyn, "sentinel %s:%d: %s", s->addr[i].host, s->addr[i].port,
                     c == NULL || c->err ? "unreachable" : found == 0 ? "does not know the master" : "bad answer");
        freeReplyObject(r);
        redisFree(c);
        if (found == 1)
            return 0;
    }
    return -1;
}

/*
 * The master: REDIS_URL's host, or (REDIS_SENTINELS) the one the sentinels name,
 * checked with ROLE. During a failover the sentinels may name a master that is
 * gone or no longer one: ask again for up to ADMIN_FAILOVER_WAIT_MS. When no
 * sentinel answers at all, waiting would not help: that is an error at once.
 */
#define ADMIN_FAILOVER_WAIT_MS 15000
static redisContext *admin_connect(void)
{
    struct ap_redis_url u;
    struct ap_sentinel_cfg s;
    char why[700];
    if (ap_redis_url_parse(ap_env_str("REDIS_URL", "redis://127.0.0.1:6379/0"), &u) < 0) {
        fprintf(stderr, "REDIS_URL is not of the form redis://[[user]:password@]host[:port][/db]\n");
        return NULL;
    }
    if (ap_sentinel_cfg_env(&s) < 0)
        return NULL;
    int64_t deadline = ap_mono_ms() + ADMIN_FAILOVER_WAIT_MS;
    for (;;) {
        redisContext *c = NULL;
        if (s.n > 0 && admin_sentinel_master(&s, &u, why, sizeof(why)) < 0) {
            fprintf(stderr, "%s\n", why);
            return NULL;
        }
        c = admin_open(&u, why, sizeof(why));
        if (c != NULL && s.n > 0) {
            redisReply *r = redisCommand(c, "ROLE");
            enum ap_redis_role role = ap_sentinel_role(r);
            freeReplyObject(r);
            if (role != AP_ROLE_MASTER) {
                snprintf(why, sizeof(why), "%s:%d is not a master (ROLE says %s)", u.host, u.port,
                         ap_sentinel_role_name(role));
                redisFree(c);
                c = NULL;
            }
        }
        if (c != NULL)
            return c;
        if (s.n == 0 || ap_mono_ms() >= deadline) {
            fprintf(stderr, "%s\n", why);
            return NULL;
        }
        usleep(200 * 1000);
    }
}

/* EVAL script 0 prefix args...; returns the reply or NULL after printing why. */
static redisReply *admin_eval(redisContext *c, const char *script, int nargs, const char **args)
{
    const char *argv[16] = {"EVAL", script, "0", ap_store_prefix()};
    int n = 4;
    for (int i = 0; i < nargs && n < 16; i++)
        argv[n++] = args[i];
    redisReply *r = redisCommandArgv(c, n, argv, NULL);
    if (r == NULL) {
        fprintf(stderr, "Redis: %s\n", c->errstr);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "Redis: %s\n", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int admin_print(cJSON *doc)
{
    if (doc == NULL) {
        fprintf(stderr, "unexpected reply from Redis\n");
        return 1;
    }
    char *s = cJSON_Print(doc);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(doc);
    return 0;
}

static int cmd_import(redisContext *c, const char *path)
{
    struct ap_import imp;
    char err[512];
    if (ap_import_file(path, &imp, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    size_t imported = 0, taken = 0, present = 0;
    int rc = 0;
    for (size_t i = 0; i < imp.ncmds; i++) {
        struct ap_batch *b = imp.cmds[i];
        redisReply *r = redisCommandArgv(c, b->argc, (const char **)b->argv, b->lens);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "import failed: %s\n", r ? r->str : c->errstr);
            freeReplyObject(r);
            rc = 1;
            break;
        }
        imported += r->integer == 1;
        taken += r->integer == -1;
        present += r->integer == 0;
        freeReplyObject(r);
    }
    printf("{\"keys\": %zu, \"imported\": %zu, \"already_present\": %zu, \"id_taken\": %zu, \"skipped\": %zu}\n",
           imp.ncmds, imported, present, taken, imp.skipped);
    if (imp.problem[0] != '\0')
        fprintf(stderr, "skipped: %s\n", imp.problem);
    if (imp.admin_key != NULL)
        fprintf(stderr, "note: the file has an admin_key; set ADMIN_KEY (or KEYS_FILE) on the proxies to use it\n");
    ap_import_free(&imp);
    return rc;
}

/* A policy given on the command line -> canonical text in *out (NULL: none). 0, or -1 after printing why. */
static int admin_policy_arg(const char *json, char **out)
{
    char err[300];
    *out = NULL;
    struct ap_policy *p = ap_policy_parse_text(json, strlen(json), err, sizeof(err));
    if (p == NULL) {
        fprintf(stderr, "invalid policy: %s\n", err);
        return -1;
    }
    if (!ap_policy_empty(p))
        *out = ap_policy_print(p);
    ap_policy_free(p);
    return 0;
}

static int cmd_create(redisContext *c, const char *name, const char *policy_json, long tz)
{
    struct ap_new_key k;
    const char *args[7];
    char *policy = NULL;
    if (policy_json != NULL && admin_policy_arg(policy_json, &policy) < 0)
        return 2;
    if (ap_store_new_key(&k, name, tz) < 0) {
        fprintf(stderr, "no randomness available\n");
        free(policy);
        return 1;
    }
    ap_store_new_key_args(&k, args);
    args[6] = policy ? policy : "";
    redisReply *r = admin_eval(c, ap_script_key_create, 7, args);
    int ok = r != NULL && r->integer == 1;
    freeReplyObject(r);
    if (ok) {
        /* Printed as JSON by cJSON: a name is user input and may hold quotes or control bytes. */
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "api_key", k.secret);
        cJSON_AddStringToObject(doc, "id", k.id);
        cJSON_AddStringToObject(doc, "name", k.name);
        cJSON_AddItemToObject(doc, "policy", policy ? cJSON_Parse(policy) : cJSON_CreateObject());
        ok = admin_print(doc) == 0;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    free(policy);
    return ok ? 0 : 1;
}

static int cmd_export(redisContext *c, const char *path, long tz)
{
    redisReply *r = admin_eval(c, ap_script_export, 0, NULL);
    cJSON *doc = r ? ap_view_export(r, tz, ap_now_ms()) : NULL;
    freeReplyObject(r);
    if (doc == NULL) {
        fprintf(stderr, "unexpected reply from Redis\n");
        return 1;
    }
    char *s = cJSON_Print(doc);
    cJSON_Delete(doc);
    int rc = 0;
    if (path == NULL) {
        printf("%s\n", s);
    } else if (ap_file_write_atomic(path, s, 0600) < 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        rc = 1;
    } else {
        fprintf(stderr, "exported to %s\n", path);
    }
    cJSON_free(s);
    return rc;
}

/* verb: usage, delete, enable, disable, "policy show", or "policy set" with `policy` (canonical; NULL clears). */
static int cmd_key(redisContext *c, const char *verb, const char *ref, const char *policy, long tz)
{
    char id[17], hash[65];
    ap_store_key_ref(ref, id, hash);
    const char *script = strcmp(verb, "usage") == 0          ? ap_script_key_usage
                         : strcmp(verb, "delete") == 0       ? ap_script_key_delete
                         : strcmp(verb, "policy show") == 0  ? ap_script_key_get
                         : strcmp(verb, "policy set") == 0   ? ap_script_key_set_policy
                                                             : ap_script_key_set_enabled;
    const char *args[] = {id, hash, script == ap_script_key_set_policy ? (policy ? policy : "")
                                    : strcmp(verb, "enable") == 0      ? "1"
                                                                       : "0"};
    int nargs = script == ap_script_key_set_enabled || script == ap_script_key_set_policy ? 3 : 2;
    redisReply *r = admin_eval(c, script, nargs, args);
    if (r == NULL)
        return 1;
    int rc;
    if (r->type == REDIS_REPLY_NIL) {
        fprintf(stderr, "key not found\n");
        rc = 1;
    } else if (script == ap_script_key_usage) {
        rc = admin_print(ap_view_key_usage(r, tz));
    } else if (script == ap_script_key_get || script == ap_script_key_set_policy) {
        rc = admin_print(ap_view_key_policy(r));
    } else {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "status", strcmp(verb, "delete") == 0   ? "deleted"
                                               : strcmp(verb, "enable") == 0 ? "enabled"
                                                                             : "disabled");
        cJSON_AddStringToObject(doc, "name", r->elements > 1 && r->element[1]->str ? r->element[1]->str : "");
        rc = admin_print(doc);
    }
    freeReplyObject(r);
    return rc;
}

static int admin_run(redisContext *c, int argc, char **argv, long tz)
{
    const char *cmd = argv[1];
    const char *arg = argc > 2 ? argv[2] : NULL;
    redisReply *r = NULL;
    int rc;

    if (strcmp(cmd, "import") == 0 && arg)
        return cmd_import(c, arg);
    if (strcmp(cmd, "create") == 0 && arg && argc <= 4)
        return cmd_create(c, arg, argc > 3 ? argv[3] : NULL, tz);
    if (strcmp(cmd, "policy") == 0 && argc == 4 && strcmp(argv[2], "show") == 0)
        return cmd_key(c, "policy show", argv[3], NULL, tz);
    if (strcmp(cmd, "policy") == 0 && argc == 5 && strcmp(argv[2], "set") == 0) {
        char *policy;
        if (admin_policy_arg(argv[4], &policy) < 0)
            return 2;
        rc = cmd_key(c, "policy set", argv[3], policy, tz);
        free(policy);
        return rc;
    }
    if (strcmp(cmd, "export") == 0 && argc <= 3)
        return cmd_export(c, arg, tz);
    if ((strcmp(cmd, "enable") == 0 || strcmp(cmd, "disable") == 0 || strcmp(cmd, "delete") == 0 ||
         strcmp(cmd, "usage") == 0) && arg)
        return cmd_key(c, cmd, arg, NULL, tz);
    if (strcmp(cmd, "list") == 0) {
        r = admin_eval(c, ap_script_keys_list, 0, NULL);
        rc = r ? admin_print(ap_view_keys_list(r, tz)) : 1;
    } else if (strcmp(cmd, "usage") == 0) {
        r = admin_eval(c, ap_script_usage_total, 0, NULL);
        rc = r ? admin_print(ap_view_usage_total(r)) : 1;
    } else if (strcmp(cmd, "daily") == 0 || strcmp(cmd, "hourly") == 0) {
        const char *args[] = {arg ? arg : ""};
        int daily = strcmp(cmd, "daily") == 0;
        r = admin_eval(c, daily ? ap_script_usage_daily : ap_script_usage_hourly, 1, args);
        rc = r ? admin_print(daily ? ap_view_usage_daily(r) : ap_view_usage_hourly(r)) : 1;
    } else {
        fputs(usage_text, stderr);
        return 2;
    }
    freeReplyObject(r);
    return rc;
}

/* Needs no Redis. */
static int cmd_script(const char *name)
{
    static const struct {
        const char *name;
        const char *text;
    } scripts[] = {
        {"admit", ap_script_policy_admit},
        {"renew", ap_script_policy_renew},
        {"flush", ap_script_flush},
        {"fold", ap_script_usage_fold},
    };
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        if (strcmp(name, scripts[i].name) == 0) {
            fputs(scripts[i].text, stdout);
            return 0;
        }
    fprintf(stderr, "unknown script %s (admit, renew, flush, fold)\n", name);
    return 2;
}

int main(int argc, char **argv)
{
    long tz;
    ap_log_init("admin");
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (ap_parse_utc_offset(ap_env_str("USAGE_TZ", "+00:00"), &tz) < 0) {
        fprintf(stderr, "USAGE_TZ is not a UTC offset like +08:00\n");
        return 2;
    }
    if (strcmp(argv[1], "script") == 0 && argc == 3)
        return cmd_script(argv[2]);
    ap_store_set_prefix(ap_env_str("REDIS_PREFIX", "ap:"));
    redisContext *c = admin_connect();
    if (c == NULL)
        return 1;
    int rc = admin_run(c, argc, argv, tz);
    redisFree(c);
    return rc;
}
