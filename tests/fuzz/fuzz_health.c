/*
 * The upstream's /health document (common/ap_quota.c, read by the poller) and
 * the quota state as replicas read it back from Redis (ap_quota_from_json),
 * with the ISO times both carry (common/ap_time.c). What ap_health_parse
 * accepts must survive the trip through ap_quota_to_json / ap_quota_from_json.
 */
#include "ap_quota.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ap_quota q = {0}, back = {0};
    char err[128];
    if (ap_health_parse((const char *)data, size, &q, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < q.n; i++)
            if (!(q.m[i].fraction >= 0 && q.m[i].fraction <= 1))
                abort();
        cJSON *j = ap_quota_to_json(&q);
        if (ap_quota_from_json(j, &back) < 0 || back.n != q.n)
            abort();
        for (size_t i = 0; i < q.n; i++)
            if (strcmp(back.m[i].model, q.m[i].model) != 0 || back.m[i].reset_ms != q.m[i].reset_ms)
                abort();
        cJSON_Delete(j);
        ap_quota_free(&back);
    }
    ap_quota_free(&q);
    /* the same bytes as a state document read back from Redis */
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (j != NULL) {
        ap_quota_from_json(j, &back);
        ap_quota_free(&back);
        cJSON_Delete(j);
    }
    return 0;
}
