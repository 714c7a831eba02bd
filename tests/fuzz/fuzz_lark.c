/*
 * Lark callbacks (common/ap_lark.c): decryption of {"encrypt": ...} bodies,
 * signature checks, reading the callback, and the small text helpers. Every
 * input goes through all of them; encrypting the input and decrypting it again
 * must give it back.
 */
#include "ap_json.h"
#include "ap_lark.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_KEY "fuzz-encrypt-key"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';

    /* the input as the base64 `encrypt` field */
    size_t pl = 0;
    char *plain = ap_lark_decrypt(FZ_KEY, s, &pl);
    if (plain != NULL && plain[pl] != '\0')
        abort();
    free(plain);

    /* the input as plaintext: a round trip */
    static const unsigned char iv[16] = "0123456789abcdef";
    char *enc = ap_lark_encrypt(FZ_KEY, (const char *)data, size, iv);
    if (enc != NULL) {
        plain = ap_lark_decrypt(FZ_KEY, enc, &pl);
        if (plain == NULL || pl != size || memcmp(plain, data, size) != 0)
            abort();
        free(plain);
        free(enc);
    }

    /* the input as "timestamp\nnonce\nsignature\nbody" */
    char *f[4] = {s, NULL, NULL, NULL};
    for (int i = 1; i < 4 && f[i - 1] != NULL; i++) {
        char *nl = strchr(f[i - 1], '\n');
        if (nl != NULL) {
            *nl = '\0';
            f[i] = nl + 1;
        }
    }
    if (f[3] != NULL)
        ap_lark_signature_ok(f[0], f[1], FZ_KEY, f[3], strlen(f[3]), f[2]);
    memcpy(s, data, size); /* undo the cuts */

    /* the input as a callback body and as Lark's answers */
    const char *err;
    cJSON *body = ap_json_parse_client((const char *)data, size, &err);
    struct ap_lark_event ev;
    ap_lark_classify(body, &ev);
    char hdr[256];
    ap_lark_app_token_header((const char *)data, size, hdr, sizeof(hdr));
    if (cJSON_IsObject(body)) {
        char *rec = ap_lark_token_record(body, 1700000000000LL);
        cJSON_free(rec);
    }
    cJSON_Delete(body);

    char *esc = ap_html_escape(s);
    free(esc);
    char **argv = ap_argv_split(s);
    ap_argv_free(argv);
    free(s);
    return 0;
}
