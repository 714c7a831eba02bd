/* The verdict on one attempt's outcome (see px_verdict.h). */
#include "px_verdict.h"

#include <cJSON.h>
#include <string.h>

/* Error types (both formats) that say the tier itself is out of capacity or quota. */
static int verdict_reactive_type(const char *type, size_t n)
{
    static const char *const types[] = {
        "rate_limit_error", "overloaded_error", "rate_limit_exceeded", "insufficient_quota",
        "billing_error", "resource_exhausted", "RESOURCE_EXHAUSTED", "quota_exceeded",
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strlen(types[i]) == n && memcmp(types[i], type, n) == 0)
            return 1;
    return 0;
}

int px_verdict_reactive_body(const char *body, size_t len)
{
    cJSON *j = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    int hot = 0;
    if (cJSON_IsObject(e)) {
        const char *fields[] = {"type", "code", "status"};
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]) && !hot; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, fields[i]);
            hot = cJSON_IsString(v) && verdict_reactive_type(v->valuestring, strlen(v->valuestring));
        }
    }
    cJSON_Delete(j);
    return hot;
}

int px_verdict_reactive_stream_error(const char *text)
{
    const char *colon = text ? strstr(text, ": ") : NULL;
    return colon != NULL && verdict_reactive_type(text, (size_t)(colon - text));
}

static struct px_verdict verdict(enum px_verdict_kind k, int mark, int status, const char *msg)
{
    struct px_verdict v = {k, mark, status, msg};
    return v;
}

static struct px_verdict verdict_transport(const struct px_outcome *o)
{
    switch (o->transport) {
    case PX_TR_REFUSED:
        return o->has_next ? verdict(PX_V_RETRY, 0, 0, "upstream unreachable")
                           : verdict(PX_V_FAIL, 0, 502, "upstream unreachable");
    case PX_TR_BROKEN:
        return o->has_next ? verdict(PX_V_RETRY, 0, 0, "upstream connection failed")
                           : verdict(PX_V_FAIL, 0, 502, "upstream connection failed");
    case PX_TR_TIMEOUT:
        return verdict(PX_V_FAIL, 0, 504, "upstream timed out");
    case PX_TR_TOO_LARGE:
        return verdict(PX_V_FAIL, 0, 502, "upstream response too large");
    default:
        return verdict(PX_V_FAIL, 0, 502, "upstream connection failed");
    }
}

struct px_verdict px_verdict_decide(const struct px_outcome *o)
{
    if (o->kind == PX_OUT_TRANSPORT)
        return verdict_transport(o);
    if (o->kind == PX_OUT_HELD_STREAM) {
        /* Nothing reached the client yet: a failed stream can still go elsewhere. */
        if (o->stream_clean || !o->has_next)
            return verdict(PX_V_DELIVER, 0, 0, NULL);
        const char *err = o->stream_error ? o->stream_error : "";
        return verdict(PX_V_RETRY, px_verdict_reactive_stream_error(err), 0,
                       err[0] ? "error before content" : "stream ended before content");
    }
    int st = o->status;
    if (st < 100 || st > 599)
        return verdict(PX_V_FAIL, 0, 502, "upstream sent an invalid status");
    if (st >= 200 && st < 300) {
        if (o->is_sse && o->body_len == 0)
            return o->has_next ? verdict(PX_V_RETRY, 0, 0, "empty stream") : verdict(PX_V_DELIVER, 0, 0, NULL);
        if (o->api && !o->is_sse && !o->body_is_answer)
            return o->has_next ? verdict(PX_V_RETRY, 0, 0, "invalid answer")
                               : verdict(PX_V_FAIL, 0, 502, "upstream sent an invalid response");
        return verdict(PX_V_DELIVER, 0, 0, NULL);
    }
    if (!o->has_next)
        return verdict(PX_V_DELIVER, 0, 0, NULL);
    if (st == 429 || st == 503 || st == 529)
        return verdict(PX_V_RETRY, 1, 0, "overloaded or out of quota");
    if (st >= 500)
        return verdict(PX_V_RETRY, 0, 0, "upstream error");
    if (px_verdict_reactive_body(o->body, o->body_len))
        return verdict(PX_V_RETRY, 1, 0, "out of quota");
    return verdict(PX_V_DELIVER, 0, 0, NULL);
}
