/*
 * ap_metrics: a small Prometheus registry (text exposition format 0.0.4).
 * Counters and gauges are identified by a metric name plus a label string
 * (`route="messages",status="200"`), histograms have fixed buckets. Values
 * live in a tsearch tree; rendering sorts by name so each family's # HELP
 * and # TYPE lines come once. Written by hand: no Debian package offers a C
 * Prometheus client we could use on a libevent loop.
 */
#ifndef AP_METRICS_H
#define AP_METRICS_H

#include <stddef.h>

struct evbuffer;
struct ap_metrics;

enum ap_metric_type { AP_COUNTER, AP_GAUGE, AP_HISTOGRAM };

struct ap_metrics *ap_metrics_new(void);
void ap_metrics_free(struct ap_metrics *m);

/* Declares a family (name, type, help). Must precede its use. 0 or -1. */
int ap_metrics_define(struct ap_metrics *m, const char *name, enum ap_metric_type type, const char *help);

/* Adds to a counter / sets a gauge; labels may be "" (none). Unknown families are ignored. */
void ap_metrics_add(struct ap_metrics *m, const char *name, const char *labels, double v);
void ap_metrics_set(struct ap_metrics *m, const char *name, const char *labels, double v);
/* Records one observation in a histogram (seconds). */
void ap_metrics_observe(struct ap_metrics *m, const char *name, const char *labels, double v);

/*
 * The same, through a handle: the series of a family and a label string,
 * created on first use (NULL for an unknown family, or out of memory; the
 * calls below then do nothing). A handle stays valid until ap_metrics_free,
 * so a caller that sees the same labels again and again keeps it instead of
 * building and looking up the label string each time.
 */
struct ap_metrics_series;
struct ap_metrics_series *ap_metrics_series(struct ap_metrics *m, const char *name, const char *labels);
void ap_metrics_series_add(struct ap_metrics_series *s, double v);
void ap_metrics_series_observe(struct ap_metrics_series *s, double v);

/* Writes the exposition text. 0 or -1. */
int ap_metrics_render(const struct ap_metrics *m, struct evbuffer *out);

/* Escapes a label value (\\, ", newline) into out; returns out. */
char *ap_metrics_label(char *out, size_t n, const char *value);

#endif
