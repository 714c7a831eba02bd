/* ap_file: whole-file reads for configuration (startup only, never on a loop). */
#ifndef AP_FILE_H
#define AP_FILE_H

#include <stddef.h>

/* Reads `path` into a new NUL-terminated buffer (*out, caller frees). 0 or -1 (errno set). */
int ap_file_read(const char *path, char **out, size_t *len);

/*
 * Replaces `path` with `text` atomically (a temporary file in the same
 * directory, fsync, rename) with permissions `mode`. 0 or -1 (errno set).
 * Blocking: for small files written rarely (a token, a few hundred bytes).
 */
int ap_file_write_atomic(const char *path, const char *text, int mode);

#endif
