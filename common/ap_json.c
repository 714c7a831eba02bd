/* Client JSON, read strictly; see ap_json.h. */
#include "ap_json.h"

#include "ap_jscan.h"

#include <cJSON.h>

cJSON *ap_json_parse_client(const char *buf, size_t len, const char **err)
{
    struct ap_jscan js;
    int rc = ap_jscan(buf, len, &js);
    if (rc != AP_JSCAN_OK) {
        *err = ap_jscan_strerror(rc);
        return NULL;
    }
    if (js.has_nul) {
        *err = "a string holds U+0000, which cannot be kept";
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(buf, len);
    if (j == NULL)
        *err = "out of memory";
    return j;
}
