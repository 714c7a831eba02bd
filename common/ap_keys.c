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
    EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL);
}

static void keys_hex(const unsigned char *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
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
    keys_hex(d, 20, out);
}

void ap_sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char d[32];
    ap_sha256(data, len, d);
    keys_hex(d, 32, out);
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
    keys_hex(b, nbytes, out);
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
