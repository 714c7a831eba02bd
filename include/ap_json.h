/*
 * ap_json: the one way to build a cJSON tree of bytes a client sent.
 *
 * cJSON keeps both members of a duplicated name (and cJSON_GetObjectItem
 * finds the first, where most servers take the last), cuts strings and names
 * at U+0000, and accepts some malformed JSON. A tree built from client bytes
 * would then hold something else than the bytes say. So the bytes go through
 * ap_jscan first (duplicates, U+0000 in names, strict syntax), and a string
 * holding U+0000 anywhere is refused as well: a tree cannot keep it, and we
 * keep or refuse, never cut.
 */
#ifndef AP_JSON_H
#define AP_JSON_H

#include <stddef.h>

struct cJSON;

/*
 * Parses a client's JSON document. Returns a new tree (the caller deletes it),
 * or NULL with *err set to a static message fit for a 400 answer ("not valid
 * JSON", "duplicate member name", ...).
 */
struct cJSON *ap_json_parse_client(const char *buf, size_t len, const char **err);

#endif
