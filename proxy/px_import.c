/*
 * keys.json imports: the one runner, and KEYS_FILE at startup.
 *
 * A run sends one EVAL per key (ap_script_import_key, idempotent per key hash,
 * so a partial run followed by a retry, or several replicas importing the same
 * file, count everything exactly once) and owns a pending counter: the run
 * (and through `done` the caller's state) is released after the last reply,
 * never at the first error while others are still on their way.
 *
 *   px_import_send ─▶ EVAL × n ─▶ import_on_reply × n ─▶ (pending == 0) done(res), free
 *
 * KEYS_FILE: the file is parsed once; a run is started each time Redis comes
 * up until one is complete. POST /admin/import (px_admin.c) runs the body it
 * was sent and answers from the result.
 */
#include "px.h"

#include "ap_delta.h"
#include "ap_import.h"
#include "ap_log.h"

#include <stdio.h>
#include <stdlib.h>

struct import_run {
    void (*done)(void *arg, const struct px_import_result *res);
    void *arg;
    size_t pending;              /* replies still to come */
    unsigned sending:1;          /* still in px_import_send: done must wait for its end */
    struct px_import_result res;
};

static void import_run_end(struct import_run *run)
{
    run->done(run->arg, &run->res);
    free(run);
}

static void import_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct import_run *run = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep == NULL) {
        run->res.lost++;
    } else if (rep->type == REDIS_REPLY_ERROR) {
        if (run->res.refused++ == 0)
            snprintf(run->res.error, sizeof(run->res.error), "%s", rep->str ? rep->str : "error");
    } else if (rep->integer == 1) {
        run->res.imported++;
    } else if (rep->integer == -1) {
        run->res.id_taken++;
    } else {
        run->res.present++;
    }
    if (--run->pending == 0 && !run->sending)
        import_run_end(run);
}

int px_import_send(struct px_ctx *ctx, const struct ap_import *data,
                   void (*done)(void *arg, const struct px_import_result *res), void *arg)
{
    struct import_run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        return -1;
    run->done = done;
    run->arg = arg;
    run->res.keys = data->ncmds;
    run->sending = 1;
    for (size_t i = 0; i < data->ncmds; i++) {
        const struct ap_batch *b = data->cmds[i];
        if (ap_redis_argv(ctx->redis, import_on_reply, run, b->argc, (const char **)b->argv, b->lens) < 0) {
            run->res.unsent = data->ncmds - i; /* not up: the rest waits for the next run */
            break;
        }
        run->pending++;
    }
    run->sending = 0;
    if (run->pending == 0)
        import_run_end(run);
    return 0;
}

/* ---- KEYS_FILE ---- */

struct px_import {
    struct px_ctx *ctx;         /* borrowed */
    struct ap_import data;      /* owned */
    unsigned done:1;            /* a run was complete */
    unsigned running:1;         /* a run is in flight */
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

static void import_file_done(void *arg, const struct px_import_result *res)
{
    struct px_import *im = arg;
    im->running = 0;
    if (res->refused + res->lost + res->unsent == 0) {
        im->done = 1;
        ap_info(NULL, "KEYS_FILE: import complete (%zu keys newly imported, %zu already present, %zu with an id taken "
                "by another key)", res->imported, res->present, res->id_taken);
        return;
    }
    ap_error(NULL, "KEYS_FILE: %zu of %zu keys not imported (%zu refused%s%s, %zu lost, %zu unsent); "
                   "retried when Redis comes back",
             res->refused + res->lost + res->unsent, res->keys, res->refused, res->error[0] ? ": " : "", res->error,
             res->lost, res->unsent);
}

void px_import_run(struct px_import *im)
{
    if (im->done || im->running)
        return;
    if (im->data.ncmds == 0) {
        im->done = 1;
        return;
    }
    im->running = 1;
    if (px_import_send(im->ctx, &im->data, import_file_done, im) < 0)
        im->running = 0;
}

void px_import_free(struct px_import *im)
{
    if (im == NULL)
        return;
    ap_import_free(&im->data);
    free(im);
}
