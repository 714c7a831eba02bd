/*
 * Lark (Feishu) callbacks on /oauth/callback, the original's paths, done
 * properly: configuration from the environment only, signatures and
 * verification tokens checked, encrypted bodies decrypted, every outbound
 * call through curl multi and the refresh command through px_spawn, so the
 * loop never waits.
 *
 *   POST: [size] ─▶ [signature] ─▶ [decrypt] ─▶ [token] ─▶ challenge echo
 *                                                     ├─▶ card.action.trigger ─▶ [key or token configured?]
 *                                                     │      ─▶ once per event_id (Redis, body capped)
 *                                                     │      ├─ refresh_dashboard ─▶ LARK_REFRESH_COMMAND (15 s)
 *                                                     │      └─ other ─▶ LARK_CARD_WEBHOOK_URL (5 s), relayed
 *                                                     └─▶ {"status":"ok"}
 *   GET:  code + state (minted by /admin/lark/authorize, used once)
 *         ─▶ app_access_token ─▶ oidc/access_token ─▶ Redis (+ LARK_TOKEN_FILE) ─▶ HTML page
 *
 * Without LARK_ENCRYPT_KEY or LARK_VERIFICATION_TOKEN nothing proves that a
 * callback comes from Lark, so card actions (which run a command, call the
 * webhook and store the event) are refused; a challenge echo still works.
 */
#include "px.h"

#include "ap_env.h"
#include "ap_fetch.h"
#include "ap_file.h"
#include "ap_jscan.h"
#include "ap_json.h"
#include "ap_keys.h"
#include "ap_lark.h"
#include "ap_log.h"
#include "ap_store.h"
#include "ap_time.h"

#include <cJSON.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LARK_REFRESH_LIMIT_S 15
#define LARK_FORWARD_LIMIT_MS 5000
#define LARK_OAUTH_LIMIT_MS 10000
#define LARK_STATE_TTL_S 600
#define LARK_STREAM_MAXLEN "10000"
#define LARK_EVENT_ID_MAX 128
#define LARK_NO_AUTH_MSG \
    "card actions are refused: set LARK_VERIFICATION_TOKEN or LARK_ENCRYPT_KEY on the gateway to accept them"

struct px_lark {
    struct px_ctx *ctx;         /* borrowed */
    char *app_id;               /* owned, each */
    char *app_secret;
    char *verification_token;
    char *encrypt_key;
    char *base_url;
    char *card_webhook_url;
    char **refresh_argv;        /* owned; NULL: not configured */
    char *token_file;
    char *redirect_uri;
    long max_skew_s;
    long max_event;             /* LARK_MAX_EVENT_BYTES: largest callback stored */
};

/* One callback being answered asynchronously; freed by lark_call_done. */
struct lark_call {
    struct px_lark *l;              /* borrowed */
    struct px_hreq *req;     /* borrowed until answered */
    cJSON *body;                    /* owned: the (decrypted) callback */
    char *plain;                    /* owned: its JSON text, forwarded as is */
    char action[128];
    char code[512];                 /* GET: the authorization code */
    char app_token[1024];
    int file_failed;                /* LARK_TOKEN_FILE could not be written */
};

static void OPENSSL_cleanse_str(char *s)
{
    OPENSSL_cleanse(s, strlen(s));
}

static char *lark_env(const char *name, const char *def)
{
    const char *v = ap_env_str(name, def);
    return v ? strdup(v) : NULL;
}

struct px_lark *px_lark_new(struct px_ctx *ctx)
{
    struct px_lark *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->ctx = ctx;
    l->app_id = lark_env("LARK_APP_ID", NULL);
    l->app_secret = lark_env("LARK_APP_SECRET", NULL);
    l->verification_token = lark_env("LARK_VERIFICATION_TOKEN", NULL);
    l->encrypt_key = lark_env("LARK_ENCRYPT_KEY", NULL);
    l->base_url = lark_env("LARK_BASE_URL", "https://open.larksuite.com");
    l->card_webhook_url = lark_env("LARK_CARD_WEBHOOK_URL", NULL);
    l->token_file = lark_env("LARK_TOKEN_FILE", NULL);
    l->redirect_uri = lark_env("LARK_REDIRECT_URI", NULL);
    const char *cmd = ap_env_str("LARK_REFRESH_COMMAND", NULL);
    if (cmd != NULL)
        l->refresh_argv = ap_argv_split(cmd);
    if (ap_env_long("LARK_MAX_SKEW_SECONDS", 300, 1, 86400, &l->max_skew_s) < 0 ||
        ap_env_long("LARK_MAX_EVENT_BYTES", 16384, 1024, 1 << 20, &l->max_event) < 0 || l->base_url == NULL) {
        px_lark_free(l);
        return NULL;
    }
    if (l->encrypt_key == NULL && l->verification_token == NULL) {
        /* A deployment that uses Lark must hear it; one that does not only needs to know. */
        const char *msg = "lark: neither LARK_ENCRYPT_KEY nor LARK_VERIFICATION_TOKEN is set: "
                          "card actions on /oauth/callback are refused";
        if (l->refresh_argv != NULL || l->card_webhook_url != NULL || l->app_id != NULL)
            ap_warn(NULL, "%s", msg);
        else
            ap_info(NULL, "%s", msg);
    }
    size_t bl = strlen(l->base_url);
    while (bl > 0 && l->base_url[bl - 1] == '/')
        l->base_url[--bl] = '\0';
    return l;
}

void px_lark_free(struct px_lark *l)
{
    if (l == NULL)
        return;
    free(l->app_id);
    if (l->app_secret)
        OPENSSL_cleanse_str(l->app_secret);
    free(l->app_secret);
    free(l->verification_token);
    free(l->encrypt_key);
    free(l->base_url);
    free(l->card_webhook_url);
    ap_argv_free(l->refresh_argv);
    free(l->token_file);
    free(l->redirect_uri);
    free(l);
}

/* Every asynchronous call is counted in stats.active, so a graceful stop waits for it. */
static struct lark_call *lark_call_new(struct px_lark *l, struct px_hreq *req)
{
    struct lark_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->l = l;
    c->req = req;
    l->ctx->stats.active++;
    return c;
}

static void lark_call_done(struct lark_call *c)
{
    c->l->ctx->stats.active--;
    cJSON_Delete(c->body);
    free(c->plain);
    memset(c->app_token, 0, sizeof(c->app_token));
    free(c);
}

static void lark_reply_text(struct px_hreq *req, int status, const char *ctype, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    px_hreq_add_header(req, "Content-Type", ctype);
    if (b != NULL)
        evbuffer_add(b, text, strlen(text));
    px_hreq_send_buf(req, status, b);
    if (b != NULL)
        evbuffer_free(b);
}

static void lark_toast(struct px_hreq *req, const char *type, const char *content)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *t = cJSON_AddObjectToObject(doc, "toast");
    cJSON_AddStringToObject(t, "type", type);
    cJSON_AddStringToObject(t, "content", content);
    px_reply_json(req, 200, doc);
}

static void lark_error(struct px_hreq *req, int status, const char *msg)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "error", msg);
    px_reply_json(req, status, doc);
}

/* ---- card actions ---- */

static void lark_on_refreshed(void *arg, int ok, const char *reason)
{
    struct lark_call *c = arg;
    char msg[200];
    if (ok) {
        ap_info(NULL, "lark: dashboard refreshed");
        lark_toast(c->req, "success", "Refreshed");
    } else {
        ap_warn(NULL, "lark: refresh command failed: %s", reason);
        snprintf(msg, sizeof(msg), "Refresh failed: %s", reason);
        lark_toast(c->req, "error", msg);
    }
    lark_call_done(c);
}

static void lark_on_forwarded(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct lark_call *c = arg;
    if (status == 0) {
        char msg[200];
        ap_warn(NULL, "lark: card webhook failed: %s", err);
        snprintf(msg, sizeof(msg), "card webhook failed: %s", err);
        lark_error(c->req, 502, msg);
    } else {
        cJSON *j = cJSON_ParseWithLength(body, len);
        if (j != NULL) {
            px_reply_json(c->req, status, j);
        } else {
            cJSON *doc = cJSON_CreateObject();
            cJSON_AddNumberToObject(doc, "status", status);
            px_reply_json(c->req, status, doc);
        }
    }
    lark_call_done(c);
}

static void lark_act(struct lark_call *c)
{
    struct px_lark *l = c->l;
    if (strcmp(c->action, "refresh_dashboard") == 0) {
        if (l->refresh_argv == NULL) {
            lark_toast(c->req, "error", "Refresh failed: LARK_REFRESH_COMMAND is not set");
            lark_call_done(c);
        } else if (px_spawn_run(l->ctx->base, l->refresh_argv, LARK_REFRESH_LIMIT_S, lark_on_refreshed, c) < 0) {
            lark_toast(c->req, "error", "Refresh failed: the command cannot be started");
            lark_call_done(c);
        }
        return;
    }
    if (l->card_webhook_url == NULL) {
        lark_toast(c->req, "info", "No handler is configured for this action");
        lark_call_done(c);
        return;
    }
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    if (ap_fetch_start(l->ctx->curl, l->card_webhook_url, hdrs, c->plain, strlen(c->plain), LARK_FORWARD_LIMIT_MS,
                       lark_on_forwarded, c) == NULL) {
        lark_error(c->req, 502, "card webhook failed: cannot start the request");
        lark_call_done(c);
    }
}

static void lark_on_recorded(redisAsyncContext *ac, void *reply, void *priv)
{
    struct lark_call *c = priv;
    redisReply *rep = reply;
    (void)ac;
    if (!ap_reply_ok(rep)) {
        lark_error(c->req, 503, "cannot record the event right now; retry");
        lark_call_done(c);
    } else if (rep->integer == 0) {
        /* Lark redelivers when an answer was late: acted on once, across replicas. */
        lark_toast(c->req, "info", "Already handled");
        lark_call_done(c);
    } else {
        lark_act(c);
    }
}

static void lark_card(struct px_lark *l, struct px_hreq *req, cJSON *body, const struct ap_lark_event *ev)
{
    if (l->encrypt_key == NULL && l->verification_token == NULL) {
        cJSON_Delete(body);
        ap_warn(NULL, "lark: card action refused: no LARK_ENCRYPT_KEY or LARK_VERIFICATION_TOKEN to check it against");
        lark_error(req, 403, LARK_NO_AUTH_MSG);
        return;
    }
    if (ev->event_id != NULL && strlen(ev->event_id) > LARK_EVENT_ID_MAX) {
        cJSON_Delete(body);
        lark_error(req, 400, "event_id too long");
        return;
    }
    char *plain = cJSON_PrintUnformatted(body);
    if (plain != NULL && strlen(plain) > (size_t)l->max_event) {
        ap_warn(NULL, "lark: card action of %zu bytes refused (LARK_MAX_EVENT_BYTES=%ld)", strlen(plain), l->max_event);
        cJSON_free(plain);
        cJSON_Delete(body);
        lark_error(req, 413, "callback too large (LARK_MAX_EVENT_BYTES)");
        return;
    }
    struct lark_call *c = plain ? lark_call_new(l, req) : NULL;
    if (c == NULL) {
        cJSON_free(plain);
        cJSON_Delete(body);
        lark_error(req, 500, "out of memory");
        return;
    }
    c->body = body;
    c->plain = plain;
    snprintf(c->action, sizeof(c->action), "%s", ev->action ? ev->action : "");
    ap_info(NULL, "lark: card action \"%s\" (event %s)", c->action, ev->event_id ? ev->event_id : "-");

    char seen[256], stream[128];
    ap_store_key(seen, sizeof(seen), "lark:event:%s", ev->event_id ? ev->event_id : "");
    ap_store_key(stream, sizeof(stream), "lark:cards");
    const char *argv[] = {"EVAL", ap_script_lark_record, "0", ev->event_id ? seen : "", stream, LARK_STREAM_MAXLEN,
                          ev->event_id ? ev->event_id : "", ev->event_type ? ev->event_type : "", c->action, plain};
    if (ap_redis_argv(l->ctx->redis, lark_on_recorded, c, 10, argv, NULL) < 0) {
        lark_error(req, 503, "cannot record the event right now; retry");
        lark_call_done(c);
    }
}

/* ---- POST /oauth/callback ---- */

static int lark_secret_equal(const char *a, const char *b)
{
    return a != NULL && b != NULL && ap_secret_equal(a, b);
}

static void lark_post(struct px_lark *l, struct px_hreq *req)
{
    size_t len;
    const char *raw = px_hreq_body(req, &len);
    const char *ts = px_hreq_header(req, "X-Lark-Request-Timestamp");
    const char *nonce = px_hreq_header(req, "X-Lark-Request-Nonce");
    const char *sig = px_hreq_header(req, "X-Lark-Signature");
    int signed_ok = 0;
    const char *err = NULL;

    /* Encrypted: base64 (4/3) of the padded plaintext, in a small JSON envelope. */
    if (len > (size_t)l->max_event * 2 + 1024) {
        lark_error(req, 413, "callback too large (LARK_MAX_EVENT_BYTES)");
        return;
    }
    if (l->encrypt_key != NULL && (ts || nonce || sig)) {
        if (!ap_lark_signature_ok(ts, nonce, l->encrypt_key, raw, len, sig)) {
            ap_warn(NULL, "lark: callback with a bad signature refused");
            lark_error(req, 401, "invalid signature");
            return;
        }
        long long t = atoll(ts);
        long long now = (long long)(ap_now_ms() / 1000);
        if (t <= 0 || llabs(now - t) > l->max_skew_s) {
            ap_warn(NULL, "lark: callback with a stale timestamp refused (replay?)");
            lark_error(req, 401, "stale timestamp");
            return;
        }
        signed_ok = 1;
    }
    cJSON *body = ap_json_parse_client(raw, len, &err);
    if (!cJSON_IsObject(body)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "body must be a JSON object%s%s", err ? ": " : "", err ? err : "");
        cJSON_Delete(body);
        lark_error(req, 400, msg);
        return;
    }
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(body, "encrypt");
    if (cJSON_IsString(enc)) {
        if (l->encrypt_key == NULL) {
            cJSON_Delete(body);
            lark_error(req, 400, "encrypted callback but LARK_ENCRYPT_KEY is not set");
            return;
        }
        size_t pl;
        char *plain = ap_lark_decrypt(l->encrypt_key, enc->valuestring, &pl);
        cJSON_Delete(body);
        body = NULL;
        /*
         * Garbage that decrypts (wrong key, 1 in 256) is no JSON: a failed
         * decryption too. JSON refused for what it says (a duplicate) is a 400.
         */
        int refused = 0;
        if (plain != NULL) {
            body = ap_json_parse_client(plain, pl, &err);
            refused = body == NULL && err != NULL && strcmp(err, ap_jscan_strerror(AP_JSCAN_INVALID)) != 0;
        }
        free(plain);
        if (!cJSON_IsObject(body)) {
            cJSON_Delete(body);
            lark_error(req, refused ? 400 : 401, refused ? err : "cannot decrypt the callback");
            return;
        }
    }
    struct ap_lark_event ev;
    ap_lark_classify(body, &ev);
    if (l->verification_token != NULL && !lark_secret_equal(ev.token, l->verification_token)) {
        cJSON_Delete(body);
        ap_warn(NULL, "lark: callback with a wrong verification token refused");
        lark_error(req, 401, "invalid verification token");
        return;
    }
    if (ev.kind == AP_LARK_CHALLENGE) {
        /* Echoing the challenge acts on nothing, so it needs no signature. */
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "challenge", ev.challenge);
        cJSON_Delete(body);
        px_reply_json(req, 200, doc);
        return;
    }
    if (l->encrypt_key != NULL && !signed_ok) {
        cJSON_Delete(body);
        lark_error(req, 401, "signature required");
        return;
    }
    if (ev.kind == AP_LARK_CARD_ACTION) {
        lark_card(l, req, body, &ev); /* takes body */
        return;
    }
    cJSON_Delete(body);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "status", "ok");
    px_reply_json(req, 200, doc);
}

/* ---- GET /oauth/callback: the OAuth code exchange ---- */

static void lark_page(struct px_hreq *req, int status, const char *msg, const char *detail)
{
    char *esc = ap_html_escape(detail ? detail : "");
    char *page = NULL;
    if (asprintf(&page,
                 "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lark authorization</title></head>"
                 "<body><p>%s</p>%s%s%s</body></html>\n",
                 msg, esc && esc[0] ? "<pre>" : "", esc ? esc : "", esc && esc[0] ? "</pre>" : "") < 0)
        page = NULL;
    lark_reply_text(req, status, "text/html; charset=utf-8", page ? page : "error");
    free(page);
    free(esc);
}

/* Redis answered the token's EVAL (NULL reply: not sent, or Redis went away). */
static void lark_on_stored(redisAsyncContext *ac, void *reply, void *priv)
{
    struct lark_call *c = priv;
    (void)ac;
    if (ap_reply_ok(reply) && !c->file_failed) {
        ap_info(NULL, "lark: user access token stored");
        lark_page(c->req, 200,
                  "&#9989; Authorization successful! Calendar access has been granted. You can close this page now.",
                  NULL);
    } else {
        lark_page(c->req, 503, "&#10060; Authorization failed:", "the token could not be stored");
    }
    lark_call_done(c);
}

static void lark_on_user_token(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct lark_call *c = arg;
    struct px_lark *l = c->l;
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (status != 200 || !cJSON_IsNumber(code) || code->valuedouble != 0 || !cJSON_IsObject(data)) {
        ap_warn(NULL, "lark: code exchange failed (HTTP %d)", status);
        lark_page(c->req, 502, "&#10060; Authorization failed:", status ? body : err);
        cJSON_Delete(j);
        lark_call_done(c);
        return;
    }
    char *text = ap_lark_token_record(data, ap_now_ms());
    char key[128], channel[128];
    ap_store_key(key, sizeof(key), "lark:user_token");
    ap_store_key(channel, sizeof(channel), "events");
    /* A few hundred bytes once per authorization: written in place, atomically, mode 0600. */
    if (text != NULL && l->token_file != NULL && ap_file_write_atomic(l->token_file, text, 0600) < 0) {
        ap_error(NULL, "lark: cannot write LARK_TOKEN_FILE: %s", strerror(errno));
        c->file_failed = 1;
    }
    /* The event wakes the active poller: a token stored already due is refreshed at once. The page
     * waits for Redis' answer: "successful" means every replica and the poller can read the token. */
    const char *argv[] = {"EVAL", ap_script_set_publish, "0", key, text, channel, "{\"type\":\"lark_token\"}"};
    int queued = text != NULL && ap_redis_argv(l->ctx->redis, lark_on_stored, c, 7, argv, NULL) == 0;
    if (text != NULL)
        OPENSSL_cleanse_str(text);
    cJSON_free(text);
    cJSON_Delete(j);
    if (!queued)
        lark_on_stored(NULL, NULL, c);
}

static void lark_on_app_token(void *arg, int status, const char *body, size_t len, const char *err)
{
    struct lark_call *c = arg;
    struct px_lark *l = c->l;
    if (status != 200 || ap_lark_app_token_header(body, len, c->app_token, sizeof(c->app_token)) < 0) {
        ap_warn(NULL, "lark: app_access_token failed (HTTP %d)", status);
        lark_page(c->req, 502, "&#10060; Authorization failed:", status ? body : err);
        lark_call_done(c);
        return;
    }
    char url[1200];
    snprintf(url, sizeof(url), "%s/open-apis/authen/v1/oidc/access_token", l->base_url);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "grant_type", "authorization_code");
    cJSON_AddStringToObject(req, "code", c->code);
    char *payload = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    const char *hdrs[] = {"Content-Type: application/json; charset=utf-8", c->app_token, NULL};
    if (payload == NULL || ap_fetch_start(l->ctx->curl, url, hdrs, payload, strlen(payload), LARK_OAUTH_LIMIT_MS,
                                          lark_on_user_token, c) == NULL) {
        lark_page(c->req, 500, "&#10060; Authorization failed:", "cannot reach Lark");
        lark_call_done(c);
    }
    cJSON_free(payload);
}

static void lark_on_state(redisAsyncContext *ac, void *reply, void *priv)
{
    struct lark_call *c = priv;
    struct px_lark *l = c->l;
    redisReply *rep = reply;
    (void)ac;
    if (!ap_reply_ok(rep)) {
        lark_page(c->req, 503, "&#10060; Authorization failed:", "storage unavailable; try again");
        lark_call_done(c);
        return;
    }
    if (rep->type != REDIS_REPLY_STRING) {
        ap_warn(NULL, "lark: OAuth callback with an unknown or used state refused");
        lark_page(c->req, 400, "&#10060; Authorization failed:", "invalid or expired state; start the authorization again");
        lark_call_done(c);
        return;
    }
    char url[1200];
    snprintf(url, sizeof(url), "%s/open-apis/auth/v3/app_access_token/internal", l->base_url);
    char *payload = ap_lark_app_token_request(l->app_id, l->app_secret);
    const char *hdrs[] = {"Content-Type: application/json; charset=utf-8", NULL};
    if (payload == NULL || ap_fetch_start(l->ctx->curl, url, hdrs, payload, strlen(payload), LARK_OAUTH_LIMIT_MS,
                                          lark_on_app_token, c) == NULL) {
        lark_page(c->req, 500, "&#10060; Authorization failed:", "cannot reach Lark");
        lark_call_done(c);
    }
    if (payload)
        OPENSSL_cleanse_str(payload);
    cJSON_free(payload);
}

static void lark_get(struct px_lark *l, struct px_hreq *req)
{
    struct evkeyvalq q = {0};
    const char *query = px_hreq_query(req);
    if (query == NULL || evhttp_parse_query_str(query, &q) < 0 || evhttp_find_header(&q, "code") == NULL) {
        evhttp_clear_headers(&q);
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "status", "ok");
        px_reply_json(req, 200, doc);
        return;
    }
    const char *code = evhttp_find_header(&q, "code");
    const char *state = evhttp_find_header(&q, "state");
    if (l->app_id == NULL || l->app_secret == NULL) {
        evhttp_clear_headers(&q);
        lark_page(req, 503, "&#10060; Authorization failed:",
                  "the Lark app is not configured on this gateway (set LARK_APP_ID and LARK_APP_SECRET)");
        return;
    }
    if (state == NULL || state[0] == '\0' || strlen(state) > 128 || strlen(code) >= sizeof(((struct lark_call *)0)->code)) {
        evhttp_clear_headers(&q);
        lark_page(req, 400, "&#10060; Authorization failed:", "missing or invalid state; start the authorization again");
        return;
    }
    struct lark_call *c = lark_call_new(l, req);
    if (c == NULL) {
        evhttp_clear_headers(&q);
        lark_page(req, 500, "&#10060; Authorization failed:", "out of memory");
        return;
    }
    snprintf(c->code, sizeof(c->code), "%s", code);
    char key[256];
    ap_store_key(key, sizeof(key), "lark:state:%s", state);
    evhttp_clear_headers(&q);
    /* GETDEL: a state works once. */
    if (ap_redis_cmd(l->ctx->redis, lark_on_state, c, "GETDEL %s", key) < 0) {
        lark_page(req, 503, "&#10060; Authorization failed:", "storage unavailable; try again");
        lark_call_done(c);
    }
}

void px_lark_handle(struct px_ctx *ctx, struct px_hreq *req)
{
    enum px_method m = px_hreq_method(req);
    if (ctx->lark == NULL) {
        lark_error(req, 503, "Lark callbacks are not available");
    } else if (m == PX_POST) {
        lark_post(ctx->lark, req);
    } else if (m == PX_GET) {
        lark_get(ctx->lark, req);
    } else {
        lark_error(req, 405, "use GET or POST");
    }
}

/* ---- GET /admin/lark/authorize ---- */

static void lark_on_state_saved(redisAsyncContext *ac, void *reply, void *priv)
{
    struct lark_call *c = priv;
    redisReply *rep = reply;
    (void)ac;
    if (!ap_reply_ok(rep)) {
        px_reply_error(c->req, PX_FMT_ADMIN, 503, "Redis is unavailable; try again shortly");
    } else {
        px_reply_json(c->req, 200, c->body);
        c->body = NULL;
    }
    lark_call_done(c);
}

void px_lark_authorize(struct px_ctx *ctx, struct px_hreq *req)
{
    struct px_lark *l = ctx->lark;
    struct evkeyvalq q = {0};
    const char *query = px_hreq_query(req);
    if (query != NULL)
        evhttp_parse_query_str(query, &q);
    const char *redirect = evhttp_find_header(&q, "redirect_uri");
    if (redirect == NULL)
        redirect = l ? l->redirect_uri : NULL;
    if (l == NULL || l->app_id == NULL || l->app_secret == NULL) {
        evhttp_clear_headers(&q);
        px_reply_error(req, PX_FMT_ADMIN, 503, "Lark app not configured: set LARK_APP_ID and LARK_APP_SECRET");
        return;
    }
    if (redirect == NULL) {
        evhttp_clear_headers(&q);
        px_reply_error(req, PX_FMT_ADMIN, 400, "set LARK_REDIRECT_URI or pass ?redirect_uri=");
        return;
    }
    char state[33], key[256], *url = NULL;
    char *enc_redirect = evhttp_uriencode(redirect, -1, 0);
    if (ap_random_hex(state, 16) < 0 || enc_redirect == NULL ||
        asprintf(&url, "%s/open-apis/authen/v1/authorize?app_id=%s&redirect_uri=%s&state=%s", l->base_url, l->app_id,
                 enc_redirect, state) < 0) {
        evhttp_clear_headers(&q);
        free(enc_redirect);
        px_reply_error(req, PX_FMT_ADMIN, 500, "cannot build the authorization URL");
        return;
    }
    evhttp_clear_headers(&q);
    free(enc_redirect);
    struct lark_call *c = lark_call_new(l, req);
    if (c == NULL) {
        free(url);
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        return;
    }
    c->body = cJSON_CreateObject();
    cJSON_AddStringToObject(c->body, "url", url);
    cJSON_AddStringToObject(c->body, "state", state);
    cJSON_AddNumberToObject(c->body, "expires_in", LARK_STATE_TTL_S);
    free(url);
    ap_store_key(key, sizeof(key), "lark:state:%s", state);
    if (ap_redis_cmd(ctx->redis, lark_on_state_saved, c, "SET %s 1 EX %d", key, LARK_STATE_TTL_S) < 0) {
        px_reply_error(req, PX_FMT_ADMIN, 503, "Redis is unavailable; try again shortly");
        lark_call_done(c);
    }
}
