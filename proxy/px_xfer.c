/* px_xfer: picks the transport of an exchange (see px_xfer.h). */
#include "px_xfer.h"

#include <stddef.h>

struct px_xfer *px_xfer_start(struct px_ctx *ctx, const struct px_xfer_req *req, const struct px_xfer_cbs *cbs,
                              void *arg)
{
    int unsupported = 0;
    struct px_xfer *x = px_upstream_start(ctx, req, cbs, arg, &unsupported);
    if (x == NULL && unsupported)
        x = px_xfer_curl_start(ctx, req, cbs, arg);
    return x;
}

void px_xfer_resume(struct px_xfer *x)
{
    x->ops->resume(x);
}

void px_xfer_free(struct px_xfer *x)
{
    if (x != NULL)
        x->ops->free(x);
}

void px_xfer_shutdown(struct px_ctx *ctx)
{
    px_upstream_shutdown(ctx);
    px_xfer_curl_shutdown(ctx);
}
