/*
 * Keeps the Lark user token stored by the OAuth callback alive: when it expires
 * within LARK_REFRESH_BEFORE_SECONDS, the active poller gets an app token and
 * calls oidc/refresh_access_token, then stores the new token in Redis (and in
 * LARK_TOKEN_FILE when set), as the callback does.
 *
 * No fixed polling: the poller looks at the token when something may have
 * changed it (it became the active poller, Redis came back, a replica's callback
 * published {"type":"lark_token"}) and then when it will be due, expiry - before
 * (ap_lark_refresh_in_ms; at most an hour away, a safety net). So a token stored
 * already due is refreshed at once. A failed look or refresh is retried after
 * LARK_REFRESH_RETRY_SECONDS.
 *
 *   kick ─▶ timer(0) ─▶ GET token ─▶ not due: timer(expiry - before)
 *                                 └▶ due: app token ─▶ refresh ─▶ SET ─▶ timer(new expiry - before)
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
    long retry_s, before_s;
    struct event *timer;        /* owned */
    char refresh_token[2048];
    char auth[1100];
    unsigned busy:1;            /* a look or a refresh is in flight */
    unsigned again:1;           /* kicked while busy: look again when it ends */
};

static void lark_arm_ms(struct pl_lark *lk, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_del(lk->timer);
    evtimer_add(lk->timer, &tv);
}

/*
 * Ends a look or a refresh and arms the next one: at once when kicked meanwhile,
 * after LARK_REFRESH_RETRY_SECONDS when next_ms < 0 (it failed), else in next_ms.
 */
static void lark_done(struct pl_lark *lk, int64_t next_ms)
{
    OPENSSL_cleanse(lk->refresh_token, sizeof(lk->refresh_token));
    OPENSSL_cleanse(lk->auth, sizeof(lk->auth));
    lk->busy = 0;
    if (lk->again) {
        lk->again = 0;
        next_ms = 0;
    } else if (next_ms < 0) {
        next_ms = (int64_t)lk->retry_s * 1000;
    }
    lark_arm_ms(lk, next_ms);
}

/* Stores the refreshed token; returns when to look next (ms), or -1 (retry). */
static int64_t lark_store(struct pl_lark *lk, cJSON *data)
{
    int64_t now = ap_now_ms();
    char *text = ap_lark_token_record(data, now);
    if (text == NULL)
        return -1;
    char key[128];
    ap_store_key(key, sizeof(key), "lark:user_token");
    ap_redis_cmd(lk->ctx->redis, NULL, NULL, "SET %s %s", key, text);
    /* Tiny and rare: written in place, atomically, mode 0600. */
    if (lk->token_file != NULL && ap_file_write_atomic(lk->token_file, text, 0600) < 0)
        ap_error(NULL, "lark: cannot write LARK_TOKEN_FILE: %s", strerror(errno));
    OPENSSL_cleanse(text, strlen(text));
    cJSON_free(text);
    ap_info(NULL, "lark: user access token refreshed");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(data, "expires_at_ms");
    if (!cJSON_IsNumber(exp))
        return AP_LARK_MAX_WAIT_MS;
    int64_t next = ap_lark_refresh_in_ms((int64_t)exp->valuedouble, now, lk->before_s);
    if (next == 0) {
        /* Refreshing again at once would spin against Lark. */
        ap_warn(NULL, "lark: the new token is already due (LARK_REFRESH_BEFORE_SECONDS=%ld is not shorter "
                      "than its lifetime)", lk->before_s);
        return -1;
    }
    return next;
}

static void lark_on_refreshed(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct pl_lark *lk = arg;
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    int64_t next = -1;
    if (status == 200 && cJSON_IsNumber(code) && code->valuedouble == 0 && cJSON_IsObject(data))
        next = lark_store(lk, data);
    else
        ap_warn(NULL, "lark: token refresh failed (HTTP %d%s%s)", status, err ? ": " : "", err ? err : "");
    cJSON_Delete(j);
    lark_done(lk, next);
}

static void lark_on_app_token(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct pl_lark *lk = arg;
    if (status != 200 || ap_lark_app_token_header(body, len, lk->auth, sizeof(lk->auth)) < 0) {
        ap_warn(NULL, "lark: app_access_token failed (HTTP %d%s%s)", status, err ? ": " : "", err ? err : "");
        lark_done(lk, -1);
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
        lark_done(lk, -1);
    if (payload != NULL)
        OPENSSL_cleanse(payload, strlen(payload));
    cJSON_free(payload);
}

static void lark_on_token(redisAsyncContext *ac, void *reply, void *priv)
{
    struct pl_lark *lk = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        lark_done(lk, -1);
        return;
    }
    if (rep->type != REDIS_REPLY_STRING) {
        lark_done(lk, AP_LARK_MAX_WAIT_MS); /* none stored: the callback's event will wake us */
        return;
    }
    cJSON *j = cJSON_ParseWithLength(rep->str, rep->len);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires_at_ms");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
    if (!cJSON_IsNumber(exp) || !cJSON_IsString(rt) || strlen(rt->valuestring) >= sizeof(lk->refresh_token)) {
        ap_warn(NULL, "lark: the stored user token has no expiry or refresh token; not refreshing it");
        cJSON_Delete(j);
        lark_done(lk, AP_LARK_MAX_WAIT_MS);
        return;
    }
    int64_t in = ap_lark_refresh_in_ms((int64_t)exp->valuedouble, ap_now_ms(), lk->before_s);
    if (in > 0) {
        cJSON_Delete(j);
        lark_done(lk, in);
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
        lark_done(lk, -1);
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
    if (!lk->ctx->leader)
        return; /* becoming the active poller kicks us */
    if (lk->busy) {
        lk->again = 1;
        return;
    }
    ap_store_key(key, sizeof(key), "lark:user_token");
    if (ap_redis_cmd(lk->ctx->redis, lark_on_token, lk, "GET %s", key) == 0)
        lk->busy = 1;
    else
        lark_arm_ms(lk, (int64_t)lk->retry_s * 1000);
}

void pl_lark_kick(struct pl_lark *lk)
{
    if (lk != NULL && lk->timer != NULL)
        lark_arm_ms(lk, 0);
}

struct pl_lark *pl_lark_new(struct pl_ctx *ctx)
{
    const char *id = ap_env_str("LARK_APP_ID", NULL), *secret = ap_env_str("LARK_APP_SECRET", NULL);
    struct pl_lark *lk = calloc(1, sizeof(*lk));
    if (lk == NULL)
        return NULL;
    lk->ctx = ctx;
    if (ap_env_long("LARK_REFRESH_RETRY_SECONDS", 60, 1, 86400, &lk->retry_s) < 0 ||
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
