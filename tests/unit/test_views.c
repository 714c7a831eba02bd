/*
 * ap_views: the admin JSON documents built from the ap_store read scripts'
 * replies, and ap_redis's reply helpers.
 *
 * Replies are real hiredis redisReply trees: RESP text is fed to hiredis's
 * reader. Most replies are written in a compact JSON notation (' for ")
 * turned into RESP by resp_from(): an array is a RESP array, a string a bulk
 * string, a number an integer reply, null a nil bulk (Lua's false). Raw RESP
 * text is used where the notation cannot say it (error and status replies).
 *
 * Outputs are compared with cJSON_Compare (object member order ignored);
 * orders the contract fixes (days ascending, by_model and keys by total
 * descending) are checked separately with assert_order().
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include "ap_redis.h"
#include "ap_views.h"

/* ---- building replies ---- */

static char *dq(const char *sq)
{
    char *s = strdup(sq);
    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

static cJSON *json(const char *sq)
{
    char *s = dq(sq);
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (j == NULL)
        fail_msg("bad test JSON: %s", sq);
    return j;
}

struct sbuf {
    char *s;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    sb_add(b, tmp, (size_t)n);
}

static void resp_write(struct sbuf *b, const cJSON *j)
{
    if (cJSON_IsArray(j)) {
        sb_printf(b, "*%d\r\n", cJSON_GetArraySize(j));
        const cJSON *e;
        cJSON_ArrayForEach(e, j) resp_write(b, e);
    } else if (cJSON_IsString(j)) {
        sb_printf(b, "$%zu\r\n", strlen(j->valuestring));
        sb_add(b, j->valuestring, strlen(j->valuestring));
        sb_add(b, "\r\n", 2);
    } else if (cJSON_IsNumber(j)) {
        sb_printf(b, ":%lld\r\n", (long long)j->valuedouble);
    } else if (cJSON_IsNull(j) || cJSON_IsFalse(j)) {
        sb_add(b, "$-1\r\n", 5);
    } else {
        fail_msg("resp_write: unsupported JSON type");
    }
}

/* RESP text of a reply written in the JSON notation; caller frees. */
static char *resp_from(const char *sq)
{
    cJSON *j = json(sq);
    struct sbuf b = {0};
    resp_write(&b, j);
    cJSON_Delete(j);
    return b.s;
}

/* Parses RESP text into one reply (freeReplyObject it). */
static redisReply *reply_raw(const char *resp)
{
    redisReader *r = redisReaderCreate();
    assert_non_null(r);
    assert_int_equal(redisReaderFeed(r, resp, strlen(resp)), REDIS_OK);
    void *rep = NULL;
    assert_int_equal(redisReaderGetReply(r, &rep), REDIS_OK);
    redisReaderFree(r);
    if (rep == NULL)
        fail_msg("incomplete RESP: %s", resp);
    return rep;
}

static redisReply *reply(const char *sq)
{
    char *resp = resp_from(sq);
    redisReply *rep = reply_raw(resp);
    free(resp);
    return rep;
}

/* ---- checking outputs ---- */

static void assert_json(const cJSON *got, const char *want_sq)
{
    cJSON *want = json(want_sq);
    /* Printed and read back: exact decimals (cost_usd) are raw text until printed. */
    char *text = cJSON_PrintUnformatted(got);
    cJSON *norm = text ? cJSON_Parse(text) : NULL;
    cJSON_free(text);
    int same = cJSON_Compare(norm, want, 1);
    cJSON_Delete(norm);
    if (!same) {
        char *g = cJSON_PrintUnformatted(got);
        char *w = cJSON_PrintUnformatted(want);
        print_error("got:  %s\nwant: %s\n", g ? g : "(null)", w);
        cJSON_free(g);
        cJSON_free(w);
    }
    cJSON_Delete(want);
    assert_true(same);
}

/* The member names of an object (or "name"/"id" of array items) in order, comma-separated. */
static void assert_order(const cJSON *obj, const char *member, const char *want)
{
    char got[512] = "";
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        const char *name = it->string;
        if (member != NULL) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, member);
            name = cJSON_IsString(m) ? m->valuestring : "?";
        }
        if (got[0] != '\0')
            strncat(got, ",", sizeof(got) - strlen(got) - 1);
        strncat(got, name ? name : "?", sizeof(got) - strlen(got) - 1);
    }
    if (strcmp(got, want) != 0)
        fail_msg("order: got %s, want %s", got, want);
}

static const cJSON *at(const cJSON *j, const char *path)
{
    /* Dotted path; numbers index arrays. Member names here contain no '.'. */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const cJSON *cur = j;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok != NULL && cur != NULL;
         tok = strtok_r(NULL, ".", &save)) {
        if (cJSON_IsArray(cur))
            cur = cJSON_GetArrayItem(cur, atoi(tok));
        else
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    }
    if (cur == NULL)
        fail_msg("no %s in the output", path);
    return cur;
}

/* ---- keys list ---- */

#define REC1 "['id','aaaaaaaaaaaaaaaa','name','alice','enabled','1','created','2026-02-11T10:00:00+08:00'," \
             "'masked','sk-abcde...wxyz','ver','3']"
#define TOT1 "['input','100','output','50','requests','7','cache_creation','5','cache_read','6','errors','2'," \
             "'last_used_ms','1709164800123']"
#define REC2 "['id','bbbbbbbbbbbbbbbb','name','bob','enabled','0','created','2026-02-12T00:00:00+08:00'," \
             "'masked','sk-12345...6789','ver','1']"

static void test_keys_list(void **state)
{
    (void)state;
    redisReply *rep = reply("[[" REC1 "," TOT1 "],[" REC2 ",[]]]");
    cJSON *got = ap_view_keys_list(rep, 8 * 3600);
    assert_non_null(got);
    assert_json(got,
                "{'keys':["
                "{'key':'sk-abcde...wxyz','id':'aaaaaaaaaaaaaaaa','name':'alice','enabled':true,"
                "'created':'2026-02-11T10:00:00+08:00','total_input':100,'total_output':50,'total_requests':7,"
                "'last_used':'2024-02-29T08:00:00+08:00','total_cache_creation':5,'total_cache_read':6,"
                "'total_errors':2,'total_refused':0,'cost_usd':0,'policy':{}},"
                "{'key':'sk-12345...6789','id':'bbbbbbbbbbbbbbbb','name':'bob','enabled':false,"
                "'created':'2026-02-12T00:00:00+08:00','total_input':0,'total_output':0,'total_requests':0,"
                "'last_used':null,'total_cache_creation':0,'total_cache_read':0,'total_errors':0,'total_refused':0,'cost_usd':0,'policy':{}}]}");
    assert_order(at(got, "keys"), "name", "alice,bob"); /* creation order kept */
    /* Never the full key: no value longer than a masked key under "key". */
    assert_true(cJSON_IsBool(at(got, "keys.0.enabled")));
    cJSON_Delete(got);
    freeReplyObject(rep);
}

static void test_keys_list_defaults(void **state)
{
    (void)state;
    /* A record missing fields; a malformed entry (not a pair) is skipped. */
    redisReply *rep = reply("[[['id','cccccccccccccccc'],['last_used_ms','0']],'junk',[[]]]");
    cJSON *got = ap_view_keys_list(rep, 0);
    assert_non_null(got);
    assert_json(got,
                "{'keys':[{'key':'***','id':'cccccccccccccccc','name':'','enabled':false,'created':null,"
                "'total_input':0,'total_output':0,'total_requests':0,'last_used':'1970-01-01T00:00:00+00:00',"
                "'total_cache_creation':0,'total_cache_read':0,'total_errors':0,'total_refused':0,'cost_usd':0,'policy':{}}]}");
    cJSON_Delete(got);
    freeReplyObject(rep);

    rep = reply("[]");
    got = ap_view_keys_list(rep, 0);
    assert_json(got, "{'keys':[]}");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

/* ---- key usage ---- */

#define KD_A "['input','100','output','40','requests','3','cache_read','9'," \
             "'m:claude-x:total','30','m:claude-x:requests','1','m:claude-x:input','20','m:claude-x:output','10'," \
             "'m:gpt-4o:total','110','m:gpt-4o:requests','2'," \
             "'m:org/model:v1:total','50','m:org/model:v1:requests','1']"
#define KD_B "['input','1','output','1','requests','1','m:claude-x:total','2','m:claude-x:requests','1']"

static void test_key_usage(void **state)
{
    (void)state;
    redisReply *rep = reply(
        "[" REC1 "," TOT1 ","
        "['2024-03-02'," KD_B ",'2024-02-29'," KD_A ",'2024-03-01',['requests','0']],"
        "['2024-02-29 10:00',['m:claude-x:total','30','m:claude-x:requests','1','m:gpt-4o:total','110',"
        "'m:gpt-4o:requests','2'],'2024-02-29 09:00',['m:gpt-4o:total','1','m:gpt-4o:requests','1']],"
        "['m:claude-x:total','32','m:claude-x:requests','2','m:gpt-4o:total','110','m:gpt-4o:requests','2',"
        "'m:small:total','5','m:small:requests','9']]");
    cJSON *got = ap_view_key_usage(rep, 0);
    assert_non_null(got);
    assert_json(got,
                "{'name':'alice','id':'aaaaaaaaaaaaaaaa','enabled':true,'usage':{"
                "'total_input':100,'total_output':50,'total_requests':7,'last_used':'2024-02-29T00:00:00+00:00',"
                "'total_cache_creation':5,'total_cache_read':6,'total_errors':2,'total_refused':0,'cost_usd':0,"
                "'daily':{"
                "'2024-02-29':{'input':100,'output':40,'requests':3,'cache_creation':0,'cache_read':9,'errors':0,'refused':0,'cost_usd':0,'by_model':{"
                "'gpt-4o':{'total':110,'requests':2,'cost_usd':0},'org/model:v1':{'total':50,'requests':1,'cost_usd':0},"
                "'claude-x':{'total':30,'requests':1,'input':20,'output':10,'cost_usd':0}}},"
                "'2024-03-01':{'input':0,'output':0,'requests':0,'cache_creation':0,'cache_read':0,'errors':0,'refused':0,'cost_usd':0,'by_model':{}},"
                "'2024-03-02':{'input':1,'output':1,'requests':1,'cache_creation':0,'cache_read':0,'errors':0,'refused':0,'cost_usd':0,'by_model':{"
                "'claude-x':{'total':2,'requests':1,'cost_usd':0}}}},"
                "'hourly':{"
                "'2024-02-29 09:00':{'cost_usd':0,'by_model':{'gpt-4o':{'total':1,'requests':1,'cost_usd':0}}},"
                "'2024-02-29 10:00':{'cost_usd':0,'by_model':{'gpt-4o':{'total':110,'requests':2,'cost_usd':0},"
                "'claude-x':{'total':30,'requests':1,'cost_usd':0}}}},"
                "'total_by_model':{'gpt-4o':{'total':110,'requests':2,'cost_usd':0},'claude-x':{'total':32,'requests':2,'cost_usd':0},"
                "'small':{'total':5,'requests':9,'cost_usd':0}}},'policy':{}}");
    assert_order(at(got, "usage.daily"), NULL, "2024-02-29,2024-03-01,2024-03-02");
    assert_order(at(got, "usage.daily.2024-02-29.by_model"), NULL, "gpt-4o,org/model:v1,claude-x");
    assert_order(at(got, "usage.hourly"), NULL, "2024-02-29 09:00,2024-02-29 10:00");
    assert_order(at(got, "usage.hourly.2024-02-29 10:00.by_model"), NULL, "gpt-4o,claude-x");
    assert_order(at(got, "usage.total_by_model"), NULL, "gpt-4o,claude-x,small");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

static void test_key_usage_empty(void **state)
{
    (void)state;
    redisReply *rep = reply("[" REC2 ",[],[],[],[]]");
    cJSON *got = ap_view_key_usage(rep, 8 * 3600);
    assert_json(got,
                "{'name':'bob','id':'bbbbbbbbbbbbbbbb','enabled':false,'usage':{'total_input':0,'total_output':0,"
                "'total_requests':0,'last_used':null,'total_cache_creation':0,'total_cache_read':0,'total_errors':0,"
                "'total_refused':0,'cost_usd':0,'daily':{},'hourly':{},'total_by_model':{}},'policy':{}}");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

/* ---- usage totals ---- */

static void test_usage_total(void **state)
{
    (void)state;
    redisReply *rep = reply("[['input','1000','output','500','requests','42','cache_creation','3','cache_read','4',"
                            "'errors','5'],3,2]");
    cJSON *got = ap_view_usage_total(rep);
    assert_json(got, "{'total_input_tokens':1000,'total_output_tokens':500,'total_requests':42,'total_keys':3,"
                     "'active_keys':2,'total_cache_creation_tokens':3,'total_cache_read_tokens':4,'total_errors':5,'total_refused':0,'cost_usd':0}");
    cJSON_Delete(got);
    freeReplyObject(rep);

    rep = reply("[[],0,0]");
    got = ap_view_usage_total(rep);
    assert_json(got, "{'total_input_tokens':0,'total_output_tokens':0,'total_requests':0,'total_keys':0,"
                     "'active_keys':0,'total_cache_creation_tokens':0,'total_cache_read_tokens':0,'total_errors':0,'total_refused':0,'cost_usd':0}");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

/* ---- daily ---- */

#define NAMES "['aaaaaaaaaaaaaaaa','alice','bbbbbbbbbbbbbbbb','bob']"
#define DAY1 "['input','130','output','70','requests','4','errors','2'," \
             "'m:claude-x:total','150','m:claude-x:requests','3','m:gpt-4o:total','50','m:gpt-4o:requests','1'," \
             "'k:aaaaaaaaaaaaaaaa:input','30','k:aaaaaaaaaaaaaaaa:output','20','k:aaaaaaaaaaaaaaaa:requests','1'," \
             "'k:aaaaaaaaaaaaaaaa:m:gpt-4o:total','50','k:aaaaaaaaaaaaaaaa:m:gpt-4o:requests','1'," \
             "'k:bbbbbbbbbbbbbbbb:input','100','k:bbbbbbbbbbbbbbbb:output','50','k:bbbbbbbbbbbbbbbb:requests','3'," \
             "'k:bbbbbbbbbbbbbbbb:m:claude-x:total','150','k:bbbbbbbbbbbbbbbb:m:claude-x:requests','3']"
#define DAY2 "['input','5','output','5','requests','1','m:m1:total','10','m:m1:requests','1'," \
             "'k:ffffffffffffffff:m:m1:total','10','k:ffffffffffffffff:m:m1:requests','1'," \
             "'k:ffffffffffffffff:input','5','k:ffffffffffffffff:output','5','k:ffffffffffffffff:requests','1']"

static void test_usage_daily(void **state)
{
    (void)state;
    redisReply *rep = reply("[" NAMES ",['2024-03-02'," DAY2 ",'2024-03-01'," DAY1 "]]");
    cJSON *got = ap_view_usage_daily(rep);
    assert_non_null(got);
    assert_json(got,
                "{'days':["
                "{'date':'2024-03-01','total_input':130,'total_output':70,'total_requests':4,"
                "'total_cache_creation':0,'total_cache_read':0,'total_errors':2,'total_refused':0,'cost_usd':0,"
                "'by_model':{'claude-x':{'total':150,'requests':3,'cost_usd':0},'gpt-4o':{'total':50,'requests':1,'cost_usd':0}},"
                "'by_tenant':{'alice':{'gpt-4o':{'total':50,'requests':1,'cost_usd':0}},'bob':{'claude-x':{'total':150,'requests':3,'cost_usd':0}}},"
                "'keys':[{'name':'bob','input':100,'output':50,'requests':3,'id':'bbbbbbbbbbbbbbbb','cost_usd':0,"
                "'by_model':{'claude-x':{'total':150,'requests':3,'cost_usd':0}}},"
                "{'name':'alice','input':30,'output':20,'requests':1,'id':'aaaaaaaaaaaaaaaa','cost_usd':0,"
                "'by_model':{'gpt-4o':{'total':50,'requests':1,'cost_usd':0}}}]},"
                "{'date':'2024-03-02','total_input':5,'total_output':5,'total_requests':1,"
                "'total_cache_creation':0,'total_cache_read':0,'total_errors':0,'total_refused':0,'cost_usd':0,"
                "'by_model':{'m1':{'total':10,'requests':1,'cost_usd':0}},"
                "'by_tenant':{'ffffffffffffffff':{'m1':{'total':10,'requests':1,'cost_usd':0}}},"
                "'keys':[{'name':'ffffffffffffffff','input':5,'output':5,'requests':1,'id':'ffffffffffffffff','cost_usd':0,"
                "'by_model':{'m1':{'total':10,'requests':1,'cost_usd':0}}}]}]}");
    assert_order(at(got, "days"), "date", "2024-03-01,2024-03-02");
    assert_order(at(got, "days.0.keys"), "name", "bob,alice");
    assert_order(at(got, "days.0.by_model"), NULL, "claude-x,gpt-4o");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

static void test_usage_daily_many_sorted(void **state)
{
    (void)state;
    /* Five days out of order, models and keys whose order must be by total. */
    redisReply *rep = reply(
        "[[],['2024-01-05',['requests','1'],'2023-12-31',['requests','1'],'2024-01-01',"
        "['m:a:total','1','m:a:requests','1','m:b:total','300','m:b:requests','1','m:c:total','20','m:c:requests','1',"
        "'k:k1:input','1','k:k1:output','1','k:k2:input','500','k:k3:input','10','k:k3:output','10'],"
        "'2024-01-10',['requests','1'],'2024-01-02',['requests','1']]]");
    cJSON *got = ap_view_usage_daily(rep);
    assert_order(at(got, "days"), "date", "2023-12-31,2024-01-01,2024-01-02,2024-01-05,2024-01-10");
    assert_order(at(got, "days.1.by_model"), NULL, "b,c,a");
    assert_order(at(got, "days.1.keys"), "id", "k2,k3,k1");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

static void test_usage_daily_shared_name(void **state)
{
    (void)state;
    /* Key names are not unique: two keys both named "shared", each with its own model. */
    redisReply *rep = reply(
        "[['aaaaaaaaaaaaaaaa','shared','bbbbbbbbbbbbbbbb','shared'],['2024-03-01',["
        "'k:aaaaaaaaaaaaaaaa:m:m-one:total','10','k:aaaaaaaaaaaaaaaa:m:m-one:requests','1',"
        "'k:aaaaaaaaaaaaaaaa:input','6','k:aaaaaaaaaaaaaaaa:output','4','k:aaaaaaaaaaaaaaaa:requests','1',"
        "'k:bbbbbbbbbbbbbbbb:m:m-two:total','99','k:bbbbbbbbbbbbbbbb:m:m-two:requests','2',"
        "'k:bbbbbbbbbbbbbbbb:input','90','k:bbbbbbbbbbbbbbbb:output','9','k:bbbbbbbbbbbbbbbb:requests','2']]]");
    cJSON *got = ap_view_usage_daily(rep);
    assert_non_null(got);
    const cJSON *keys = at(got, "days.0.keys");
    assert_int_equal(cJSON_GetArraySize(keys), 2);
    const cJSON *k;
    cJSON_ArrayForEach(k, keys) {
        const char *id = cJSON_GetObjectItemCaseSensitive(k, "id")->valuestring;
        const cJSON *bm = cJSON_GetObjectItemCaseSensitive(k, "by_model");
        char *s = cJSON_PrintUnformatted(bm);
        const char *want = strcmp(id, "aaaaaaaaaaaaaaaa") == 0 ? "{\"m-one\":{\"total\":10,\"requests\":1,\"cost_usd\":0}}"
                                                               : "{\"m-two\":{\"total\":99,\"requests\":2,\"cost_usd\":0}}";
        int same = strcmp(s, want) == 0;
        if (!same)
            print_error("key %s by_model: got %s, want %s\n", id, s, want);
        cJSON_free(s);
        if (!same) {
            cJSON_Delete(got);
            freeReplyObject(rep);
            fail_msg("a key's by_model shows another key's models (keys that share a name)");
        }
    }
    cJSON_Delete(got);
    freeReplyObject(rep);
}

/* Costs are nano-dollars in Redis and exact decimals of USD in every view; refusals and policies are shown. */
static void test_costs_refused_policy(void **state)
{
    (void)state;
    /* keys list: policy from the record, refused and cost from the totals */
    redisReply *rep = reply("[[['id','aaaaaaaaaaaaaaaa','policy','{\\\"rpm\\\":5,\\\"daily_usd\\\":2.5}'],"
                            "['requests','1','refused','3','cost','1234500']]]");
    cJSON *got = ap_view_keys_list(rep, 0);
    const cJSON *k = at(got, "keys.0");
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(k, "cost_usd"));
    assert_string_equal(s, "0.0012345"); /* exact decimal text, not a binary double */
    cJSON_free(s);
    assert_int_equal(at(got, "keys.0.total_refused")->valueint, 3);
    assert_int_equal(at(got, "keys.0.policy.rpm")->valueint, 5);
    s = cJSON_PrintUnformatted(at(got, "keys.0.policy.daily_usd"));
    assert_string_equal(s, "2.5");
    cJSON_free(s);
    cJSON_Delete(got);
    freeReplyObject(rep);

    /* daily: per day, per model (summed over hashes exactly), per key */
    rep = reply("[['k1','alice'],['2024-03-01',['requests','2','refused','1','cost','300000075',"
                "'m:a:total','3','m:a:requests','2','m:a:cost','300000075',"
                "'k:k1:input','1','k:k1:output','2','k:k1:requests','2','k:k1:cost','300000075',"
                "'k:k1:m:a:total','3','k:k1:m:a:requests','2','k:k1:m:a:cost','300000075']]]");
    got = ap_view_usage_daily(rep);
    assert_json(got, "{'days':[{'date':'2024-03-01','total_input':0,'total_output':0,'total_requests':2,"
                     "'total_cache_creation':0,'total_cache_read':0,'total_errors':0,'total_refused':1,"
                     "'cost_usd':0.300000075,'by_model':{'a':{'total':3,'requests':2,'cost_usd':0.300000075}},"
                     "'by_tenant':{'alice':{'a':{'total':3,'requests':2,'cost_usd':0.300000075}}},"
                     "'keys':[{'name':'alice','input':1,'output':2,'requests':2,'id':'k1','cost_usd':0.300000075,"
                     "'by_model':{'a':{'total':3,'requests':2,'cost_usd':0.300000075}}}]}]}");
    s = cJSON_PrintUnformatted(at(got, "days.0.cost_usd"));
    assert_string_equal(s, "0.300000075");
    cJSON_free(s);
    cJSON_Delete(got);
    freeReplyObject(rep);

    /* totals */
    rep = reply("[['requests','1','cost','7000000000000','refused','9'],1,1]");
    got = ap_view_usage_total(rep);
    s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(got, "cost_usd"));
    assert_string_equal(s, "7000");
    cJSON_free(s);
    assert_int_equal(at(got, "total_refused")->valueint, 9);
    cJSON_Delete(got);
    freeReplyObject(rep);
}

static void test_key_policy(void **state)
{
    (void)state;
    redisReply *rep = reply("[['id','x','policy','{\\\"rpm\\\":7}']]"); /* ap_script_key_get */
    cJSON *got = ap_view_key_policy(rep);
    assert_json(got, "{'rpm':7}");
    cJSON_Delete(got);
    freeReplyObject(rep);
    rep = reply("[['id','x']]");
    got = ap_view_key_policy(rep);
    assert_json(got, "{}");
    cJSON_Delete(got);
    freeReplyObject(rep);
    rep = reply("['x','name','{\\\"tpm\\\":9}']"); /* ap_script_key_set_policy */
    got = ap_view_key_policy(rep);
    assert_json(got, "{'tpm':9}");
    cJSON_Delete(got);
    freeReplyObject(rep);
    rep = reply("7");
    assert_null(ap_view_key_policy(rep));
    freeReplyObject(rep);
}

static void test_export(void **state)
{
    (void)state;
    /* {sha256, record, totals, days, hours, by_model}: the key-usage document plus created and masked */
    redisReply *rep = reply("[['abc',['id','aaaaaaaaaaaaaaaa','name','alice','enabled','1','created','2026-01-01T00:00:00Z',"
                            "'masked','sk-abcde...wxyz','policy','{\\\"rpm\\\":1}'],['requests','2'],"
                            "['2026-01-01',['requests','2','m:a:total','5','m:a:requests','2']],[],"
                            "['m:a:total','5','m:a:requests','2']],'junk']");
    cJSON *got = ap_view_export(rep, 0, 1767225600000LL);
    assert_string_equal(at(got, "format")->valuestring, "api-proxy-export");
    assert_string_equal(at(got, "exported_at")->valuestring, "2026-01-01T00:00:00+00:00");
    const cJSON *keys = at(got, "keys");
    assert_int_equal(cJSON_GetArraySize(keys), 1);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(keys, "sha256:abc");
    assert_non_null(k);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(k, "masked")->valuestring, "sk-abcde...wxyz");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(k, "created")->valuestring, "2026-01-01T00:00:00Z");
    assert_int_equal(at(got, "keys.sha256:abc.policy.rpm")->valueint, 1);
    assert_int_equal(at(got, "keys.sha256:abc.usage.daily.2026-01-01.requests")->valueint, 2);
    cJSON_Delete(got);
    freeReplyObject(rep);
}

static void test_usage_daily_empty(void **state)
{
    (void)state;
    redisReply *rep = reply("[[],[]]");
    cJSON *got = ap_view_usage_daily(rep);
    assert_json(got, "{'days':[]}");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

/* ---- hourly ---- */

static void test_usage_hourly(void **state)
{
    (void)state;
    redisReply *rep = reply(
        "[" NAMES ",['2024-03-01 10:00',['input','3','output','4','requests','2','m:m1:total','5','m:m1:requests','1',"
        "'m:m2:total','2','m:m2:requests','1','k:aaaaaaaaaaaaaaaa:m:m1:total','5','k:aaaaaaaaaaaaaaaa:m:m1:requests','1',"
        "'k:bbbbbbbbbbbbbbbb:m:m2:total','2','k:bbbbbbbbbbbbbbbb:m:m2:requests','1','m:m1:cost','1500000',"
        "'k:aaaaaaaaaaaaaaaa:m:m1:cost','1500000','cost','1500000'],"
        "'2024-03-01 09:00',['requests','1','m:m2:total','7','m:m2:requests','1']]]");
    cJSON *got = ap_view_usage_hourly(rep);
    assert_non_null(got);
    assert_json(got,
                "{'hours':["
                "{'hour':'2024-03-01 09:00','by_model':{'m2':{'total':7,'requests':1,'cost_usd':0}},'by_tenant':{},'keys':[],"
                "'total_input':0,'total_output':0,'total_requests':1,'cost_usd':0},"
                "{'hour':'2024-03-01 10:00','by_model':{'m1':{'total':5,'requests':1,'cost_usd':0.0015},"
                "'m2':{'total':2,'requests':1,'cost_usd':0}},"
                "'by_tenant':{'alice':{'m1':{'total':5,'requests':1,'cost_usd':0.0015}},'bob':{'m2':{'total':2,'requests':1,'cost_usd':0}}},"
                /* An hour's rollup has no per-key totals: requests, total and cost come from the key's models. */
                "'keys':[{'name':'alice','requests':1,'total':5,'cost_usd':0.0015,'id':'aaaaaaaaaaaaaaaa',"
                "'by_model':{'m1':{'total':5,'requests':1,'cost_usd':0.0015}}},"
                "{'name':'bob','requests':1,'total':2,'cost_usd':0,'id':'bbbbbbbbbbbbbbbb','by_model':{'m2':{'total':2,'requests':1,'cost_usd':0}}}],"
                "'total_input':3,'total_output':4,'total_requests':2,'cost_usd':0.0015}]}");
    assert_order(at(got, "hours"), "hour", "2024-03-01 09:00,2024-03-01 10:00");
    assert_order(at(got, "hours.1.keys"), "name", "alice,bob");
    assert_order(at(got, "hours.1.by_model"), NULL, "m1,m2");
    cJSON_Delete(got);
    freeReplyObject(rep);
}

/* ---- malformed replies ---- */

typedef cJSON *(*view_fn)(const redisReply *rep);

static cJSON *keys_list0(const redisReply *rep)
{
    return ap_view_keys_list(rep, 0);
}

static cJSON *key_usage0(const redisReply *rep)
{
    return ap_view_key_usage(rep, 0);
}

struct bad_case {
    view_fn fn;
    const char *sq;  /* JSON notation, or NULL */
    const char *raw; /* raw RESP */
};

static void run_bad(void **state)
{
    const struct bad_case *c = *state;
    redisReply *rep = c->sq ? reply(c->sq) : reply_raw(c->raw);
    cJSON *got = c->fn(rep);
    char *s = got ? cJSON_PrintUnformatted(got) : NULL;
    cJSON_Delete(got);
    freeReplyObject(rep);
    if (s != NULL) {
        print_error("got: %s\n", s);
        cJSON_free(s);
        fail_msg("a malformed reply gave a document instead of NULL");
    }
    assert_null(c->fn(NULL));
}

#define BAD(name, fn, sq) {"malformed: " name, run_bad, NULL, NULL, &(struct bad_case){fn, sq, NULL}}
#define BAD_RAW(name, fn, raw) {"malformed: " name, run_bad, NULL, NULL, &(struct bad_case){fn, NULL, raw}}

/* ---- reply helpers ---- */

static void test_hget(void **state)
{
    (void)state;
    redisReply *rep = reply("['a','1','b','2','odd']");
    assert_string_equal(ap_view_hget(rep, "a"), "1");
    assert_string_equal(ap_view_hget(rep, "b"), "2");
    assert_null(ap_view_hget(rep, "odd")); /* a field without a value */
    assert_null(ap_view_hget(rep, "1"));   /* values are not fields */
    assert_null(ap_view_hget(rep, "c"));
    freeReplyObject(rep);
    rep = reply("'scalar'");
    assert_null(ap_view_hget(rep, "scalar"));
    freeReplyObject(rep);
    assert_null(ap_view_hget(NULL, "a"));
}

struct int_case {
    const char *raw;
    long long want;
    int ok;
};

static void run_reply_int(void **state)
{
    const struct int_case *c = *state;
    redisReply *rep = reply_raw(c->raw);
    assert_int_equal(ap_reply_int(rep), c->want);
    assert_int_equal(ap_reply_ok(rep), c->ok);
    freeReplyObject(rep);
}

#define RINT(name, raw, want, ok) {"reply_int: " name, run_reply_int, NULL, NULL, &(struct int_case){raw, want, ok}}

static void test_reply_null(void **state)
{
    (void)state;
    assert_int_equal(ap_reply_int(NULL), 0);
    assert_int_equal(ap_reply_ok(NULL), 0);
}

/* One group, so that TAP output has a single plan. */
static const struct CMUnitTest tests[] = {
    {"keys list: masked key, booleans, last_used ISO or null", test_keys_list, NULL, NULL, NULL},
    {"keys list: missing fields get defaults; junk entries skipped", test_keys_list_defaults, NULL, NULL, NULL},
    {"key usage: daily, hourly, total_by_model, sorted", test_key_usage, NULL, NULL, NULL},
    {"key usage: no usage at all", test_key_usage_empty, NULL, NULL, NULL},
    {"usage totals", test_usage_total, NULL, NULL, NULL},
    {"daily: days ascending, keys and by_model by total", test_usage_daily, NULL, NULL, NULL},
    {"daily: five days and three keys sorted", test_usage_daily_many_sorted, NULL, NULL, NULL},
    {"daily: keys sharing a name keep their own by_model", test_usage_daily_shared_name, NULL, NULL, NULL},
    {"costs in USD exactly, refused, policy", test_costs_refused_policy, NULL, NULL, NULL},
    {"key policy: get and set replies", test_key_policy, NULL, NULL, NULL},
    {"export: every key, hashed, with its history", test_export, NULL, NULL, NULL},
    {"daily: empty", test_usage_daily_empty, NULL, NULL, NULL},
    {"hourly: hours ascending, by_model, by_tenant", test_usage_hourly, NULL, NULL, NULL},
    BAD("keys list: nil", keys_list0, "null"),
    BAD("keys list: integer", keys_list0, "3"),
    BAD_RAW("keys list: error reply", keys_list0, "-ERR unknown command\r\n"),
    BAD("key usage: nil (unknown key)", key_usage0, "null"),
    BAD("key usage: 4 elements", key_usage0, "[[],[],[],[]]"),
    BAD("key usage: string", key_usage0, "'x'"),
    BAD("key usage: five integers (no record, no hashes)", key_usage0, "[1,2,3,4,5]"),
    BAD_RAW("key usage: error reply", key_usage0, "-NOSCRIPT No matching script\r\n"),
    BAD("usage total: 2 elements", ap_view_usage_total, "[[],3]"),
    BAD("usage total: nil", ap_view_usage_total, "null"),
    BAD("usage total: counts are not integers", ap_view_usage_total, "[[],'x',null]"),
    BAD_RAW("usage total: status reply", ap_view_usage_total, "+OK\r\n"),
    BAD("daily: one element", ap_view_usage_daily, "[[]]"),
    BAD("daily: buckets not an array", ap_view_usage_daily, "[[],'x']"),
    BAD("daily: nil", ap_view_usage_daily, "null"),
    BAD("hourly: one element", ap_view_usage_hourly, "[[]]"),
    BAD("hourly: buckets nil", ap_view_usage_hourly, "[[],null]"),
    BAD_RAW("hourly: error reply", ap_view_usage_hourly, "-ERR boom\r\n"),
    {"hget: fields, values, odd arrays, non-arrays", test_hget, NULL, NULL, NULL},
    RINT("integer", ":42\r\n", 42, 1),
    RINT("negative integer", ":-7\r\n", -7, 1),
    RINT("numeric bulk string", "$4\r\n1234\r\n", 1234, 1),
    RINT("non-numeric string", "$3\r\nabc\r\n", 0, 1),
    RINT("nil", "$-1\r\n", 0, 1),
    RINT("status", "+OK\r\n", 0, 1),
    RINT("error", "-ERR x\r\n", 0, 0),
    RINT("array", "*1\r\n:5\r\n", 0, 1),
    {"reply_int and reply_ok: NULL", test_reply_null, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("views", tests, NULL, NULL);
}
