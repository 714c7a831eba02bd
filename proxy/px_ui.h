/*
 * px_ui: the admin console's static files, built into the binary by
 * tools/embed.c (the generated px_ui_assets), and the pure decision of what a
 * /ui path serves and how it may be cached. No I/O here: px_ui.c answers the
 * HTTP request from the decision.
 *
 *   /ui                         301 to /ui/ (relative links need the slash)
 *   /                           302 to /ui/ (where a newcomer lands)
 *   /ui/, /ui/index.html        the page: revalidated on every load (ETag)
 *   /ui/assets/<version>/<f>    a script, style or image of this build:
 *                               cached for good (the path changes with it)
 *   /ui/assets/<other>/<f>      the same file of this build, revalidated: a
 *                               page from another build (a rolling deploy
 *                               behind a load balancer) still works, and
 *                               nothing stale is cached for good
 *   /ui/<f>                     a non-HTML file, revalidated
 *   anything else under /ui/    404
 */
#ifndef PX_UI_H
#define PX_UI_H

#include <stddef.h>

struct px_ui_file {
    const char *name;               /* base name, e.g. "app.js" */
    const char *type;               /* Content-Type */
    const unsigned char *data;
    size_t len;
    const char *etag;               /* quoted strong ETag: a hash of the content */
};

struct px_ui_set {
    const struct px_ui_file *files;
    size_t n;
    const char *version;            /* hash of every non-HTML file */
};

/* The files of this build (generated). */
extern const struct px_ui_set px_ui_assets;

enum px_ui_cache {
    PX_UI_REVALIDATE,               /* Cache-Control: no-cache (ETag revalidation) */
    PX_UI_IMMUTABLE,                /* cached for a year, never revalidated */
};

struct px_ui_route {
    int status;                     /* 200, 301, 302 or 404 */
    const struct px_ui_file *file;  /* 200: what to serve */
    enum px_ui_cache cache;         /* 200 */
    const char *location;           /* 301/302 */
};

/* 1 when the console answers `path` (no query string): "/", "/ui" and "/ui/...". */
int px_ui_owns(const char *path);

/* What a GET of `path` (one px_ui_owns accepts) serves from `set`. */
void px_ui_resolve(const struct px_ui_set *set, const char *path, struct px_ui_route *out);

/* The file named `name` in `set`, or NULL. */
const struct px_ui_file *px_ui_find(const struct px_ui_set *set, const char *name);

/*
 * 1 when an If-None-Match header value matches `etag` (RFC 9110: "*", or any
 * entity tag of the comma-separated list, weak comparison). NULL: no header.
 */
int px_ui_etag_matches(const char *header, const char *etag);

#endif
