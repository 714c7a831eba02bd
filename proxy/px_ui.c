/*
 * The admin console's static files (GET /ui/...), answered from the binary.
 * The files hold no data and need no key: the page signs in with the admin
 * key and calls the admin API itself. Every answer carries a strict
 * Content-Security-Policy (scripts, styles and connections from this origin
 * only, no inline code, no innerHTML-style sinks through Trusted Types), so
 * even a key name crafted as markup can never run.
 */
#include "px.h"
#include "px_ui.h"

#include <event2/buffer.h>
#include <event2/http.h>

static const char ui_csp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'";

static void ui_headers(struct evkeyvalq *h)
{
    evhttp_add_header(h, "Content-Security-Policy", ui_csp);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
    evhttp_add_header(h, "Cross-Origin-Resource-Policy", "same-origin");
}

void px_ui_handle(struct px_ctx *ctx, struct evhttp_request *req, const char *path)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    struct px_ui_route r;
    (void)ctx;
    ui_headers(h);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(h, "Allow", "GET, HEAD");
        px_reply_error(req, PX_FMT_ADMIN, 405, "the console is read with GET");
        return;
    }
    px_ui_resolve(&px_ui_assets, path, &r);
    if (r.status == 404) {
        px_reply_error(req, PX_FMT_ADMIN, 404, "not found");
        return;
    }
    if (r.status != 200) {
        evhttp_add_header(h, "Location", r.location);
        evhttp_add_header(h, "Cache-Control", "no-cache");
        evhttp_send_reply(req, r.status, r.status == 301 ? "Moved Permanently" : "Found", NULL);
        return;
    }
    evhttp_add_header(h, "ETag", r.file->etag);
    evhttp_add_header(h, "Cache-Control",
                      r.cache == PX_UI_IMMUTABLE ? "public, max-age=31536000, immutable" : "no-cache");
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
    if (px_ui_etag_matches(inm, r.file->etag)) {
        evhttp_send_reply(req, 304, "Not Modified", NULL);
        return;
    }
    evhttp_remove_header(h, "Content-Type");
    evhttp_add_header(h, "Content-Type", r.file->type);
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        px_reply_error(req, PX_FMT_ADMIN, 500, "out of memory");
        return;
    }
    /* The bytes live in the binary: referenced, not copied. */
    evbuffer_add_reference(b, r.file->data, r.file->len, NULL, NULL);
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}
