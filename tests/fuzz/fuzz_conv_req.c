/*
 * Request conversion both ways (common/ap_conv_req.c, ap_conv_msg.c) on a
 * client's body, read as the proxy reads it (ap_json_parse_client_keep), and
 * as plain cJSON reads it (so that trees the scan would refuse are exercised
 * too). What a conversion returns must print to JSON that parses again, and
 * convert back without harm.
 *
 * The first byte picks the options (tier model, token limit, usage request).
 */
#include "ap_conv.h"
#include "ap_json.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_convert(const cJSON *in, const struct ap_conv_opts *o, int a2o, int depth)
{
    const char *err = NULL;
    cJSON *out = a2o ? ap_conv_req_a2o(in, o, &err) : ap_conv_req_o2a(in, o, &err);
    if (out == NULL) {
        if (err == NULL)
            abort(); /* a refusal always says why */
        return;
    }
    char *text = ap_json_print_keep(out);
    if (text == NULL)
        abort();
    cJSON *again = ap_json_parse_keep(text, strlen(text));
    if (again == NULL)
        abort(); /* we printed something that is not JSON */
    if (depth == 0)
        fz_convert(again, o, !a2o, 1);
    cJSON_Delete(again);
    cJSON_free(text);
    cJSON_Delete(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct ap_conv_opts o = {(data[0] & 1) ? "tier-model" : NULL, (data[0] & 2) ? 1000 : 0, (data[0] >> 2) & 1};
    const char *buf = (const char *)data + 1, *err;
    size -= 1;
    cJSON *strict = ap_json_parse_client_keep(buf, size, &err);
    cJSON *lax = cJSON_ParseWithLength(buf, size);
    for (int a2o = 0; a2o < 2; a2o++) {
        if (strict != NULL)
            fz_convert(strict, &o, a2o, 0);
        if (lax != NULL)
            fz_convert(lax, &o, a2o, 0);
    }
    cJSON_Delete(strict);
    cJSON_Delete(lax);
    return 0;
}
