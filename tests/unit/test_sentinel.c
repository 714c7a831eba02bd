/*
 * ap_sentinel's pure part: REDIS_SENTINELS parsing, the replies a sentinel and
 * a Redis server give (built from real RESP bytes with hiredis' own reader,
 * as they arrive on the wire), +switch-master messages, the order sentinels
 * are asked in, and the configuration from the environment.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_sentinel.h"

/* One reply parsed from len bytes of RESP; freed with freeReplyObject. */
static redisReply *resp_n(const char *wire, size_t len)
{
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, wire, len), REDIS_OK);
    assert_int_equal(redisReaderGetReply(rd, &rep), REDIS_OK);
    assert_non_null(rep);
    redisReaderFree(rd);
    return rep;
}

static redisReply *resp(const char *wire)
{
    return resp_n(wire, strlen(wire));
}

/* ---- REDIS_SENTINELS ---- */

struct list_case {
    const char *list;
    int rc;
    size_t n;
    const char *want; /* the parsed list printed back, "h:p h:p" */
    const char *err;  /* a substring of the reason */
};

static void run_list(void **state)
{
    const struct list_case *c = *state;
    struct ap_sentinel_cfg cfg;
    char err[400] = "", got[2000] = "";
    memset(&cfg, 0x5a, sizeof(cfg));
    int rc = ap_sentinel_parse_list(c->list, &cfg, err, sizeof(err));
    if (rc != c->rc)
        fail_msg("ap_sentinel_parse_list(\"%s\") returned %d (%s), want %d", c->list, rc, err, c->rc);
    if (rc < 0) {
        if (strstr(err, c->err) == NULL)
            fail_msg("reason \"%s\" does not say \"%s\"", err, c->err);
        return;
    }
    assert_int_equal(cfg.n, c->n);
    for (size_t i = 0; i < cfg.n; i++) {
        char one[300];
        ap_hostport_format(cfg.addr[i].host, cfg.addr[i].port, one, sizeof(one));
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "", one);
    }
    assert_string_equal(got, c->want);
}

#define LIST_OK(l, n, want) {"list ok: " l, run_list, NULL, NULL, &(struct list_case){l, 0, n, want, NULL}}
#define LIST_BAD(name, l, err) {"list bad: " name, run_list, NULL, NULL, &(struct list_case){l, -1, 0, NULL, err}}

static void test_list_too_many(void **state)
{
    (void)state;
    char list[2000] = "";
    for (int i = 0; i < AP_SENTINELS_MAX + 1; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%sh%d:1", i ? "," : "", i);
    struct ap_sentinel_cfg cfg;
    char err[200];
    assert_int_equal(ap_sentinel_parse_list(list, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "more than 16"));
    /* exactly the maximum is fine */
    *strrchr(list, ',') = '\0';
    assert_int_equal(ap_sentinel_parse_list(list, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.n, AP_SENTINELS_MAX);
}

/* ---- SENTINEL get-master-addr-by-name ---- */

struct master_case {
    const char *wire;
    size_t len;
    int rc;
    const char *host;
    int port;
};

static void run_master(void **state)
{
    const struct master_case *c = *state;
    redisReply *rep = resp_n(c->wire, c->len);
    char host[256] = "untouched";
    int port = -1;
    int rc = ap_sentinel_master_reply(rep, host, sizeof(host), &port);
    freeReplyObject(rep);
    assert_int_equal(rc, c->rc);
    if (rc == 1) {
        assert_string_equal(host, c->host);
        assert_int_equal(port, c->port);
    } else {
        assert_string_equal(host, "untouched");
        assert_int_equal(port, -1);
    }
}

#define MASTER(name, wire, rc, host, port) \
    {"master reply: " name, run_master, NULL, NULL, &(struct master_case){wire, sizeof(wire) - 1, rc, host, port}}

static void test_master_reply_null_and_small_buffer(void **state)
{
    (void)state;
    char host[8];
    int port;
    assert_int_equal(ap_sentinel_master_reply(NULL, host, sizeof(host), &port), -1);
    redisReply *rep = resp("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n");
    assert_int_equal(ap_sentinel_master_reply(rep, host, sizeof(host), &port), -1); /* 9 bytes do not fit in 8 */
    freeReplyObject(rep);
}

/* ---- ROLE ---- */

struct role_case {
    const char *wire;
    enum ap_redis_role role;
};

static void run_role(void **state)
{
    const struct role_case *c = *state;
    redisReply *rep = resp(c->wire);
    enum ap_redis_role got = ap_sentinel_role(rep);
    freeReplyObject(rep);
    if (got != c->role)
        fail_msg("ROLE %s: got %s, want %s", c->wire, ap_sentinel_role_name(got), ap_sentinel_role_name(c->role));
}

#define ROLE(name, wire, role) {"role: " name, run_role, NULL, NULL, &(struct role_case){wire, role}}

static void test_role_null_and_names(void **state)
{
    (void)state;
    assert_int_equal(ap_sentinel_role(NULL), AP_ROLE_UNKNOWN);
    assert_string_equal(ap_sentinel_role_name(AP_ROLE_MASTER), "master");
    assert_string_equal(ap_sentinel_role_name(AP_ROLE_REPLICA), "replica");
    assert_string_equal(ap_sentinel_role_name(AP_ROLE_SENTINEL), "sentinel");
    assert_string_equal(ap_sentinel_role_name(AP_ROLE_UNKNOWN), "unknown");
}

/* ---- +switch-master ---- */

struct switch_case {
    const char *msg;
    const char *master;
    int rc;
    const char *host;
    int port;
};

static void run_switch(void **state)
{
    const struct switch_case *c = *state;
    char host[256] = "untouched";
    int port = -1;
    int rc = ap_sentinel_switch_msg(c->msg, strlen(c->msg), c->master, host, sizeof(host), &port);
    if (rc != c->rc)
        fail_msg("switch \"%s\" for %s: got %d, want %d", c->msg, c->master, rc, c->rc);
    if (rc == 1) {
        assert_string_equal(host, c->host);
        assert_int_equal(port, c->port);
    } else {
        assert_string_equal(host, "untouched");
    }
}

#define SWITCH(name, msg, master, rc, host, port) \
    {"switch: " name, run_switch, NULL, NULL, &(struct switch_case){msg, master, rc, host, port}}

static void test_switch_not_nul_terminated(void **state)
{
    (void)state;
    /* hiredis hands a bulk string with its length; parse only that many bytes */
    const char buf[] = "mymaster 10.0.0.1 6379 10.0.0.2 6380XXXX";
    char host[64];
    int port;
    assert_int_equal(ap_sentinel_switch_msg(buf, strlen(buf) - 4, "mymaster", host, sizeof(host), &port), 1);
    assert_string_equal(host, "10.0.0.2");
    assert_int_equal(port, 6380);
    assert_int_equal(ap_sentinel_switch_msg(buf, strlen(buf), "mymaster", host, sizeof(host), &port), -1);
}

/* ---- order ---- */

static void test_promote(void **state)
{
    (void)state;
    struct ap_sentinel_cfg cfg;
    char err[100];
    assert_int_equal(ap_sentinel_parse_list("a:1,b:2,c:3,d:4", &cfg, err, sizeof(err)), 0);
    ap_sentinel_promote(&cfg, 2);
    const char *want1[] = {"c", "a", "b", "d"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(cfg.addr[i].host, want1[i]);
    assert_int_equal(cfg.addr[0].port, 3);
    ap_sentinel_promote(&cfg, 0); /* already first */
    ap_sentinel_promote(&cfg, 4); /* out of range: nothing */
    for (int i = 0; i < 4; i++)
        assert_string_equal(cfg.addr[i].host, want1[i]);
    ap_sentinel_promote(&cfg, 3);
    const char *want2[] = {"d", "c", "a", "b"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(cfg.addr[i].host, want2[i]);
}

static void test_hostport_format(void **state)
{
    (void)state;
    char out[64];
    ap_hostport_format("10.0.0.1", 6379, out, sizeof(out));
    assert_string_equal(out, "10.0.0.1:6379");
    ap_hostport_format("::1", 26379, out, sizeof(out));
    assert_string_equal(out, "[::1]:26379");
    ap_hostport_format("redis-master.internal", 1, out, 10);
    assert_string_equal(out, "redis-mas"); /* truncated, terminated */
}

/* ---- environment ---- */

static void test_cfg_env(void **state)
{
    (void)state;
    struct ap_sentinel_cfg cfg;
    unsetenv("REDIS_SENTINELS");
    unsetenv("REDIS_SENTINEL_MASTER");
    unsetenv("REDIS_SENTINEL_PASSWORD");
    assert_int_equal(ap_sentinel_cfg_env(&cfg), 0);
    assert_int_equal(cfg.n, 0);
    assert_string_equal(cfg.master, "mymaster");
    assert_string_equal(cfg.password, "");

    setenv("REDIS_SENTINELS", "s1:26379, s2 ,[::1]:5000", 1);
    setenv("REDIS_SENTINEL_MASTER", "ap-main", 1);
    setenv("REDIS_SENTINEL_PASSWORD", "pw", 1);
    assert_int_equal(ap_sentinel_cfg_env(&cfg), 0);
    assert_int_equal(cfg.n, 3);
    assert_string_equal(cfg.addr[1].host, "s2");
    assert_int_equal(cfg.addr[1].port, AP_SENTINEL_DEFAULT_PORT);
    assert_string_equal(cfg.addr[2].host, "::1");
    assert_string_equal(cfg.master, "ap-main");
    assert_string_equal(cfg.password, "pw");

    setenv("REDIS_SENTINELS", "s1:0", 1);
    assert_int_equal(ap_sentinel_cfg_env(&cfg), -1);
    assert_int_equal(cfg.n, 0);
    setenv("REDIS_SENTINELS", "s1", 1);
    setenv("REDIS_SENTINEL_MASTER", "two words", 1);
    assert_int_equal(ap_sentinel_cfg_env(&cfg), -1);
    unsetenv("REDIS_SENTINELS");
    unsetenv("REDIS_SENTINEL_MASTER");
    unsetenv("REDIS_SENTINEL_PASSWORD");
}

static const struct CMUnitTest tests[] = {
    LIST_OK("127.0.0.1:26379", 1, "127.0.0.1:26379"),
    LIST_OK("a:1,b:2,c:3", 3, "a:1 b:2 c:3"),
    LIST_OK(" a:1 , b:2\t,c:3 ", 3, "a:1 b:2 c:3"),
    LIST_OK("sentinel1", 1, "sentinel1:26379"),
    LIST_OK("sentinel1,sentinel2:26380", 2, "sentinel1:26379 sentinel2:26380"),
    LIST_OK("[::1]:5000,[fe80::2]", 2, "[::1]:5000 [fe80::2]:26379"),
    LIST_OK("h:65535", 1, "h:65535"),
    LIST_OK("a:1,a:2", 2, "a:1 a:2"),
    LIST_BAD("empty", "", "empty entry"),
    LIST_BAD("blank", "  ", "empty entry"),
    LIST_BAD("trailing comma", "a:1,", "empty entry"),
    LIST_BAD("double comma", "a:1,,b:2", "empty entry"),
    LIST_BAD("port 0", "a:0", "bad port"),
    LIST_BAD("port 65536", "a:65536", "bad port"),
    LIST_BAD("huge port", "a:99999999999999999999", "bad port"),
    LIST_BAD("port not a number", "a:x1", "bad port"),
    LIST_BAD("port with blank inside", "a:1 2", "bad port"),
    LIST_BAD("empty port", "a:", "expected host:port"),
    LIST_BAD("no host", ":26379", "no host"),
    LIST_BAD("bare IPv6", "::1:26379", "[addr]:port"),
    LIST_BAD("unterminated IPv6", "[::1:26379", "missing ']'"),
    LIST_BAD("junk after IPv6", "[::1]x", "expected host:port"),
    LIST_BAD("empty IPv6", "[]:1", "no host"),
    LIST_BAD("duplicate", "a:1,b:2,a:1", "listed twice"),
    LIST_BAD("duplicate by default port", "a,a:26379", "listed twice"),
    {"list: at most 16 sentinels", test_list_too_many, NULL, NULL, NULL},
    MASTER("address", "*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n", 1, "127.0.0.1", 6380),
    MASTER("host name", "*2\r\n$12\r\nredis-master\r\n$4\r\n6379\r\n", 1, "redis-master", 6379),
    MASTER("unknown master: nil", "*-1\r\n", 0, NULL, 0),
    MASTER("unknown master: nil bulk", "$-1\r\n", 0, NULL, 0),
    MASTER("empty array", "*0\r\n", 0, NULL, 0),
    MASTER("error", "-IDONTKNOW No such master with that name\r\n", -1, NULL, 0),
    MASTER("one element", "*1\r\n$9\r\n127.0.0.1\r\n", -1, NULL, 0),
    MASTER("three elements", "*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nx\r\n", -1, NULL, 0),
    MASTER("port not a number", "*2\r\n$9\r\n127.0.0.1\r\n$2\r\nxx\r\n", -1, NULL, 0),
    MASTER("port 0", "*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n", -1, NULL, 0),
    MASTER("port 70000", "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n70000\r\n", -1, NULL, 0),
    MASTER("empty port", "*2\r\n$9\r\n127.0.0.1\r\n$0\r\n\r\n", -1, NULL, 0),
    MASTER("empty host", "*2\r\n$0\r\n\r\n$4\r\n6379\r\n", -1, NULL, 0),
    MASTER("NUL in host", "*2\r\n$3\r\na\0b\r\n$4\r\n6379\r\n", -1, NULL, 0),
    MASTER("integer port", "*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n", -1, NULL, 0),
    MASTER("status instead of array", "+OK\r\n", -1, NULL, 0),
    {"master reply: NULL, host longer than the buffer", test_master_reply_null_and_small_buffer, NULL, NULL, NULL},
    ROLE("master with a replica", "*3\r\n$6\r\nmaster\r\n:3129659\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9001\r\n$7\r\n3129242\r\n",
         AP_ROLE_MASTER),
    ROLE("master alone", "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n", AP_ROLE_MASTER),
    ROLE("replica", "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9000\r\n$9\r\nconnected\r\n:3167038\r\n", AP_ROLE_REPLICA),
    ROLE("replica syncing", "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9000\r\n$4\r\nsync\r\n:-1\r\n", AP_ROLE_REPLICA),
    ROLE("sentinel", "*2\r\n$8\r\nsentinel\r\n*1\r\n$8\r\nmymaster\r\n", AP_ROLE_SENTINEL),
    ROLE("error (old server)", "-ERR unknown command 'ROLE'\r\n", AP_ROLE_UNKNOWN),
    ROLE("empty array", "*0\r\n", AP_ROLE_UNKNOWN),
    ROLE("first element an integer", "*1\r\n:1\r\n", AP_ROLE_UNKNOWN),
    ROLE("unknown word", "*1\r\n$7\r\nmasters\r\n", AP_ROLE_UNKNOWN),
    ROLE("status PONG", "+PONG\r\n", AP_ROLE_UNKNOWN),
    {"role: NULL reply, names", test_role_null_and_names, NULL, NULL, NULL},
    SWITCH("ours", "mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster", 1, "127.0.0.1", 6380),
    SWITCH("host names", "ap old-host 6379 new-host 7000", "ap", 1, "new-host", 7000),
    SWITCH("IPv6", "mymaster ::1 6379 fe80::2 6380", "mymaster", 1, "fe80::2", 6380),
    SWITCH("another master", "other 127.0.0.1 6379 127.0.0.1 6380", "mymaster", 0, NULL, 0),
    SWITCH("a prefix of ours", "mymast 127.0.0.1 6379 127.0.0.1 6380", "mymaster", 0, NULL, 0),
    SWITCH("ours as a prefix", "mymaster2 127.0.0.1 6379 127.0.0.1 6380", "mymaster", 0, NULL, 0),
    SWITCH("four words", "mymaster 127.0.0.1 6379 127.0.0.1", "mymaster", -1, NULL, 0),
    SWITCH("six words", "mymaster a 1 b 2 c", "mymaster", -1, NULL, 0),
    SWITCH("double space", "mymaster a 1  b 2", "mymaster", -1, NULL, 0),
    SWITCH("trailing space", "mymaster a 1 b 2 ", "mymaster", -1, NULL, 0),
    SWITCH("port not a number", "mymaster a 1 b x", "mymaster", -1, NULL, 0),
    SWITCH("port 0", "mymaster a 1 b 0", "mymaster", -1, NULL, 0),
    SWITCH("port too long", "mymaster a 1 b 123456789", "mymaster", -1, NULL, 0),
    SWITCH("empty", "", "mymaster", -1, NULL, 0),
    {"switch: only the given length is read", test_switch_not_nul_terminated, NULL, NULL, NULL},
    {"order: the sentinel that answered moves to the front", test_promote, NULL, NULL, NULL},
    {"host:port formatting (IPv6 in brackets, truncation)", test_hostport_format, NULL, NULL, NULL},
    {"environment: defaults, a list, bad values", test_cfg_env, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("sentinel", tests, NULL, NULL);
}
