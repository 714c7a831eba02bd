/* Proxy configuration from the environment (docs/contract.md section 2, plus our limits). */
#include "px.h"

#include "ap_env.h"
#include "ap_keys.h"
#include "ap_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cfg_copy(char *dst, size_t n, const char *name, const char *v)
{
    if (strlen(v) >= n) {
        ap_error(NULL, "config: %s is too long (at most %zu characters)", name, n - 1);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int px_config_load(struct px_config *c)
{
    long port;
    int bad = 0;

    memset(c, 0, sizeof(*c));
    bad |= ap_env_long("PROXY_PORT", 8180, 0, 65535, &port);
    c->port = (int)port;
    bad |= cfg_copy(c->bind, sizeof(c->bind), "PROXY_BIND", ap_env_str("PROXY_BIND", "0.0.0.0"));

    const char *up = ap_env_str("UPSTREAM_URL", "http://localhost:8080");
    bad |= cfg_copy(c->upstream_url, sizeof(c->upstream_url), "UPSTREAM_URL", up);
    size_t ul = strlen(c->upstream_url);
    while (ul > 0 && c->upstream_url[ul - 1] == '/')
        c->upstream_url[--ul] = '\0';
    if (strncmp(up, "http://", 7) != 0 && strncmp(up, "https://", 8) != 0) {
        ap_error(NULL, "config: UPSTREAM_URL=%s must start with http:// or https://", up);
        bad = -1;
    }
    const char *fmt = ap_env_str("UPSTREAM_FORMAT", "anthropic");
    if (strcmp(fmt, "anthropic") != 0 && strcmp(fmt, "openai") != 0) {
        ap_error(NULL, "config: UPSTREAM_FORMAT=%s must be anthropic or openai", fmt);
        bad = -1;
    }
    c->upstream_openai = strcmp(fmt, "openai") == 0;
    const char *uk = ap_env_str("UPSTREAM_API_KEY", NULL);
    c->upstream_api_key = uk ? strdup(uk) : NULL;

    const char *rurl = ap_env_str("REDIS_URL", "redis://127.0.0.1:6379/0");
    if (ap_redis_url_parse(rurl, &c->redis) < 0) {
        /* The URL may hold a password: do not echo it. */
        ap_error(NULL, "config: REDIS_URL is not of the form redis://[[user]:password@]host[:port][/db]");
        bad = -1;
    }
    bad |= ap_sentinel_cfg_env(&c->sentinel);
    /* With Sentinel a failover must not lose a counted request: one replica holds each batch. */
    bad |= ap_env_long("REDIS_MIN_REPLICAS_ACK", c->sentinel.n > 0 ? 1 : 0, 0, 64, &c->redis_min_acks);
    bad |= ap_env_long("REDIS_WAIT_TIMEOUT_MS", 200, 1, 60000, &c->redis_wait_ms);
    bad |= cfg_copy(c->redis_prefix, sizeof(c->redis_prefix), "REDIS_PREFIX", ap_env_str("REDIS_PREFIX", "ap:"));

    const char *ak = ap_env_str("ADMIN_KEY", NULL);
    c->admin_key = ak ? strdup(ak) : NULL;
    bad |= cfg_copy(c->fallback_path, sizeof(c->fallback_path), "FALLBACK_CONFIG",
                    ap_env_str("FALLBACK_CONFIG", "./fallback.json"));
    bad |= cfg_copy(c->keys_file, sizeof(c->keys_file), "KEYS_FILE", ap_env_str("KEYS_FILE", ""));

    const char *tz = ap_env_str("USAGE_TZ", "+00:00");
    if (ap_parse_utc_offset(tz, &c->tz_offset) < 0) {
        ap_error(NULL, "config: USAGE_TZ=%s is not a UTC offset like +08:00", tz);
        bad = -1;
    }
    bad |= ap_env_long("MAX_BODY_BYTES", 32L << 20, 1024, 1L << 30, &c->max_body);
    bad |= ap_env_long("MAX_HEADER_BYTES", 64L << 10, 1024, 1L << 20, &c->max_headers);
    bad |= ap_env_long("CLIENT_TIMEOUT_SECONDS", 60, 1, 86400, &c->client_timeout);
    bad |= ap_env_long("REQUEST_READ_TIMEOUT_SECONDS", 30, 1, 86400, &c->request_read_s);
    bad |= ap_env_long("UPSTREAM_CONNECT_TIMEOUT_MS", 10000, 1, 600000, &c->upstream_connect_ms);
    bad |= ap_env_long("UPSTREAM_READ_TIMEOUT_SECONDS", 300, 1, 86400, &c->upstream_read_s);
    bad |= ap_env_long("STREAM_BUFFER_BYTES", 256L << 10, 4096, 1L << 30, &c->stream_buffer);
    bad |= ap_env_long("USAGE_FLUSH_MS", 100, 1, 60000, &c->usage_flush_ms);
    bad |= ap_env_long("USAGE_DURABLE", 1, 0, 1, &c->usage_durable);
    bad |= ap_env_long("USAGE_COMMIT_WINDOW_US", 500, 0, 100000, &c->usage_commit_us);
    bad |= ap_env_long("SHUTDOWN_GRACE_SECONDS", 30, 0, 3600, &c->shutdown_grace_s);
    bad |= ap_env_long("MAX_CONNECTIONS", 16384, 1, 1L << 22, &c->max_connections);
    const char *pt = ap_env_str("PASSTHROUGH", "GET /v1/models,GET /v1/models/*,POST /v1/messages/count_tokens");
    const char *perr = NULL;
    c->passthrough = px_allow_parse(pt, &perr);
    if (c->passthrough == NULL) {
        ap_error(NULL, "config: PASSTHROUGH: %s", perr);
        bad = -1;
    }
    ap_url_redact(c->upstream_url, c->upstream_shown, sizeof(c->upstream_shown));
    /* At most 10 s: /admin/fleet lists the replicas seen in the last 30 s. */
    bad |= ap_env_long("FLEET_HEARTBEAT_MS", 5000, 100, 10000, &c->fleet_heartbeat_ms);

    bad |= cfg_copy(c->prices_path, sizeof(c->prices_path), "PRICES_CONFIG", ap_env_str("PRICES_CONFIG", ""));
    const char *fm = ap_env_str("POLICY_FAIL_MODE", "open");
    if (strcmp(fm, "open") != 0 && strcmp(fm, "closed") != 0) {
        ap_error(NULL, "config: POLICY_FAIL_MODE=%s must be open or closed", fm);
        bad = -1;
    }
    c->policy_fail_open = strcmp(fm, "closed") != 0;
    double lease;
    bad |= ap_env_double("POLICY_LEASE_SECONDS", 20, 0.2, 30, &lease);
    c->policy_lease_ms = (long)(lease * 1000);
    bad |= ap_env_long("POLICY_TIMEOUT_MS", 1000, 1, 60000, &c->policy_timeout_ms);
    bad |= ap_env_long("POLICY_DEFAULT_MAX_TOKENS", 4096, 0, 100000000, &c->policy_default_max_tokens);

    const char *iid = ap_env_str("INSTANCE_ID", NULL);
    if (iid != NULL) {
        bad |= cfg_copy(c->instance_id, sizeof(c->instance_id), "INSTANCE_ID", iid);
    } else {
        char host[32] = "proxy", rnd[9];
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        if (ap_random_hex(rnd, 4) < 0)
            bad = -1;
        snprintf(c->instance_id, sizeof(c->instance_id), "%s-%d-%s", host, (int)getpid(), rnd);
    }
    return bad ? -1 : 0;
}

void px_config_free(struct px_config *c)
{
    free(c->upstream_api_key);
    free(c->admin_key);
    px_allow_free(c->passthrough);
    c->upstream_api_key = c->admin_key = NULL;
    c->passthrough = NULL;
}
