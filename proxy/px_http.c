/*
 * The HTTP front: evhttp setup, routing, request framing checks, and the
 * reply helpers every endpoint uses (JSON bodies, error formats).
 *
 * evhttp only matches exact paths, so one generic callback routes by prefix.
 * Framing that two parsers could read differently (Content-Length with
 * Transfer-Encoding, differing duplicate lengths) is refused with
 * "Connection: close", so no second request is ever read from such a
 * connection.
 */
#include "px.h"

#include "ap_keys.h"
#include "ap_log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <cJSON.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* ---- replies ---- */

const char *px_error_type(enum px_fmt fmt, int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return fmt == PX_FMT_OPENAI ? "invalid_request_error" : "authentication_error";
    case 403: return "permission_error";
    case 404: return fmt == PX_FMT_OPENAI ? "invalid_request_error" : "not_found_error";
    case 413: return fmt == PX_FMT_OPENAI ? "invalid_request_error" : "request_too_large";
    case 429: return fmt == PX_FMT_OPENAI ? "rate_limit_error" : "rate_limit_error";
    case 503: return fmt == PX_FMT_OPENAI ? "server_error" : "overloaded_error";
    case 529: return fmt == PX_FMT_OPENAI ? "server_error" : "overloaded_error";
    default: return status >= 500 ? (fmt == PX_FMT_OPENAI ? "server_error" : "api_error") : "invalid_request_error";
    }
}

cJSON *px_error_doc(enum px_fmt fmt, int status, const char *message)
{
    cJSON *doc = cJSON_CreateObject();
    if (fmt == PX_FMT_ADMIN) {
        cJSON_AddStringToObject(doc, "detail", message);
    } else if (fmt == PX_FMT_OPENAI) {
        cJSON *e = cJSON_AddObjectToObject(doc, "error");
        cJSON_AddStringToObject(e, "message", message);
        cJSON_AddStringToObject(e, "type", px_error_type(fmt, status));
        if (status == 401)
            cJSON_AddStringToObject(e, "code", "invalid_api_key");
        else
            cJSON_AddNullToObject(e, "code");
    } else {
        cJSON_AddStringToObject(doc, "type", "error");
        cJSON *e = cJSON_AddObjectToObject(doc, "error");
        cJSON_AddStringToObject(e, "type", px_error_type(fmt, status));
        cJSON_AddStringToObject(e, "message", message);
    }
    return doc;
}

void px_reply_raw_json(struct evhttp_request *req, int status, const char *json, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_remove_header(h, "Content-Type");
    evhttp_add_header(h, "Content-Type", "application/json");
    if (b != NULL)
        evbuffer_add(b, json, len);
    evhttp_send_reply(req, status, NULL, b);
    if (b != NULL)
        evbuffer_free(b);
}

void px_reply_json(struct evhttp_request *req, int status, cJSON *doc)
{
    char *s = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (s == NULL) {
        static const char oom[] = "{\"detail\":\"out of memory\"}";
        px_reply_raw_json(req, 500, oom, sizeof(oom) - 1);
        return;
    }
    px_reply_raw_json(req, status, s, strlen(s));
    cJSON_free(s);
}

void px_reply_error(struct evhttp_request *req, enum px_fmt fmt, int status, const char *message)
{
    px_reply_json(req, status, px_error_doc(fmt, status, message));
}

/* ---- request helpers ---- */

const char *px_request_key(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *k = evhttp_find_header(h, "x-api-key");
    if (k != NULL && k[0] != '\0')
        return k;
    const char *a = evhttp_find_header(h, "Authorization");
    if (a != NULL && strncasecmp(a, "Bearer ", 7) == 0) {
        a += 7;
        while (*a == ' ')
            a++;
        return a[0] != '\0' ? a : NULL;
    }
    return NULL;
}

void px_request_id(struct evhttp_request *req, char *out)
{
    const char *c = evhttp_find_header(evhttp_request_get_input_headers(req), "x-request-id");
    size_t n = c ? strlen(c) : 0;
    int sane = n >= 8 && n <= 32;
    for (size_t i = 0; sane && i < n; i++)
        sane = isalnum((unsigned char)c[i]) || c[i] == '-' || c[i] == '_';
    if (sane) {
        memcpy(out, c, n + 1);
        return;
    }
    /* Ids need uniqueness, not secrecy: a PRNG seeded once from the CSPRNG is enough
     * and spares the CSPRNG (and its fork checks) on every request. */
    static uint64_t state;
    if (state == 0 && (ap_random_bytes(&state, sizeof(state)) < 0 || state == 0))
        state = (uint64_t)(uintptr_t)req ^ 0x9e3779b97f4a7c15ULL;
    uint64_t a = ap_splitmix64(&state), b = ap_splitmix64(&state);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

/*
 * Logs must never carry a key: admin paths embed one (/admin/keys/<key>/...),
 * and a confused client may put one anywhere. Segments that are not short
 * plain words are masked; the query string is dropped.
 */
void px_log_path(const char *uri, char *out, size_t n)
{
    size_t o = 0;
    const char *p = uri;
    while (*p != '\0' && *p != '?' && o + 1 < n) {
        if (*p == '/') {
            out[o++] = *p++;
            continue;
        }
        const char *e = p;
        while (*e != '\0' && *e != '/' && *e != '?')
            e++;
        size_t len = (size_t)(e - p);
        int plain = len <= 24 && strncmp(p, "sk-", 3) != 0;
        if (plain && o + len + 1 < n) {
            memcpy(out + o, p, len);
            o += len;
        } else if (!plain) {
            char seg[256], masked[AP_MASK_LEN];
            size_t sl = len < sizeof(seg) - 1 ? len : sizeof(seg) - 1;
            memcpy(seg, p, sl);
            seg[sl] = '\0';
            ap_key_mask(seg, masked, sizeof(masked));
            size_t ml = strlen(masked);
            if (o + ml + 1 < n) {
                memcpy(out + o, masked, ml);
                o += ml;
            }
        }
        p = e;
    }
    out[o] = '\0';
}

/* ---- framing ---- */

/* Returns a reason when the framing is ambiguous, else NULL. */
static const char *http_framing_problem(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *te = NULL, *cl = NULL;
    int nte = 0;
    for (struct evkeyval *kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "Transfer-Encoding") == 0) {
            te = kv->value;
            nte++;
        } else if (strcasecmp(kv->key, "Content-Length") == 0) {
            if (cl != NULL && strcmp(cl, kv->value) != 0)
                return "conflicting Content-Length headers";
            cl = kv->value;
        }
    }
    if (te != NULL && cl != NULL)
        return "Content-Length together with Transfer-Encoding";
    if (nte > 1 || (te != NULL && strcasecmp(te, "chunked") != 0))
        return "unsupported Transfer-Encoding";
    return NULL;
}

/* Dot segments would let curl normalise /v1/../x into an upstream path outside /v1. */
static int http_path_has_dots(const char *path)
{
    for (const char *p = path; (p = strstr(p, "/.")) != NULL; p++) {
        if (p[2] == '\0' || p[2] == '/' || (p[2] == '.' && (p[3] == '\0' || p[3] == '/')))
            return 1;
        if (strncasecmp(p + 2, "%2e", 3) == 0 || strncasecmp(p + 1, "%2e", 3) == 0)
            return 1;
    }
    return strcasestr(path, "/%2e") != NULL;
}

static enum px_fmt http_fmt_for(const char *path)
{
    if (strncmp(path, "/v1/chat/completions", 20) == 0)
        return PX_FMT_OPENAI;
    if (strncmp(path, "/v1/", 4) == 0)
        return PX_FMT_ANTHROPIC;
    return PX_FMT_ADMIN;
}

static void http_close_after(struct evhttp_request *req)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
}

static void http_on_request(struct evhttp_request *req, void *arg)
{
    struct px_ctx *ctx = arg;
    px_conn_request_read(req);
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    if (path == NULL || path[0] != '/') {
        http_close_after(req);
        px_reply_error(req, PX_FMT_ADMIN, 400, "malformed request target");
        return;
    }
    enum px_fmt fmt = http_fmt_for(path);
    const char *bad = http_framing_problem(req);
    if (bad != NULL) {
        http_close_after(req);
        px_reply_error(req, fmt, 400, bad);
        return;
    }
    if ((long)evbuffer_get_length(evhttp_request_get_input_buffer(req)) > ctx->cfg.max_body) {
        http_close_after(req);
        px_reply_error(req, fmt, 413, "request body too large");
        return;
    }
    if (http_path_has_dots(path)) {
        px_reply_error(req, fmt, 400, "dot segments are not allowed in paths");
        return;
    }
    if (ctx->draining)
        http_close_after(req);

    if (strcmp(path, "/health") == 0) {
        px_health_handle(ctx, req);
    } else if (strcmp(path, "/metrics") == 0) {
        px_metrics_handle(ctx, req);
    } else if (strcmp(path, "/admin") == 0 || strncmp(path, "/admin/", 7) == 0) {
        px_admin_handle(ctx, req, path);
    } else if (strncmp(path, "/v1/", 4) == 0) {
        enum px_route route = PX_ROUTE_PASS;
        if (strcmp(path, "/v1/messages") == 0)
            route = PX_ROUTE_MESSAGES;
        else if (strcmp(path, "/v1/chat/completions") == 0)
            route = PX_ROUTE_CHAT;
        px_relay_handle(ctx, req, route);
    } else if (strcmp(path, "/oauth/callback") == 0) {
        px_lark_handle(ctx, req);
    } else if (px_ui_owns(path)) {
        px_ui_handle(ctx, req, path);
    } else {
        px_reply_error(req, fmt, 404, "not found");
    }
}

int px_http_start(struct px_ctx *ctx)
{
    const struct px_config *c = &ctx->cfg;
    ctx->http = evhttp_new(ctx->base);
    if (ctx->http == NULL)
        return -1;
    evhttp_set_gencb(ctx->http, http_on_request, ctx);
    px_conn_setup(ctx);
    evhttp_set_allowed_methods(ctx->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_default_content_type(ctx->http, "application/json");
    evhttp_set_max_headers_size(ctx->http, c->max_headers);
    /*
     * libevent answers bodies past its own limit with an HTML 413 before we
     * see them; a little slack above ours lets most oversized requests get
     * our JSON 413 instead, while bounding what one request can make us hold.
     */
    long slack = c->max_body < (1L << 20) ? c->max_body : (1L << 20);
    evhttp_set_max_body_size(ctx->http, c->max_body + slack);
    /* Read the rest of an over-long body before closing, so the client sees the 413. */
    evhttp_set_flags(ctx->http, EVHTTP_SERVER_LINGERING_CLOSE);
    struct timeval tv = {c->client_timeout, 0};
    evhttp_set_timeout_tv(ctx->http, &tv);
    ctx->listener = evhttp_bind_socket_with_handle(ctx->http, c->bind, (ev_uint16_t)c->port);
    if (ctx->listener == NULL) {
        ap_error(NULL, "cannot listen on %s:%d", c->bind, c->port);
        return -1;
    }
    /*
     * Accepted sockets inherit TCP_NODELAY from the listener on Linux. Without it
     * the last bytes of a reply (a stream's final chunk, sent apart) wait for the
     * client's delayed ACK: ~40 ms per streamed reply on a kept-alive connection.
     */
    int one = 1;
    setsockopt(evhttp_bound_socket_get_fd(ctx->listener), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int port = c->port;
    if (getsockname(evhttp_bound_socket_get_fd(ctx->listener), (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    ap_info(NULL, "listening on %s:%d", c->bind, port);
    return 0;
}

void px_http_stop_accepting(struct px_ctx *ctx)
{
    /* Live connections keep going; only new ones are refused. */
    if (ctx->listener != NULL) {
        evhttp_del_accept_socket(ctx->http, ctx->listener);
        ctx->listener = NULL;
    }
}
