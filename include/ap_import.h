/*
 * ap_import: the original service's keys.json turned into Redis commands.
 *
 *   {"admin_key": "...", "keys": {"sk-...": {"name", "enabled", "created",
 *     "usage": {"total_input", "total_output", "total_requests", "last_used",
 *               "daily": {DAY: {"input","output","requests","by_model":{M:{"total","requests"}}}},
 *               "hourly": {"DAY HH:00": {"by_model": {...}}},
 *               "total_by_model": {M: {"total","requests"}}}}}}
 *
 * One EVAL of ap_script_import_key per key, each atomic and applied at most
 * once per key hash, so importing the same file twice (or from several
 * replicas at once) changes nothing. Pure: parsing and command building only.
 */
#ifndef AP_IMPORT_H
#define AP_IMPORT_H

#include <stddef.h>

struct ap_batch;

struct ap_import {
    char *admin_key;        /* owned; NULL if the file has none */
    struct ap_batch **cmds; /* owned: one EVAL per key */
    size_t ncmds;
    size_t skipped;         /* entries that were not objects, or had an invalid policy */
    char problem[256];      /* the first reason an entry was skipped ("" if none) */
};

/*
 * Parses a keys.json document. Returns 0, or -1 with a message in err when
 * the document is not a keys.json (not JSON, no "keys" object).
 */
int ap_import_parse(const char *json, size_t len, struct ap_import *out, char *err, size_t errlen);

/* Reads and parses a file; same returns. */
int ap_import_file(const char *path, struct ap_import *out, char *err, size_t errlen);

void ap_import_free(struct ap_import *imp);

#endif
