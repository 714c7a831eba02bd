/*
 * ap_lark: the pure parts of Lark (Feishu) callbacks: request signatures,
 * decryption of {"encrypt": ...} bodies, and reading the fields we act on.
 * OpenSSL's libcrypto does the cryptography. No I/O.
 */
#ifndef AP_LARK_H
#define AP_LARK_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;

/*
 * 1 when `signature` (hex) equals SHA-256(timestamp + nonce + encrypt_key + body),
 * compared in constant time.
 */
int ap_lark_signature_ok(const char *timestamp, const char *nonce, const char *encrypt_key,
                         const char *body, size_t len, const char *signature);

/*
 * Decrypts the base64 `encrypt` field: IV (16 bytes) + AES-256-CBC ciphertext,
 * key = SHA-256(encrypt_key), PKCS7 padding. Returns a new NUL-terminated
 * plaintext (caller frees) or NULL when it does not decrypt.
 */
char *ap_lark_decrypt(const char *encrypt_key, const char *b64, size_t *out_len);

/* Encrypts (the inverse, for tests and tools): returns new base64 text or NULL. */
char *ap_lark_encrypt(const char *encrypt_key, const char *plain, size_t len, const unsigned char iv[16]);

enum ap_lark_kind { AP_LARK_CHALLENGE, AP_LARK_CARD_ACTION, AP_LARK_OTHER };

struct ap_lark_event {
    enum ap_lark_kind kind;
    const char *challenge;      /* borrowed from the JSON */
    const char *token;          /* verification token (v1 "token" or v2 header.token), or NULL */
    const char *event_id;       /* header.event_id (or v1 uuid), or NULL */
    const char *event_type;     /* header.event_type (or v1 type), or NULL */
    const char *action;         /* event.action.value.action, or NULL */
};

/* Reads a (decrypted) callback body. Strings point into `body`. */
void ap_lark_classify(const struct cJSON *body, struct ap_lark_event *ev);

/*
 * Reads an app_access_token/internal answer into an "Authorization: Bearer <token>"
 * header line (out, n bytes). 0, or -1 when it carries no token.
 */
int ap_lark_app_token_header(const char *body, size_t len, char *out, size_t n);

/* The body of an app_access_token/internal request (new JSON text; free with cJSON_free). */
char *ap_lark_app_token_request(const char *app_id, const char *app_secret);

/*
 * The user token as stored (Redis, LARK_TOKEN_FILE): the `data` of an OIDC
 * answer with obtained_at_ms, expires_at_ms and refresh_expires_at_ms added
 * (from expires_in / refresh_expires_in). Returns new JSON text (cJSON_free) or NULL.
 */
char *ap_lark_token_record(struct cJSON *data, int64_t now_ms);

/* The longest the poller waits between two looks at the stored user token (a safety net). */
#define AP_LARK_MAX_WAIT_MS (3600 * 1000LL)

/*
 * When the user token expiring at expires_at_ms should be refreshed, in ms from
 * now_ms: 0 when it is due (it expires within before_s seconds, or has), else the
 * time until expires_at_ms - before_s, at most AP_LARK_MAX_WAIT_MS.
 */
int64_t ap_lark_refresh_in_ms(int64_t expires_at_ms, int64_t now_ms, long before_s);

/* HTML-escapes s into a new string (caller frees). */
char *ap_html_escape(const char *s);

/* Splits a command line on blanks into a NULL-terminated argv (no shell, no quoting); caller frees with ap_argv_free. */
char **ap_argv_split(const char *cmd);
void ap_argv_free(char **argv);

#endif
