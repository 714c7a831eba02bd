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

/*
 * The same for a document that is converted and printed again with
 * ap_json_print_keep: strings holding U+0000 are kept (see below), not refused.
 */
struct cJSON *ap_json_parse_client_keep(const char *buf, size_t len, const char **err);

/*
 * For JSON that is edited or converted and printed again (a body sent on to
 * a tier, an upstream's answer or stream event converted for the client):
 * strings holding U+0000 are kept, not cut. Inside the tree each \u0000 is
 * carried as the byte 0xFF, which UTF-8 never uses and no escape decodes to;
 * ap_json_print_keep writes it back as \u0000. A text holding a raw 0xFF
 * byte (not UTF-8, so no valid JSON) is refused. Use the two as a pair.
 * Returns a new tree or NULL (not JSON, a 0xFF byte, out of memory).
 */
struct cJSON *ap_json_parse_keep(const char *buf, size_t len);

/*
 * cJSON_PrintUnformatted, writing every carried U+0000 back as \u0000.
 * Returns new text (free with cJSON_free) or NULL.
 */
char *ap_json_print_keep(const struct cJSON *j);

#endif
