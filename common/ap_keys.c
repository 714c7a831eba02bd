/* Key hashing, masking and generation with OpenSSL's libcrypto; see ap_keys.h. */
#include "ap_keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

void ap_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int olen = 32;
    /*
     * Fetched once: with OpenSSL 3 every EVP_Digest on EVP_sha256() looks the
     * implementation up in the provider tables again, which cost more than
     * hashing the key itself (a key is hashed on every request).
     */
    static EVP_MD *md;
    /* One context, reused (single-threaded): EVP_Digest allocates and frees one per call. */
    static EVP_MD_CTX *ctx;
    if (md == NULL)
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (ctx == NULL)
        ctx = EVP_MD_CTX_new();
    if (md != NULL && ctx != NULL && EVP_DigestInit_ex2(ctx, md, NULL) == 1 && EVP_DigestUpdate(ctx, data, len) == 1 &&
        EVP_DigestFinal_ex(ctx, out, &olen) == 1)
        return;
    EVP_Digest(data, len, out, &olen, md ? md : EVP_sha256(), NULL);
}

void ap_hex(const void *bytes, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void ap_sha1_hex(const char *text, char out[41])
{
    unsigned char d[20];
    unsigned int olen = 20;
    EVP_Digest(text, strlen(text), d, &olen, EVP_sha1(), NULL);
    ap_hex(d, 20, out);
}

void ap_sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char d[32];
    ap_sha256(data, len, d);
    ap_hex(d, 32, out);
}

void ap_key_mask(const char *key, char *out, size_t n)
{
    size_t l = strlen(key);
    if (l <= 12) {
        snprintf(out, n, "***");
        return;
    }
    snprintf(out, n, "%.8s...%s", key, key + l - 4);
}

void ap_mask_path(const char *path, char *out, size_t n)
{
    size_t o = 0;
    const char *p = path;
    if (n == 0)
        return;
    while (*p != '\0' && *p != '?' && o + 1 < n) {
        if (*p == '/') {
            out[o++] = *p++;
            continue;
        }
        const char *e = p;
        while (*e != '\0' && *e != '/' && *e != '?')
            e++;
        size_t len = (size_t)(e - p);
        int plain = len <= 24 && strncmp(p, "sk-", 3) != 0;
        if (plain) {
            if (o + len + 1 > n)
                break; /* a cut segment could be half a secret: stop instead */
            memcpy(out + o, p, len);
            o += len;
        } else {
            char seg[256], masked[AP_MASK_LEN];
            size_t sl = len < sizeof(seg) - 1 ? len : sizeof(seg) - 1;
            memcpy(seg, p, sl);
            seg[sl] = '\0';
            ap_key_mask(seg, masked, sizeof(masked));
            size_t ml = strlen(masked);
            if (o + ml + 1 > n)
                break;
            memcpy(out + o, masked, ml);
            o += ml;
        }
        p = e;
    }
    out[o] = '\0';
}

void ap_url_redact(const char *url, char *out, size_t n)
{
    const char *scheme = strstr(url, "://");
    const char *auth = scheme ? scheme + 3 : url;
    size_t hl = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', hl);
    size_t pre = (size_t)(auth - url);
    const char *rest = at ? at + 1 : auth;
    size_t rl = strcspn(rest, "?#");
    snprintf(out, n, "%.*s%.*s", (int)pre, url, (int)rl, rest);
}

int ap_random_bytes(void *out, size_t n)
{
    return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
}

uint64_t ap_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int ap_random_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof(b) || RAND_bytes(b, (int)nbytes) != 1)
        return -1;
    ap_hex(b, nbytes, out);
    return 0;
}

int ap_key_generate(char *out, size_t n)
{
    if (n < 52)
        return -1;
    memcpy(out, "sk-", 3);
    return ap_random_hex(out + 3, 24);
}

int ap_key_id_generate(char *out)
{
    return ap_random_hex(out, 8);
}

int ap_secret_equal(const char *a, const char *b)
{
    unsigned char da[32], db[32];
    ap_sha256(a, strlen(a), da);
    ap_sha256(b, strlen(b), db);
    return CRYPTO_memcmp(da, db, 32) == 0;
}
