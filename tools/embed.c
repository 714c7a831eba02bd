/*
 * embed: builds the admin console's static files into the proxy binary.
 *
 *   embed OUT.c FILE...
 *
 * Writes a C source defining px_ui_assets (see proxy/px_ui.h): every FILE's
 * bytes, its content type (from its extension; an unknown extension is an
 * error, so nothing is served as a guess) and its ETag (the first 128 bits of
 * its SHA-256). Files are named by their base name; only [A-Za-z0-9._-] names
 * are accepted, so a name is always a plain path segment.
 *
 * The version is a hash over every non-HTML file (name and content). HTML
 * files have "@ASSET_BASE@" replaced by "assets/<version>", so a page loads
 * its scripts and styles from a path that changes whenever any of them
 * changes: those paths can be cached for good, and only the small HTML page
 * is revalidated. JavaScript modules import each other by relative path, so
 * they resolve under the same versioned base.
 *
 * Runs at build time on the build machine; needs only libc and libcrypto.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN "@ASSET_BASE@"

struct file {
    const char *name;       /* borrowed from argv: the base name */
    const char *type;
    unsigned char *data;    /* owned */
    size_t len;
    int html;
};

static const struct { const char *ext, *type; } types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".json", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
};

static void die(const char *what, const char *name)
{
    fprintf(stderr, "embed: %s: %s\n", name, what);
    exit(1);
}

static const char *type_of(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t e = strlen(types[i].ext);
        if (n > e && strcmp(name + n - e, types[i].ext) == 0)
            return types[i].type;
    }
    return NULL;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die("cannot open", path);
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
        }
    }
    if (buf == NULL || ferror(f))
        die("cannot read", path);
    fclose(f);
    *len = n;
    return buf;
}

/* Replaces every TOKEN in f's data with `with`. */
static void substitute(struct file *f, const char *with)
{
    size_t tl = strlen(TOKEN), wl = strlen(with), count = 0;
    for (size_t i = 0; i + tl <= f->len; i++)
        if (memcmp(f->data + i, TOKEN, tl) == 0)
            count++, i += tl - 1;
    if (count == 0)
        return;
    unsigned char *out = malloc(f->len + count * wl + 1), *o = out;
    if (out == NULL)
        die("out of memory", f->name);
    for (size_t i = 0; i < f->len;) {
        if (i + tl <= f->len && memcmp(f->data + i, TOKEN, tl) == 0) {
            memcpy(o, with, wl);
            o += wl;
            i += tl;
        } else {
            *o++ = f->data[i++];
        }
    }
    free(f->data);
    f->data = out;
    f->len = (size_t)(o - out);
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: embed OUT.c FILE...\n");
        return 2;
    }
    size_t n = (size_t)argc - 2;
    struct file *files = calloc(n, sizeof(*files));
    if (files == NULL)
        die("out of memory", argv[1]);

    EVP_MD_CTX *all = EVP_MD_CTX_new();
    if (all == NULL || EVP_DigestInit_ex(all, EVP_sha256(), NULL) != 1)
        die("no SHA-256", argv[1]);
    for (size_t i = 0; i < n; i++) {
        const char *path = argv[i + 2], *slash = strrchr(path, '/');
        struct file *f = &files[i];
        f->name = slash ? slash + 1 : path;
        if (f->name[0] == '\0' || f->name[0] == '.' || strspn(f->name, "abcdefghijklmnopqrstuvwxyz"
                                                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                                                           strlen(f->name))
            die("file names must be plain [A-Za-z0-9._-] names", path);
        for (size_t j = 0; j < i; j++)
            if (strcmp(files[j].name, f->name) == 0)
                die("two files with this name", path);
        if ((f->type = type_of(f->name)) == NULL)
            die("unknown extension (add it to the table in tools/embed.c)", path);
        f->html = strstr(f->type, "text/html") == f->type;
        f->data = read_all(path, &f->len);
        if (!f->html) {
            EVP_DigestUpdate(all, f->name, strlen(f->name) + 1);
            EVP_DigestUpdate(all, f->data, f->len);
        }
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    char version[17], base[40];
    EVP_DigestFinal_ex(all, d, NULL);
    EVP_MD_CTX_free(all);
    hex(d, 8, version);
    snprintf(base, sizeof(base), "assets/%s", version);

    FILE *out = fopen(argv[1], "w");
    if (out == NULL)
        die("cannot write", argv[1]);
    fprintf(out, "/* Generated by tools/embed.c from the console's static files: do not edit. */\n"
                 "#include \"px_ui.h\"\n\n");
    for (size_t i = 0; i < n; i++) {
        struct file *f = &files[i];
        if (f->html)
            substitute(f, base);
        fprintf(out, "static const unsigned char file_%zu[] = {", i);
        for (size_t j = 0; j < f->len; j++)
            fprintf(out, "%s%u,", j % 24 == 0 ? "\n    " : "", f->data[j]);
        fprintf(out, "%s0};\n", f->len % 24 == 0 ? "\n    " : "");
    }
    fprintf(out, "\nstatic const struct px_ui_file files[] = {\n");
    for (size_t i = 0; i < n; i++) {
        struct file *f = &files[i];
        char etag[33];
        EVP_Digest(f->data, f->len, d, NULL, EVP_sha256(), NULL);
        hex(d, 16, etag);
        fprintf(out, "    {\"%s\", \"%s\", file_%zu, %zu, \"\\\"%s\\\"\"},\n", f->name, f->type, i, f->len, etag);
    }
    fprintf(out, "};\n\nconst struct px_ui_set px_ui_assets = {files, %zu, \"%s\"};\n", n, version);
    if (fclose(out) != 0)
        die("cannot write", argv[1]);
    for (size_t i = 0; i < n; i++)
        free(files[i].data);
    free(files);
    return 0;
}
