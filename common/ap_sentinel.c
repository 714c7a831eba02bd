/*
 * The pure part of ap_sentinel (see ap_sentinel.h): configuration, the
 * replies a sentinel and a Redis server give, the order to ask sentinels in.
 * No I/O here, so the unit tests feed it real RESP replies.
 */
#include "ap_sentinel.h"

#include "ap_env.h"
#include "ap_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sentinel_fail(char *err, size_t errn, const char *fmt, const char *what, size_t len)
{
    snprintf(err, errn, fmt, (int)len, what);
    return -1;
}

/* One "host[:port]" or "[v6]:port" of length len. */
static int sentinel_parse_one(const char *s, size_t len, struct ap_hostport *out, char *err, size_t errn)
{
    const char *hs = s, *he, *p;
    if (len > 0 && s[0] == '[') {
        he = memchr(s, ']', len);
        if (he == NULL)
            return sentinel_fail(err, errn, "'%.*s': missing ']'", s, len);
        hs = s + 1;
        p = he + 1;
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) != NULL)
            return sentinel_fail(err, errn, "'%.*s': write an IPv6 address as [addr]:port", s, len);
        he = colon != NULL ? colon : s + len;
        p = he;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof(out->host))
        return sentinel_fail(err, errn, "'%.*s': no host", s, len);
    memcpy(out->host, hs, hl);
    out->host[hl] = '\0';
    out->port = AP_SENTINEL_DEFAULT_PORT;
    if (p < s + len) {
        if (*p != ':' || p + 1 == s + len)
            return sentinel_fail(err, errn, "'%.*s': expected host:port", s, len);
        long port = 0;
        for (const char *q = p + 1; q < s + len; q++) {
            if (*q < '0' || *q > '9' || port > 65535)
                return sentinel_fail(err, errn, "'%.*s': bad port", s, len);
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535)
            return sentinel_fail(err, errn, "'%.*s': bad port", s, len);
        out->port = (int)port;
    }
    return 0;
}

int ap_sentinel_parse_list(const char *list, struct ap_sentinel_cfg *cfg, char *err, size_t errn)
{
    cfg->n = 0;
    const char *s = list;
    for (;;) {
        const char *end = s + strcspn(s, ",");
        const char *a = s, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a == b) {
            snprintf(err, errn, "empty entry in the list");
            return -1;
        }
        if (cfg->n == AP_SENTINELS_MAX) {
            snprintf(err, errn, "more than %d sentinels", AP_SENTINELS_MAX);
            return -1;
        }
        struct ap_hostport *hp = &cfg->addr[cfg->n];
        if (sentinel_parse_one(a, (size_t)(b - a), hp, err, errn) < 0)
            return -1;
        for (size_t i = 0; i < cfg->n; i++)
            if (cfg->addr[i].port == hp->port && strcmp(cfg->addr[i].host, hp->host) == 0)
                return sentinel_fail(err, errn, "'%.*s' is listed twice", a, (size_t)(b - a));
        cfg->n++;
        if (*end == '\0')
            return 0;
        s = end + 1;
    }
}

int ap_sentinel_cfg_env(struct ap_sentinel_cfg *cfg)
{
    int bad = 0;
    memset(cfg, 0, sizeof(*cfg));
    const char *master = ap_env_str("REDIS_SENTINEL_MASTER", "mymaster");
    if (strlen(master) >= sizeof(cfg->master) || strpbrk(master, " \t\r\n") != NULL) {
        ap_error(NULL, "config: REDIS_SENTINEL_MASTER must be one word of at most %zu characters",
                 sizeof(cfg->master) - 1);
        bad = -1;
    } else {
        memcpy(cfg->master, master, strlen(master) + 1);
    }
    const char *pw = ap_env_str("REDIS_SENTINEL_PASSWORD", "");
    if (strlen(pw) >= sizeof(cfg->password)) {
        ap_error(NULL, "config: REDIS_SENTINEL_PASSWORD is too long");
        bad = -1;
    } else {
        memcpy(cfg->password, pw, strlen(pw) + 1);
    }
    const char *list = ap_env_str("REDIS_SENTINELS", NULL);
    char err[400];
    if (list != NULL && ap_sentinel_parse_list(list, cfg, err, sizeof(err)) < 0) {
        ap_error(NULL, "config: REDIS_SENTINELS: %s (expected host:port,host:port,...)", err);
        cfg->n = 0;
        bad = -1;
    }
    return bad;
}

int ap_sentinel_master_reply(const redisReply *rep, char *host, size_t hostn, int *port)
{
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
        return -1;
    if (rep->type == REDIS_REPLY_NIL)
        return 0;
    if (rep->type != REDIS_REPLY_ARRAY)
        return -1;
    if (rep->elements == 0)
        return 0;
    if (rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING)
        return -1;
    const redisReply *h = rep->element[0], *p = rep->element[1];
    if (h->len == 0 || h->len >= hostn || memchr(h->str, '\0', h->len) != NULL)
        return -1;
    char *end;
    long v = strtol(p->str, &end, 10);
    if (p->len == 0 || *end != '\0' || v < 1 || v > 65535)
        return -1;
    memcpy(host, h->str, h->len);
    host[h->len] = '\0';
    *port = (int)v;
    return 1;
}

enum ap_redis_role ap_sentinel_role(const redisReply *rep)
{
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1)
        return AP_ROLE_UNKNOWN;
    const redisReply *r = rep->element[0];
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        return AP_ROLE_UNKNOWN;
    if (strcmp(r->str, "master") == 0)
        return AP_ROLE_MASTER;
    if (strcmp(r->str, "slave") == 0 || strcmp(r->str, "replica") == 0)
        return AP_ROLE_REPLICA;
    if (strcmp(r->str, "sentinel") == 0)
        return AP_ROLE_SENTINEL;
    return AP_ROLE_UNKNOWN;
}

const char *ap_sentinel_role_name(enum ap_redis_role role)
{
    switch (role) {
    case AP_ROLE_MASTER:
        return "master";
    case AP_ROLE_REPLICA:
        return "replica";
    case AP_ROLE_SENTINEL:
        return "sentinel";
    default:
        return "unknown";
    }
}

int ap_sentinel_switch_msg(const char *payload, size_t len, const char *master, char *host, size_t hostn,
                           int *port)
{
    /* Five words separated by single spaces; the master name never holds a space. */
    const char *w[5];
    size_t wl[5], n = 0;
    const char *p = payload, *end = payload + len;
    while (p < end && n < 5) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *we = sp != NULL ? sp : end;
        if (we == p)
            return -1;
        w[n] = p;
        wl[n++] = (size_t)(we - p);
        p = sp != NULL ? sp + 1 : end;
        if (sp != NULL && p == end)
            return -1;
    }
    if (n != 5 || p != end)
        return -1;
    char *e;
    char num[8];
    if (wl[4] >= sizeof(num))
        return -1;
    memcpy(num, w[4], wl[4]);
    num[wl[4]] = '\0';
    long v = strtol(num, &e, 10);
    if (*e != '\0' || v < 1 || v > 65535 || wl[3] >= hostn || memchr(w[3], '\0', wl[3]) != NULL)
        return -1;
    if (wl[0] != strlen(master) || memcmp(w[0], master, wl[0]) != 0)
        return 0;
    memcpy(host, w[3], wl[3]);
    host[wl[3]] = '\0';
    *port = (int)v;
    return 1;
}

void ap_sentinel_promote(struct ap_sentinel_cfg *cfg, size_t i)
{
    if (i == 0 || i >= cfg->n)
        return;
    struct ap_hostport first = cfg->addr[i];
    memmove(&cfg->addr[1], &cfg->addr[0], i * sizeof(cfg->addr[0]));
    cfg->addr[0] = first;
}

void ap_hostport_format(const char *host, int port, char *out, size_t n)
{
    if (strchr(host, ':') != NULL)
        snprintf(out, n, "[%s]:%d", host, port);
    else
        snprintf(out, n, "%s:%d", host, port);
}
