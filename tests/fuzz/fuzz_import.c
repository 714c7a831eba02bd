/*
 * The keys.json import parser (common/ap_import.c): POST /admin/import bodies
 * and KEYS_FILE. Every command it builds must be a well-formed EVAL.
 */
#include "ap_delta.h"
#include "ap_import.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ap_import imp;
    char err[256];
    if (ap_import_parse((const char *)data, size, &imp, err, sizeof(err)) < 0) {
        if (err[0] == '\0')
            abort();
        return 0;
    }
    for (size_t i = 0; i < imp.ncmds; i++) {
        const struct ap_batch *b = imp.cmds[i];
        if (b->argc < 11 || strcmp(b->argv[0], "EVAL") != 0)
            abort();
    }
    ap_import_free(&imp);
    return 0;
}
