/*
 * Keeps the Lark user token stored by the OAuth callback alive: the active
 * poller looks at it every LARK_REFRESH_CHECK_SECONDS and, when it expires
 * within LARK_REFRESH_BEFORE_SECONDS, gets an app token and calls
 * oidc/refresh_access_token, then stores the new token in Redis (and in
 * LARK_TOKEN_FILE when set), as the callback does.
 */
#include "pl.h"

#include "ap_env.h"
#include "ap_fetch.h"
#include "ap_file.h"
#include "ap_lark.h"
#include "ap_log.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <errno.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LARK_LIMIT_MS 10000

struct pl_lark {
    struct pl_ctx *ctx;         /* borrowed */
    char *app_id, *app_secret;  /* owned */
    char *base_url, *token_file;
    long check_s, before_s;
    struct event *timer;        /* owned */
    char refresh_token[2048];
    char auth[1100];
    unsigned busy:1;
};

static void lark_arm(struct pl_lark *lk)
{
    struct timeval tv = {lk->check_s, 0};
    evtimer_add(lk->timer, &tv);
}

static void lark_done(struct pl_lark *lk)
{
    OPENSSL_cleanse(lk->refresh_token, sizeof(lk->refresh_token));
    OPENSSL_cleanse(lk->auth, sizeof(lk->auth));
    lk->busy = 0;
}

static void lark_store(struct pl_lark *lk, cJSON *data)
{
    char *text = ap_lark_token_record(data, ap_now_ms());
    if (text == NULL)
        return;
    char key[128];
    ap_store_key(key, sizeof(key), "lark:user_token");
    ap_redis_cmd(lk->ctx->redis, NULL, NULL, "SET %s %s", key, text);
    /* Tiny and rare: written in place, atomically, mode 0600. */
    if (lk->token_file != NULL && ap_file_write_atomic(lk->token_file, text, 0600) < 0)
        ap_error(NULL, "lark: cannot write LARK_TOKEN_FILE: %s", strerror(errno));
    OPENSSL_cleanse(text, strlen(text));
    cJSON_free(text);
    ap_info(NULL, "lark: user access token refreshed");
}

static void lark_on_refreshed(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct pl_lark *lk = arg;
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (status == 200 && cJSON_IsNumber(code) && code->valuedouble == 0 && cJSON_IsObject(data))
        lark_store(lk, data);
    else
        ap_warn(NULL, "lark: token refresh failed (HTTP %d%s%s)", status, err ? ": " : "", err ? err : "");
    cJSON_Delete(j);
    lark_done(lk);
}

static void lark_on_app_token(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct pl_lark *lk = arg;
    if (status != 200 || ap_lark_app_token_header(body, len, lk->auth, sizeof(lk->auth)) < 0) {
        ap_warn(NULL, "lark: app_access_token failed (HTTP %d%s%s)", status, err ? ": " : "", err ? err : "");
        lark_done(lk);
        return;
    }
    char url[1200];
    snprintf(url, sizeof(url), "%s/open-apis/authen/v1/oidc/refresh_access_token", lk->base_url);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "grant_type", "refresh_token");
    cJSON_AddStringToObject(req, "refresh_token", lk->refresh_token);
    char *payload = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    const char *hdrs[] = {"Content-Type: application/json; charset=utf-8", lk->auth, NULL};
    if (payload == NULL ||
        ap_fetch_start(lk->ctx->curl, url, hdrs, payload, strlen(payload), LARK_LIMIT_MS, lark_on_refreshed, lk) == NULL)
        lark_done(lk);
    if (payload != NULL)
        OPENSSL_cleanse(payload, strlen(payload));
    cJSON_free(payload);
}

static void lark_on_token(redisAsyncContext *ac, void *reply, void *priv)
{
    struct pl_lark *lk = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || rep->type != REDIS_REPLY_STRING) {
        lk->busy = 0;
        return;
    }
    cJSON *j = cJSON_ParseWithLength(rep->str, rep->len);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires_at_ms");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
    int due = cJSON_IsNumber(exp) && cJSON_IsString(rt) &&
              exp->valuedouble - (double)ap_now_ms() < (double)lk->before_s * 1000;
    if (!due || strlen(rt->valuestring) >= sizeof(lk->refresh_token)) {
        cJSON_Delete(j);
        lk->busy = 0;
        return;
    }
    snprintf(lk->refresh_token, sizeof(lk->refresh_token), "%s", rt->valuestring);
    cJSON_Delete(j);
    char url[1200];
    snprintf(url, sizeof(url), "%s/open-apis/auth/v3/app_access_token/internal", lk->base_url);
    char *payload = ap_lark_app_token_request(lk->app_id, lk->app_secret);
    const char *hdrs[] = {"Content-Type: application/json; charset=utf-8", NULL};
    if (payload == NULL ||
        ap_fetch_start(lk->ctx->curl, url, hdrs, payload, strlen(payload), LARK_LIMIT_MS, lark_on_app_token, lk) == NULL)
        lark_done(lk);
    if (payload != NULL)
        OPENSSL_cleanse(payload, strlen(payload));
    cJSON_free(payload);
}

static void lark_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pl_lark *lk = arg;
    char key[128];
    (void)fd;
    (void)what;
    lark_arm(lk);
    if (!lk->ctx->leader || lk->busy)
        return;
    ap_store_key(key, sizeof(key), "lark:user_token");
    if (ap_redis_cmd(lk->ctx->redis, lark_on_token, lk, "GET %s", key) == 0)
        lk->busy = 1;
}

struct pl_lark *pl_lark_new(struct pl_ctx *ctx)
{
    const char *id = ap_env_str("LARK_APP_ID", NULL), *secret = ap_env_str("LARK_APP_SECRET", NULL);
    struct pl_lark *lk = calloc(1, sizeof(*lk));
    if (lk == NULL)
        return NULL;
    lk->ctx = ctx;
    if (ap_env_long("LARK_REFRESH_CHECK_SECONDS", 60, 1, 86400, &lk->check_s) < 0 ||
        ap_env_long("LARK_REFRESH_BEFORE_SECONDS", 900, 0, 86400 * 30, &lk->before_s) < 0) {
        free(lk);
        return NULL;
    }
    if (id == NULL || secret == NULL)
        return lk; /* nothing to refresh: stays idle */
    lk->app_id = strdup(id);
    lk->app_secret = strdup(secret);
    lk->base_url = strdup(ap_env_str("LARK_BASE_URL", "https://open.larksuite.com"));
    const char *tf = ap_env_str("LARK_TOKEN_FILE", NULL);
    lk->token_file = tf ? strdup(tf) : NULL;
    lk->timer = evtimer_new(ctx->base, lark_on_timer, lk);
    if (lk->app_id == NULL || lk->app_secret == NULL || lk->base_url == NULL || lk->timer == NULL) {
        pl_lark_free(lk);
        return NULL;
    }
    size_t bl = strlen(lk->base_url);
    while (bl > 0 && lk->base_url[bl - 1] == '/')
        lk->base_url[--bl] = '\0';
    lark_arm(lk);
    return lk;
}

void pl_lark_free(struct pl_lark *lk)
{
    if (lk == NULL)
        return;
    if (lk->timer)
        event_free(lk->timer);
    free(lk->app_id);
    if (lk->app_secret)
        OPENSSL_cleanse(lk->app_secret, strlen(lk->app_secret));
    free(lk->app_secret);
    free(lk->base_url);
    free(lk->token_file);
    free(lk);
}
