/*
 * Routing: which handler answers a request, by its decoded path.
 *
 *   /health, /metrics              px_health, px_metrics (no key)
 *   /admin, /admin/...             px_admin (admin key)
 *   /v1/messages                   px_request (Anthropic Messages)
 *   /v1/chat/completions           px_request (OpenAI Chat Completions)
 *   other /v1/...                  px_request pass-through, only what PASSTHROUGH allows
 *   /oauth/callback                px_lark
 *   /, /ui, /ui/...                px_ui (the admin console's files)
 *
 * Anything else under /v1/ is a 404 in the endpoint's error format: the
 * upstream account is shared, so what is not allowed is not forwarded.
 */
#include "px.h"

#include <string.h>

void px_router_dispatch(struct px_ctx *ctx, struct px_hreq *h)
{
    const char *path = px_hreq_path(h);
    enum px_fmt fmt = px_fmt_for_path(path);

    if (ctx->draining)
        px_hreq_close_after(h);
    if (strcmp(path, "/health") == 0) {
        px_health_handle(ctx, h);
    } else if (strcmp(path, "/metrics") == 0) {
        px_metrics_handle(ctx, h);
    } else if (strcmp(path, "/admin") == 0 || strncmp(path, "/admin/", 7) == 0) {
        px_admin_handle(ctx, h, path);
    } else if (strcmp(path, "/v1/messages") == 0) {
        px_request_handle(ctx, h, PX_ROUTE_MESSAGES);
    } else if (strcmp(path, "/v1/chat/completions") == 0) {
        px_request_handle(ctx, h, PX_ROUTE_CHAT);
    } else if (strncmp(path, "/v1/", 4) == 0) {
        if (px_allow_match(ctx->cfg.passthrough, px_hreq_method_name(h), path))
            px_request_handle(ctx, h, PX_ROUTE_PASS);
        else
            px_reply_error(h, fmt, 404, "not found (this path does not pass through; see PASSTHROUGH)");
    } else if (strcmp(path, "/oauth/callback") == 0) {
        px_lark_handle(ctx, h);
    } else if (px_ui_owns(path)) {
        px_ui_handle(ctx, h, path);
    } else {
        px_reply_error(h, fmt, 404, "not found");
    }
}
