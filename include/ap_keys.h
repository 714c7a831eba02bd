/*
 * ap_keys: API key material. Keys are never stored: Redis holds the SHA-256
 * of each key, and logs and listings show only the masked form.
 */
#ifndef AP_KEYS_H
#define AP_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define AP_SHA256_HEX 65 /* 64 hex digits + NUL */
#define AP_KEY_ID_LEN 17 /* 16 hex digits + NUL */
#define AP_MASK_LEN 32

/* Hex SHA-256 of `len` bytes into out (AP_SHA256_HEX bytes). */
void ap_sha256_hex(const void *data, size_t len, char *out);

/* Hex SHA-1 of a NUL-terminated text (how Redis names a script for EVALSHA) into out (41 bytes). */
void ap_sha1_hex(const char *text, char out[41]);

/* Raw SHA-256 (32 bytes). */
void ap_sha256(const void *data, size_t len, unsigned char out[32]);

/*
 * The original's masked form: first 8 characters, "...", last 4. Keys of 12
 * characters or fewer would be shown almost whole, so they mask to "***".
 */
void ap_key_mask(const char *key, char *out, size_t n);

/*
 * A request path for logs: logs must never carry a key, and admin paths embed
 * one (/admin/keys/<key>/...), as may a confused client anywhere. Segments
 * that are not short plain words are masked; the query string is dropped.
 * The result still needs JSON escaping to go into a log line.
 */
void ap_mask_path(const char *path, char *out, size_t n);

/* A URL fit to show (logs, /health): without user:password@ and without its query. */
void ap_url_redact(const char *url, char *out, size_t n);

/* A new key "sk-" + 48 hex digits (192 bits from the CSPRNG) into out (>= 52 bytes). 0, or -1 if the CSPRNG failed. */
int ap_key_generate(char *out, size_t n);

/* A new opaque key id (16 hex digits). */
int ap_key_id_generate(char *out);

/* n random bytes from the CSPRNG. 0 or -1. */
int ap_random_bytes(void *out, size_t n);

/* The splitmix64 generator: fast, not for secrets (ids, jitter). */
uint64_t ap_splitmix64(uint64_t *state);

/* n bytes as 2*n lowercase hex digits and a NUL (out >= 2*n+1). */
void ap_hex(const void *bytes, size_t n, char *out);

/* Random hex string of 2*nbytes digits (out >= 2*nbytes+1). */
int ap_random_hex(char *out, size_t nbytes);

/* Constant-time equality of two secrets of any lengths (compares their digests). */
int ap_secret_equal(const char *a, const char *b);

#endif
