/* What a console path serves, and ETag matching; see px_ui.h. Pure. */
#include "px_ui.h"

#include <string.h>

int px_ui_owns(const char *path)
{
    return strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0 || strncmp(path, "/ui/", 4) == 0;
}

const struct px_ui_file *px_ui_find(const struct px_ui_set *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->files[i].name, name) == 0)
            return &set->files[i];
    return NULL;
}

static int ui_is_html(const struct px_ui_file *f)
{
    return strncmp(f->type, "text/html", 9) == 0;
}

void px_ui_resolve(const struct px_ui_set *set, const char *path, struct px_ui_route *out)
{
    memset(out, 0, sizeof(*out));
    out->status = 404;
    if (strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0) {
        out->status = path[1] == '\0' ? 302 : 301;
        out->location = "/ui/";
        return;
    }
    if (strncmp(path, "/ui/", 4) != 0)
        return;
    const char *rest = path + 4;
    if (rest[0] == '\0' || strcmp(rest, "index.html") == 0) {
        out->file = px_ui_find(set, "index.html");
        out->status = out->file ? 200 : 404;
        out->cache = PX_UI_REVALIDATE;
        return;
    }
    enum px_ui_cache cache = PX_UI_REVALIDATE;
    if (strncmp(rest, "assets/", 7) == 0) {
        const char *ver = rest + 7, *slash = strchr(ver, '/');
        if (slash == NULL || slash == ver)
            return;
        size_t vl = strlen(set->version);
        if ((size_t)(slash - ver) == vl && strncmp(ver, set->version, vl) == 0)
            cache = PX_UI_IMMUTABLE;
        rest = slash + 1;
    }
    if (strchr(rest, '/') != NULL)
        return;
    const struct px_ui_file *f = px_ui_find(set, rest);
    if (f == NULL || ui_is_html(f))
        return; /* pages live at /ui/ only: one URL each */
    out->status = 200;
    out->file = f;
    out->cache = cache;
}

/* Compares one entity tag (W/ prefix ignored: weak comparison) with etag. */
static int ui_tag_equal(const char *tag, size_t n, const char *etag)
{
    if (n >= 2 && tag[0] == 'W' && tag[1] == '/') {
        tag += 2;
        n -= 2;
    }
    const char *e = etag;
    if (strncmp(e, "W/", 2) == 0)
        e += 2;
    return strlen(e) == n && memcmp(tag, e, n) == 0;
}

int px_ui_etag_matches(const char *header, const char *etag)
{
    if (header == NULL)
        return 0;
    const char *p = header;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return 0;
        if (*p == '*')
            return 1;
        const char *start = p;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return 0; /* malformed: no match, so the full answer is sent */
        const char *close = strchr(p + 1, '"');
        if (close == NULL)
            return 0;
        p = close + 1;
        if (ui_tag_equal(start, (size_t)(p - start), etag))
            return 1;
    }
}
