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


static const char ui_csp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'";

static void ui_headers(struct px_hreq *h)
{
    px_hreq_add_header(h, "Content-Security-Policy", ui_csp);
    px_hreq_add_header(h, "X-Content-Type-Options", "nosniff");
    px_hreq_add_header(h, "Referrer-Policy", "no-referrer");
    px_hreq_add_header(h, "X-Frame-Options", "DENY");
    px_hreq_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
    px_hreq_add_header(h, "Cross-Origin-Resource-Policy", "same-origin");
}

void px_ui_handle(struct px_ctx *ctx, struct px_hreq *req, const char *path)
{
    enum px_method m = px_hreq_method(req);
    struct px_ui_route r;
    (void)ctx;
    ui_headers(req);
    if (m != PX_GET && m != PX_HEAD) {
        px_hreq_add_header(req, "Allow", "GET, HEAD");
        px_reply_error(req, PX_FMT_ADMIN, 405, "the console is read with GET");
        return;
    }
    px_ui_resolve(&px_ui_assets, path, &r);
    if (r.status == 404) {
        px_reply_error(req, PX_FMT_ADMIN, 404, "not found");
        return;
    }
    if (r.status != 200) {
        px_hreq_add_header(req, "Location", r.location);
        px_hreq_add_header(req, "Cache-Control", "no-cache");
        px_hreq_send(req, r.status, NULL, 0);
        return;
    }
    px_hreq_add_header(req, "ETag", r.file->etag);
    px_hreq_add_header(req, "Cache-Control",
                       r.cache == PX_UI_IMMUTABLE ? "public, max-age=31536000, immutable" : "no-cache");
    if (px_ui_etag_matches(px_hreq_header(req, "If-None-Match"), r.file->etag)) {
        px_hreq_send(req, 304, NULL, 0);
        return;
    }
    px_hreq_add_header(req, "Content-Type", r.file->type);
    /* The bytes live in the binary: written from there. */
    px_hreq_send(req, 200, (const char *)r.file->data, r.file->len);
}
