/*
 * ap_curl: libcurl's multi_socket interface driven by a libevent loop
 * (the pattern of curl's docs/examples/hiperfifo.c, without its exit()s).
 *
 * Transfers are added with a completion callback. Completion callbacks run
 * from the loop after curl_multi_socket_action returned, never inside a curl
 * callback, and the handle has already been removed from the multi handle, so
 * the callback may clean it up or add new transfers.
 */
#ifndef AP_CURL_H
#define AP_CURL_H

#include <curl/curl.h>

struct event_base;
struct ap_curl;

typedef void (*ap_curl_done_fn)(CURL *easy, CURLcode result, void *arg);

/* Returns NULL on failure. */
struct ap_curl *ap_curl_new(struct event_base *base);

/* Aborts every transfer (no completion callbacks) and frees. NULL allowed. */
void ap_curl_free(struct ap_curl *c);

/* Starts `easy`. `done` is called exactly once unless ap_curl_remove is called first. 0 or -1. */
int ap_curl_add(struct ap_curl *c, CURL *easy, ap_curl_done_fn done, void *arg);

/*
 * Aborts a transfer without calling its completion callback. Must not be
 * called from inside a curl callback (write, header, read) of any transfer.
 */
void ap_curl_remove(struct ap_curl *c, CURL *easy);

#endif
