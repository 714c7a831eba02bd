/* Prometheus registry; see ap_metrics.h. */
#include "ap_metrics.h"

#include <event2/buffer.h>
#include <math.h>
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Latency buckets in seconds: sub-millisecond proxy overhead up to long LLM answers. */
static const double metrics_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                         1, 2.5, 5, 10, 30, 60, 120, 300};
#define METRICS_NB (sizeof(metrics_buckets) / sizeof(metrics_buckets[0]))

/*
 * Series per family, at most: labels may come from outside (a model name),
 * and a registry that grows with its input is a memory leak and a scrape
 * that never ends. Past the cap, new label sets share one series labelled
 * overflow="true".
 */
#define METRICS_MAX_SERIES 1000

struct metrics_family {
    char *name;
    char *help;
    enum ap_metric_type type;
    size_t nseries;
};

struct metrics_series {
    char *key;                  /* name + '\x1f' + labels: the sort key */
    struct metrics_series *hnext; /* next in its hash bucket */
    const struct metrics_family *fam;
    const char *labels;         /* points into key */
    double value;               /* counter/gauge; histogram: sum */
    unsigned long long count;   /* histogram */
    unsigned long long buckets[METRICS_NB];
};

#define METRICS_HBUCKETS 1024

struct ap_metrics {
    struct metrics_family *fams;
    size_t nfams;
    void *series;               /* tsearch tree: the sorted order of the exposition */
    /* The same series by hash: samples are added on every request, the tree is for scrapes. */
    struct metrics_series *htab[METRICS_HBUCKETS];
};

static uint32_t metrics_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int metrics_cmp(const void *a, const void *b)
{
    return strcmp(((const struct metrics_series *)a)->key, ((const struct metrics_series *)b)->key);
}

static void metrics_series_free(void *p)
{
    struct metrics_series *s = p;
    free(s->key);
    free(s);
}

struct ap_metrics *ap_metrics_new(void)
{
    return calloc(1, sizeof(struct ap_metrics));
}

void ap_metrics_free(struct ap_metrics *m)
{
    if (m == NULL)
        return;
    tdestroy(m->series, metrics_series_free);
    for (size_t i = 0; i < m->nfams; i++) {
        free(m->fams[i].name);
        free(m->fams[i].help);
    }
    free(m->fams);
    free(m);
}

int ap_metrics_define(struct ap_metrics *m, const char *name, enum ap_metric_type type, const char *help)
{
    struct metrics_family *f = realloc(m->fams, (m->nfams + 1) * sizeof(*f));
    if (f == NULL)
        return -1;
    m->fams = f;
    f[m->nfams].name = strdup(name);
    f[m->nfams].help = strdup(help);
    f[m->nfams].type = type;
    f[m->nfams].nseries = 0;
    if (f[m->nfams].name == NULL || f[m->nfams].help == NULL) {
        free(f[m->nfams].name);
        free(f[m->nfams].help);
        return -1;
    }
    m->nfams++;
    return 0;
}

static struct metrics_family *metrics_family(const struct ap_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nfams; i++)
        if (strcmp(m->fams[i].name, name) == 0)
            return &m->fams[i];
    return NULL;
}

static struct metrics_series *metrics_get(struct ap_metrics *m, const char *name, const char *labels)
{
    char buf[512];
    size_t nl = strlen(name), ll = labels ? strlen(labels) : 0;
    if (nl + ll + 2 > sizeof(buf))
        return NULL;
    memcpy(buf, name, nl);
    buf[nl] = '\x1f';
    memcpy(buf + nl + 1, labels ? labels : "", ll);
    buf[nl + 1 + ll] = '\0';
    uint32_t h = metrics_hash(buf, nl + 1 + ll) % METRICS_HBUCKETS;
    for (struct metrics_series *s = m->htab[h]; s != NULL; s = s->hnext)
        if (strcmp(s->key, buf) == 0)
            return s;
    struct metrics_family *fam = metrics_family(m, name);
    if (fam == NULL)
        return NULL;
    static const char overflow[] = "overflow=\"true\"";
    if (fam->nseries >= METRICS_MAX_SERIES && strcmp(labels ? labels : "", overflow) != 0)
        return metrics_get(m, name, overflow);
    struct metrics_series *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->key = strdup(buf)) == NULL) {
        free(s);
        return NULL;
    }
    s->fam = fam;
    s->labels = s->key + nl + 1;
    if (tsearch(s, &m->series, metrics_cmp) == NULL) {
        metrics_series_free(s);
        return NULL;
    }
    s->hnext = m->htab[h];
    m->htab[h] = s;
    fam->nseries++;
    return s;
}

struct ap_metrics_series *ap_metrics_series(struct ap_metrics *m, const char *name, const char *labels)
{
    return (struct ap_metrics_series *)metrics_get(m, name, labels);
}

void ap_metrics_series_add(struct ap_metrics_series *as, double v)
{
    struct metrics_series *s = (struct metrics_series *)as;
    if (s != NULL)
        s->value += v;
}

void ap_metrics_add(struct ap_metrics *m, const char *name, const char *labels, double v)
{
    ap_metrics_series_add(ap_metrics_series(m, name, labels), v);
}

void ap_metrics_set(struct ap_metrics *m, const char *name, const char *labels, double v)
{
    struct metrics_series *s = metrics_get(m, name, labels);
    if (s != NULL)
        s->value = v;
}

void ap_metrics_series_observe(struct ap_metrics_series *as, double v)
{
    struct metrics_series *s = (struct metrics_series *)as;
    if (s == NULL)
        return;
    s->value += v;
    s->count++;
    for (size_t i = 0; i < METRICS_NB; i++)
        if (v <= metrics_buckets[i])
            s->buckets[i]++;
}

void ap_metrics_observe(struct ap_metrics *m, const char *name, const char *labels, double v)
{
    ap_metrics_series_observe(ap_metrics_series(m, name, labels), v);
}

char *ap_metrics_label(char *out, size_t n, const char *value)
{
    size_t o = 0;
    if (n == 0)
        return out;
    for (const char *p = value ? value : ""; *p != '\0' && o + 3 < n; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

struct metrics_walk {
    struct evbuffer *out;
    const struct metrics_family *last;
    int rc;
};

/* Integers exactly (counters grow large); fractions to 15 digits, which hides summing noise (10 x 0.1 is 1). */
static void metrics_format(char *buf, size_t n, double v)
{
    if (v == floor(v) && fabs(v) <= 9007199254740992.0)
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, "%.15g", v);
}

static void metrics_print_value(struct evbuffer *out, double v)
{
    char buf[64];
    metrics_format(buf, sizeof(buf), v);
    evbuffer_add_printf(out, "%s\n", buf);
}

static void metrics_render_one(const void *node, VISIT which, void *arg)
{
    if (which != postorder && which != leaf)
        return;
    struct metrics_walk *w = arg;
    const struct metrics_series *s = *(const struct metrics_series *const *)node;
    const struct metrics_family *f = s->fam;
    static const char *const types[] = {"counter", "gauge", "histogram"};
    if (f != w->last) {
        evbuffer_add_printf(w->out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->type]);
        w->last = f;
    }
    const char *sep = s->labels[0] ? "," : "";
    if (f->type != AP_HISTOGRAM) {
        if (s->labels[0])
            evbuffer_add_printf(w->out, "%s{%s} ", f->name, s->labels);
        else
            evbuffer_add_printf(w->out, "%s ", f->name);
        metrics_print_value(w->out, s->value);
        return;
    }
    for (size_t i = 0; i < METRICS_NB; i++)
        evbuffer_add_printf(w->out, "%s_bucket{%s%sle=\"%g\"} %llu\n", f->name, s->labels, sep, metrics_buckets[i],
                            s->buckets[i]);
    evbuffer_add_printf(w->out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, s->labels, sep, s->count);
    char sum[64];
    metrics_format(sum, sizeof(sum), s->value);
    evbuffer_add_printf(w->out, "%s_sum%s%s%s %s\n", f->name, s->labels[0] ? "{" : "", s->labels,
                        s->labels[0] ? "}" : "", sum);
    evbuffer_add_printf(w->out, "%s_count%s%s%s %llu\n", f->name, s->labels[0] ? "{" : "", s->labels,
                        s->labels[0] ? "}" : "", s->count);
}

int ap_metrics_render(const struct ap_metrics *m, struct evbuffer *out)
{
    struct metrics_walk w = {out, NULL, 0};
    twalk_r(m->series, metrics_render_one, &w);
    return w.rc;
}
