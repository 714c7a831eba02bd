/*
 * The stream converter object. Upstream bytes go through ap_sse, which hands
 * over whole events whatever the slicing; each event goes to the state machine
 * of its direction (ap_conv_stream_a2o.c, ap_conv_stream_o2a.c), which appends
 * client-format events to the evbuffer of the current call. Since the machines
 * only ever see whole events, the output cannot depend on the slicing.
 *
 *   bytes --> ap_sse_feed --> stream_on_event --> ap_conv_{a2o,o2a}_event --> out
 *   upstream end ---------------------------------> ap_conv_{a2o,o2a}_end  --> out
 */
#include "ap_conv_int.h"
#include "ap_json.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ap_conv_stream *ap_conv_stream_new(enum ap_fmt from, enum ap_fmt to,
                                          const struct ap_conv_stream_opts *o)
{
    if (from == to)
        return NULL;
    struct ap_conv_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->from = from;
    ap_sse_init(&s->sse, 0);
    if (o != NULL && o->model != NULL && (s->model = strdup(o->model)) == NULL) {
        ap_conv_stream_free(s);
        return NULL;
    }
    s->created = o != NULL && o->created != 0 ? o->created : (int64_t)time(NULL);
    s->client_wants_usage = o != NULL && o->client_wants_usage;
    return s;
}

void ap_conv_stream_free(struct ap_conv_stream *s)
{
    if (s == NULL)
        return;
    ap_sse_free(&s->sse);
    free(s->model);
    free(s->up_model);
    free(s->id);
    free(s->tools);
    free(s->tool_of_block);
    free(s);
}

static int stream_on_event(void *arg, const char *event, const char *data, size_t len)
{
    struct ap_conv_stream *s = arg;
    if (s->finished)
        return 0;
    return s->from == AP_FMT_OPENAI ? ap_conv_o2a_event(s, data, len)
                                    : ap_conv_a2o_event(s, event, data, len);
}

int ap_conv_stream_feed(struct ap_conv_stream *s, const char *buf, size_t len, struct evbuffer *out)
{
    if (s->broken)
        return -1;
    if (s->finished)
        return 0;
    s->out = out;
    int rc = ap_sse_feed(&s->sse, buf, len, stream_on_event, s);
    s->out = NULL;
    if (rc < 0)
        s->broken = 1;
    return rc;
}

int ap_conv_stream_end(struct ap_conv_stream *s, int upstream_ok, struct evbuffer *out)
{
    if (s->finished)
        return 0;
    const char *failure = s->broken      ? "upstream sent an invalid event stream"
                          : !upstream_ok ? "upstream connection lost mid-stream"
                                         : NULL;
    s->out = out;
    int rc = s->from == AP_FMT_OPENAI ? ap_conv_o2a_end(s, failure) : ap_conv_a2o_end(s, failure);
    s->out = NULL;
    s->finished = 1;
    return rc;
}

void ap_conv_stream_usage(const struct ap_conv_stream *s, struct ap_usage *u)
{
    *u = s->usage;
}

int ap_conv_stream_content_started(const struct ap_conv_stream *s)
{
    return s->content_started;
}

int ap_conv_stream_failed(const struct ap_conv_stream *s)
{
    return s->failed;
}

const char *ap_conv_stream_error(const struct ap_conv_stream *s)
{
    return s->failed ? s->error : "";
}

int ap_conv_stream_done(const struct ap_conv_stream *s)
{
    return s->done;
}

int ap_conv_stream_emit_text(struct ap_conv_stream *s, const char *event, const char *text)
{
    return ap_sse_write(s->out, event, text, strlen(text));
}

int ap_conv_stream_emit(struct ap_conv_stream *s, const char *event, cJSON *obj)
{
    char *text = obj ? ap_json_print_keep(obj) : NULL;
    cJSON_Delete(obj);
    if (text == NULL)
        return -1;
    int rc = ap_conv_stream_emit_text(s, event, text);
    cJSON_free(text);
    return rc;
}

const char *ap_conv_stream_model(const struct ap_conv_stream *s)
{
    if (s->model != NULL)
        return s->model;
    return s->up_model ? s->up_model : "";
}
