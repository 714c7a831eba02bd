/*
 * PASSTHROUGH: which /v1 requests besides Messages and Chat Completions
 * may reach the shared upstream account. An allow-list, because the account
 * is shared: files, batches and the like of one user must not be reachable
 * by another, and what we cannot meter must not pass. Entries are
 * "METHOD /exact/path" or "METHOD /prefix/" followed by '*' (matching the rest of the
 * path, one or more characters). Paths are compared after percent-decoding.
 */
#include "px.h"

#include <stdlib.h>
#include <string.h>

#define ALLOW_MAX 64

struct px_allow_entry {
    char method[16];
    char path[240];
    unsigned prefix:1;                  /* the path ended in '*' */
};

struct px_allow {
    struct px_allow_entry e[ALLOW_MAX];
    size_t n;
};

struct px_allow *px_allow_parse(const char *spec, const char **err)
{
    struct px_allow *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        *err = "out of memory";
        return NULL;
    }
    const char *p = spec;
    while (*p != '\0') {
        while (*p == ',' || *p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        const char *sp = memchr(p, ' ', len);
        struct px_allow_entry *e = &a->e[a->n];
        size_t ml = sp ? (size_t)(sp - p) : 0;
        const char *path = sp;
        while (path != NULL && *path == ' ')
            path++;
        size_t pl = path ? len - (size_t)(path - p) : 0;
        if (a->n == ALLOW_MAX || ml == 0 || ml >= sizeof(e->method) || pl < 2 || pl >= sizeof(e->path) ||
            path[0] != '/' || memchr(path, ' ', pl) != NULL || memchr(path, '*', pl - 1) != NULL) {
            *err = a->n == ALLOW_MAX ? "too many entries" : "each entry must be METHOD /path or METHOD /prefix/*";
            free(a);
            return NULL;
        }
        memcpy(e->method, p, ml);
        e->prefix = path[pl - 1] == '*';
        memcpy(e->path, path, pl - e->prefix);
        a->n++;
        p += len;
        while (*p == ' ')
            p++;
    }
    return a;
}

void px_allow_free(struct px_allow *a)
{
    free(a);
}

int px_allow_match(const struct px_allow *a, const char *method, const char *path)
{
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        const struct px_allow_entry *e = &a->e[i];
        if (strcmp(e->method, method) != 0)
            continue;
        if (!e->prefix ? strcmp(e->path, path) == 0
                       : strncmp(e->path, path, strlen(e->path)) == 0 && path[strlen(e->path)] != '\0')
            return 1;
    }
    return 0;
}
