/*
 * ap_views: the admin API's JSON documents (docs/contract.md section 3), built from
 * the replies of the ap_store read scripts. Shared by the proxy (async
 * replies) and the admin command line (sync replies): both get a redisReply.
 * Each function returns a new cJSON object owned by the caller, or NULL when
 * the reply does not have the script's shape.
 */
#ifndef AP_VIEWS_H
#define AP_VIEWS_H

#include <hiredis/hiredis.h>
#include <stdint.h>

struct cJSON;

struct cJSON *ap_view_keys_list(const redisReply *rep, long tz_offset);
struct cJSON *ap_view_key_usage(const redisReply *rep, long tz_offset);
struct cJSON *ap_view_usage_total(const redisReply *rep);
struct cJSON *ap_view_usage_daily(const redisReply *rep);
struct cJSON *ap_view_usage_hourly(const redisReply *rep);

/* {ap_script_key_get's record} or {id, name, policy} of ap_script_key_set_policy -> the policy ({} for none). */
struct cJSON *ap_view_key_policy(const redisReply *rep);

/*
 * ap_script_export's reply -> {"format": "api-proxy-export", "version": 1,
 * "exported_at", "keys": {"sha256:<hex>": {"id", "name", "enabled", "created",
 * "masked", "policy", "usage": {the original's usage document, with ours}}}},
 * which ap_import reads back (keys stay usable: they are stored hashed).
 */
struct cJSON *ap_view_export(const redisReply *rep, long tz_offset, int64_t now_ms);

/* Field of an HGETALL reply, or NULL. */
const char *ap_view_hget(const redisReply *hash, const char *field);

#endif
