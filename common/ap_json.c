/* Client JSON, read strictly; see ap_json.h. */
#include "ap_json.h"

#include "ap_jscan.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

/* What \u0000 becomes inside a tree: a byte that UTF-8 never uses. */
#define JSON_MARK 0xFF /* as an int: memchr and strchr take the byte as an unsigned char value */

static cJSON *json_parse_client(const char *buf, size_t len, int keep, const char **err)
{
    struct ap_jscan js;
    int rc = ap_jscan(buf, len, &js);
    if (rc != AP_JSCAN_OK) {
        *err = ap_jscan_strerror(rc);
        return NULL;
    }
    if (js.has_nul && !keep) {
        *err = "a string holds U+0000, which cannot be kept";
        return NULL;
    }
    cJSON *j = keep ? ap_json_parse_keep(buf, len) : cJSON_ParseWithLength(buf, len);
    if (j == NULL)
        *err = keep && memchr(buf, JSON_MARK, len) != NULL ? "not valid UTF-8" : "out of memory";
    return j;
}

cJSON *ap_json_parse_client(const char *buf, size_t len, const char **err)
{
    return json_parse_client(buf, len, 0, err);
}

cJSON *ap_json_parse_client_keep(const char *buf, size_t len, const char **err)
{
    return json_parse_client(buf, len, 1, err);
}

/*
 * Copies the text with each \u0000 escape turned into JSON_MARK. Walks
 * backslash to backslash: in valid JSON they only open escapes, so "\\u0000"
 * (an escaped backslash, then text) is left alone.
 */
static char *json_mark(const char *buf, size_t len, size_t *outlen)
{
    const char *p = buf, *end = buf + len;
    char *out = malloc(len + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (;;) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t n = (size_t)((bs ? bs : end) - p);
        memcpy(o, p, n);
        o += n;
        p += n;
        if (bs == NULL)
            break;
        size_t esc = end - p >= 6 && p[1] == 'u' ? 6 : end - p >= 2 ? 2 : 1;
        if (esc == 6 && memcmp(p + 2, "0000", 4) == 0) {
            *o++ = JSON_MARK;
        } else {
            memcpy(o, p, esc);
            o += esc;
        }
        p += esc;
    }
    *outlen = (size_t)(o - out);
    return out;
}

cJSON *ap_json_parse_keep(const char *buf, size_t len)
{
    if (memchr(buf, JSON_MARK, len) != NULL)
        return NULL;
    if (memmem(buf, len, "\\u0000", 6) == NULL)
        return cJSON_ParseWithLength(buf, len); /* the usual case: nothing to carry */
    size_t n;
    char *marked = json_mark(buf, len, &n);
    if (marked == NULL)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(marked, n);
    free(marked);
    return j;
}

char *ap_json_print_keep(const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    if (s == NULL || strchr(s, JSON_MARK) == NULL)
        return s;
    size_t len = strlen(s), marks = 0;
    for (const char *p = s; (p = strchr(p, JSON_MARK)) != NULL; p++)
        marks++;
    char *out = cJSON_malloc(len + marks * 5 + 1), *o = out;
    if (out != NULL) {
        for (const char *p = s; *p != '\0'; p++) {
            if ((unsigned char)*p == JSON_MARK) {
                memcpy(o, "\\u0000", 6);
                o += 6;
            } else {
                *o++ = *p;
            }
        }
        *o = '\0';
    }
    cJSON_free(s);
    return out;
}
