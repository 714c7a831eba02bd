/*
 * KEYS_FILE import at startup. The file is parsed once; the commands are sent
 * each time Redis comes up until one full run is acknowledged. Each command is
 * idempotent (ap_script_import_key), so a partial run followed by a retry, or
 * several replicas importing the same file, count everything exactly once.
 */
#include "px.h"

#include "ap_delta.h"
#include "ap_import.h"
#include "ap_log.h"

#include <stdlib.h>

struct px_import {
    struct px_ctx *ctx;         /* borrowed */
    struct ap_import data;      /* owned */
    size_t waiting;             /* replies outstanding in the current run */
    size_t imported, failed;
    unsigned done:1;
    unsigned running:1;
};

struct px_import *px_import_new(struct px_ctx *ctx, const char *path, int *failed)
{
    char err[512];
    struct px_import *im = calloc(1, sizeof(*im));
    *failed = 1;
    if (im == NULL)
        return NULL;
    im->ctx = ctx;
    if (ap_import_file(path, &im->data, err, sizeof(err)) < 0) {
        ap_error(NULL, "KEYS_FILE: %s", err);
        free(im);
        return NULL;
    }
    *failed = 0;
    ap_info(NULL, "KEYS_FILE: %zu keys to import (%zu entries skipped)", im->data.ncmds, im->data.skipped);
    return im;
}

const char *px_import_admin_key(const struct px_import *im)
{
    return im ? im->data.admin_key : NULL;
}

static void import_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_import *im = priv;
    redisReply *rep = reply;
    (void)ac;
    if (!ap_reply_ok(rep)) {
        im->failed++;
        if (rep != NULL)
            ap_error(NULL, "KEYS_FILE: import command refused: %s", rep->str);
    } else if (rep->integer == 1) {
        im->imported++;
    }
    if (--im->waiting > 0)
        return;
    im->running = 0;
    if (im->failed == 0) {
        im->done = 1;
        ap_info(NULL, "KEYS_FILE: import complete (%zu keys newly imported, %zu already present)",
                im->imported, im->data.ncmds - im->imported);
    }
}

void px_import_run(struct px_import *im)
{
    if (im->done || im->running)
        return;
    im->failed = 0;
    im->imported = 0;
    for (size_t i = 0; i < im->data.ncmds; i++) {
        struct ap_batch *b = im->data.cmds[i];
        if (ap_redis_argv(im->ctx->redis, import_on_reply, im, b->argc, (const char **)b->argv, b->lens) < 0) {
            im->failed++; /* not all sent: this run cannot complete the import */
            break;
        }
        im->waiting++;
    }
    if (im->waiting > 0)
        im->running = 1;
    else if (im->data.ncmds == 0)
        im->done = 1;
}

void px_import_free(struct px_import *im)
{
    if (im == NULL)
        return;
    ap_import_free(&im->data);
    free(im);
}
