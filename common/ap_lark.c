/* Lark callback verification and decryption; see ap_lark.h. */
#include "ap_lark.h"

#include "ap_keys.h"

#include <cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ap_lark_signature_ok(const char *timestamp, const char *nonce, const char *encrypt_key,
                         const char *body, size_t len, const char *signature)
{
    if (timestamp == NULL || nonce == NULL || encrypt_key == NULL || signature == NULL || strlen(signature) != 64)
        return 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[32];
    unsigned int dl = 0;
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, timestamp, strlen(timestamp)) == 1 &&
             EVP_DigestUpdate(md, nonce, strlen(nonce)) == 1 &&
             EVP_DigestUpdate(md, encrypt_key, strlen(encrypt_key)) == 1 && EVP_DigestUpdate(md, body, len) == 1 &&
             EVP_DigestFinal_ex(md, d, &dl) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        return 0;
    char hex[65], want[65];
    ap_hex(d, sizeof(d), hex);
    for (int i = 0; i < 64; i++)
        want[i] = (char)((signature[i] >= 'A' && signature[i] <= 'F') ? signature[i] + 32 : signature[i]);
    want[64] = '\0';
    return CRYPTO_memcmp(hex, want, 64) == 0;
}

char *ap_lark_decrypt(const char *encrypt_key, const char *b64, size_t *out_len)
{
    size_t bl = strlen(b64);
    if (bl == 0 || bl % 4 != 0)
        return NULL;
    unsigned char *raw = malloc(bl / 4 * 3 + 1);
    unsigned char *plain = NULL;
    EVP_CIPHER_CTX *cx = NULL;
    if (raw == NULL)
        return NULL;
    int rl = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)bl);
    if (rl < 0)
        goto fail;
    /* EVP_DecodeBlock counts the '=' padding as data bytes. */
    if (bl >= 1 && b64[bl - 1] == '=')
        rl--;
    if (bl >= 2 && b64[bl - 2] == '=')
        rl--;
    if (rl <= 16 || (rl - 16) % 16 != 0)
        goto fail;
    unsigned char key[32];
    ap_sha256(encrypt_key, strlen(encrypt_key), key);
    plain = malloc((size_t)rl + 1);
    cx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    if (plain == NULL || cx == NULL || EVP_DecryptInit_ex(cx, EVP_aes_256_cbc(), NULL, key, raw) != 1 ||
        EVP_DecryptUpdate(cx, plain, &n1, raw + 16, rl - 16) != 1 || EVP_DecryptFinal_ex(cx, plain + n1, &n2) != 1)
        goto fail;
    plain[n1 + n2] = '\0';
    if (out_len)
        *out_len = (size_t)(n1 + n2);
    OPENSSL_cleanse(key, sizeof(key));
    EVP_CIPHER_CTX_free(cx);
    free(raw);
    return (char *)plain;
fail:
    EVP_CIPHER_CTX_free(cx);
    free(plain);
    free(raw);
    return NULL;
}

char *ap_lark_encrypt(const char *encrypt_key, const char *plain, size_t len, const unsigned char iv[16])
{
    unsigned char key[32];
    ap_sha256(encrypt_key, strlen(encrypt_key), key);
    size_t cl = 16 + len + 16;
    unsigned char *buf = malloc(cl);
    char *out = malloc(4 * ((cl + 2) / 3) + 1);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    if (buf == NULL || out == NULL || cx == NULL || EVP_EncryptInit_ex(cx, EVP_aes_256_cbc(), NULL, key, iv) != 1 ||
        EVP_EncryptUpdate(cx, buf + 16, &n1, (const unsigned char *)plain, (int)len) != 1 ||
        EVP_EncryptFinal_ex(cx, buf + 16 + n1, &n2) != 1) {
        EVP_CIPHER_CTX_free(cx);
        free(buf);
        free(out);
        return NULL;
    }
    memcpy(buf, iv, 16);
    EVP_EncodeBlock((unsigned char *)out, buf, 16 + n1 + n2);
    EVP_CIPHER_CTX_free(cx);
    free(buf);
    return out;
}

static const char *lark_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

void ap_lark_classify(const cJSON *body, struct ap_lark_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    const cJSON *header = cJSON_GetObjectItemCaseSensitive(body, "header");
    const char *type = lark_str(body, "type");
    ev->challenge = lark_str(body, "challenge");
    ev->token = lark_str(header, "token") ? lark_str(header, "token") : lark_str(body, "token");
    ev->event_id = lark_str(header, "event_id") ? lark_str(header, "event_id") : lark_str(body, "uuid");
    ev->event_type = lark_str(header, "event_type") ? lark_str(header, "event_type") : type;
    if ((type != NULL && strcmp(type, "url_verification") == 0) || (ev->challenge != NULL && header == NULL)) {
        ev->kind = ev->challenge ? AP_LARK_CHALLENGE : AP_LARK_OTHER;
        return;
    }
    if (ev->event_type != NULL && strncmp(ev->event_type, "card.action.trigger", 19) == 0) {
        ev->kind = AP_LARK_CARD_ACTION;
        const cJSON *event = cJSON_GetObjectItemCaseSensitive(body, "event");
        const cJSON *action = cJSON_GetObjectItemCaseSensitive(event, "action");
        ev->action = lark_str(cJSON_GetObjectItemCaseSensitive(action, "value"), "action");
        return;
    }
    ev->kind = AP_LARK_OTHER;
}

int ap_lark_app_token_header(const char *body, size_t len, char *out, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "app_access_token");
    int ok = cJSON_IsString(tok) && snprintf(out, n, "Authorization: Bearer %s", tok->valuestring) < (int)n;
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

char *ap_lark_app_token_request(const char *app_id, const char *app_secret)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "app_id", app_id);
    cJSON_AddStringToObject(req, "app_secret", app_secret);
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    return text;
}

char *ap_lark_token_record(cJSON *data, int64_t now_ms)
{
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(data, "expires_in");
    const cJSON *rexp = cJSON_GetObjectItemCaseSensitive(data, "refresh_expires_in");
    cJSON_DeleteItemFromObjectCaseSensitive(data, "obtained_at_ms");
    cJSON_DeleteItemFromObjectCaseSensitive(data, "expires_at_ms");
    cJSON_DeleteItemFromObjectCaseSensitive(data, "refresh_expires_at_ms");
    cJSON_AddNumberToObject(data, "obtained_at_ms", (double)now_ms);
    if (cJSON_IsNumber(exp))
        cJSON_AddNumberToObject(data, "expires_at_ms", (double)now_ms + exp->valuedouble * 1000);
    if (cJSON_IsNumber(rexp))
        cJSON_AddNumberToObject(data, "refresh_expires_at_ms", (double)now_ms + rexp->valuedouble * 1000);
    return cJSON_PrintUnformatted(data);
}

int64_t ap_lark_refresh_in_ms(int64_t expires_at_ms, int64_t now_ms, long before_s)
{
    int64_t in = expires_at_ms - (int64_t)before_s * 1000 - now_ms;
    return in <= 0 ? 0 : in > AP_LARK_MAX_WAIT_MS ? AP_LARK_MAX_WAIT_MS : in;
}

char *ap_html_escape(const char *s)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += (*p == '&') ? 5 : (*p == '<' || *p == '>') ? 4 : (*p == '"' || *p == '\'') ? 6 : 1;
    char *out = malloc(n), *o = out;
    if (out == NULL)
        return NULL;
    for (const char *p = s; *p; p++) {
        const char *rep = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : *p == '"' ? "&quot;"
                          : *p == '\'' ? "&#39;" : NULL;
        if (rep) {
            size_t l = strlen(rep);
            memcpy(o, rep, l);
            o += l;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

char **ap_argv_split(const char *cmd)
{
    size_t cap = 8, n = 0;
    char **argv = calloc(cap, sizeof(char *));
    const char *p = cmd;
    if (argv == NULL)
        return NULL;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        const char *e = p;
        while (*e != '\0' && *e != ' ' && *e != '\t')
            e++;
        if (n + 2 > cap) {
            char **na = realloc(argv, (cap *= 2) * sizeof(char *));
            if (na == NULL) {
                ap_argv_free(argv);
                return NULL;
            }
            argv = na;
        }
        argv[n] = strndup(p, (size_t)(e - p));
        if (argv[n] == NULL) {
            ap_argv_free(argv);
            return NULL;
        }
        argv[++n] = NULL;
        p = e;
    }
    if (n == 0) {
        free(argv);
        return NULL;
    }
    return argv;
}

void ap_argv_free(char **argv)
{
    for (size_t i = 0; argv != NULL && argv[i] != NULL; i++)
        free(argv[i]);
    free(argv);
}
