/*
 * Response and error conversion both ways (common/ap_conv_resp.c,
 * ap_conv_msg.c) and the usage readers (common/ap_usage.c), on an
 * upstream's body. Converted answers must print to JSON that parses again.
 * The first byte picks the HTTP status of the error conversion.
 */
#include "ap_conv.h"
#include "ap_json.h"
#include "ap_usage.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check(cJSON *doc)
{
    if (doc == NULL)
        return;
    char *text = ap_json_print_keep(doc);
    if (text == NULL)
        abort();
    cJSON *again = cJSON_Parse(text);
    if (again == NULL)
        abort();
    cJSON_Delete(again);
    cJSON_free(text);
    cJSON_Delete(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int status = 400 + data[0] % 200;
    const char *buf = (const char *)data + 1;
    size -= 1;
    cJSON *up = ap_json_parse_keep(buf, size);
    const char *model = (data[0] & 1) ? "client-model" : NULL;
    fz_check(ap_conv_resp_o2a(up, model));
    fz_check(ap_conv_resp_a2o(up, model));
    cJSON_Delete(up);
    for (int to = 0; to < 2; to++) {
        cJSON *e = ap_conv_error(to ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC, status, buf, size);
        if (e == NULL)
            abort(); /* an error body always converts */
        fz_check(e);
    }
    struct ap_usage u = {0};
    ap_usage_anthropic_body(&u, buf, size);
    ap_usage_openai_body(&u, buf, size);
    if (u.input < 0 || u.output < 0 || u.cache_read < 0 || u.cache_creation < 0)
        abort();
    return 0;
}
