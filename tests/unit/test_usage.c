/*
 * ap_usage: usage merged from Anthropic and OpenAI usage objects, stream
 * events and bodies. Each row starts from a given state, applies a list of
 * inputs in order and compares all five fields of struct ap_usage.
 *
 * JSON in this file is written with ' for " so that it stays readable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "ap_usage.h"

static char *dq(const char *sq)
{
    char *s = strdup(sq);
    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

enum kind {
    MERGE_A,  /* ap_usage_merge_anthropic on the parsed object */
    MERGE_O,  /* ap_usage_merge_openai */
    BODY_A,   /* ap_usage_anthropic_body on the text */
    BODY_O,   /* ap_usage_openai_body */
    EVENT_A,  /* ap_usage_anthropic_event(event, text) */
};

struct step {
    enum kind kind;
    const char *event; /* EVENT_A only */
    const char *json;  /* ' for "; may be invalid on purpose */
    int ret;           /* EVENT_A: expected return value */
};

struct usage_case {
    struct ap_usage start;
    struct step steps[4];
    int nsteps;
    struct ap_usage want;
};

static void apply(struct ap_usage *u, const struct step *s)
{
    char *text = dq(s->json);
    switch (s->kind) {
    case MERGE_A:
    case MERGE_O: {
        cJSON *j = cJSON_Parse(text);
        if (s->kind == MERGE_A)
            ap_usage_merge_anthropic(u, j);
        else
            ap_usage_merge_openai(u, j);
        cJSON_Delete(j);
        break;
    }
    case BODY_A:
        ap_usage_anthropic_body(u, text, strlen(text));
        break;
    case BODY_O:
        ap_usage_openai_body(u, text, strlen(text));
        break;
    case EVENT_A: {
        int rc = ap_usage_anthropic_event(u, s->event, text, strlen(text));
        if (rc != s->ret) {
            free(text);
            fail_msg("ap_usage_anthropic_event(%s) returned %d, want %d", s->event, rc, s->ret);
        }
        break;
    }
    }
    free(text);
}

static void run_usage(void **state)
{
    const struct usage_case *c = *state;
    struct ap_usage u = c->start;
    for (int i = 0; i < c->nsteps; i++)
        apply(&u, &c->steps[i]);
    const struct ap_usage *w = &c->want;
    if (u.input != w->input || u.output != w->output || u.cache_creation != w->cache_creation ||
        u.cache_read != w->cache_read || u.seen != w->seen)
        fail_msg("got in=%lld out=%lld cc=%lld cr=%lld seen=%u; want in=%lld out=%lld cc=%lld cr=%lld seen=%u",
                 (long long)u.input, (long long)u.output, (long long)u.cache_creation, (long long)u.cache_read,
                 u.seen, (long long)w->input, (long long)w->output, (long long)w->cache_creation,
                 (long long)w->cache_read, w->seen);
}

#define U(in, out, cc, cr, seen) {in, out, cc, cr, seen}
#define ZERO U(0, 0, 0, 0, 0)
#define MA(j) {MERGE_A, NULL, j, 0}
#define MO(j) {MERGE_O, NULL, j, 0}
#define BA(j) {BODY_A, NULL, j, 0}
#define BO(j) {BODY_O, NULL, j, 0}
#define EA(ev, j, ret) {EVENT_A, ev, j, ret}
#define CASE1(name, start, s1, want) \
    {name, run_usage, NULL, NULL, &(struct usage_case){start, {s1}, 1, want}}
#define CASE2(name, start, s1, s2, want) \
    {name, run_usage, NULL, NULL, &(struct usage_case){start, {s1, s2}, 2, want}}
#define CASE3(name, start, s1, s2, s3, want) \
    {name, run_usage, NULL, NULL, &(struct usage_case){start, {s1, s2, s3}, 3, want}}

#define MSG_START "{'type':'message_start','message':{'id':'msg_1','type':'message','role':'assistant'," \
                  "'model':'claude-x','content':[],'usage':{'input_tokens':21,'cache_creation_input_tokens':5," \
                  "'cache_read_input_tokens':3072,'output_tokens':1}}}"
#define MSG_DELTA "{'type':'message_delta','delta':{'stop_reason':'end_turn'},'usage':{'output_tokens':42}}"

/* One group, so that TAP output has a single plan. */
static const struct CMUnitTest tests[] = {
    /* Anthropic usage objects */
    CASE1("anthropic: full object", ZERO,
          MA("{'input_tokens':10,'output_tokens':20,'cache_creation_input_tokens':3,'cache_read_input_tokens':4}"),
          U(10, 20, 3, 4, 1)),
    CASE1("anthropic: partial object replaces only present fields", U(10, 20, 3, 4, 1),
          MA("{'output_tokens':25}"), U(10, 25, 3, 4, 1)),
    CASE2("anthropic: later reports replace (cumulative), not add", ZERO,
          MA("{'input_tokens':10,'output_tokens':1}"), MA("{'input_tokens':10,'output_tokens':30}"),
          U(10, 30, 0, 0, 1)),
    CASE1("anthropic: empty object changes nothing, not seen", U(1, 2, 3, 4, 0), MA("{}"), U(1, 2, 3, 4, 0)),
    CASE1("anthropic: unrelated fields only: not seen", ZERO, MA("{'service_tier':'standard'}"), ZERO),
    CASE1("anthropic: null object ignored", U(1, 2, 0, 0, 1), MA("null"), U(1, 2, 0, 0, 1)),
    CASE1("anthropic: non-object ignored", ZERO, MA("[1,2]"), ZERO),
    CASE1("anthropic: string and negative values ignored", U(7, 8, 0, 0, 1),
          MA("{'input_tokens':'12','output_tokens':-1}"), U(7, 8, 0, 0, 1)),
    CASE1("anthropic: zero is a value", U(7, 8, 0, 0, 1), MA("{'output_tokens':0}"), U(7, 0, 0, 0, 1)),
    CASE1("anthropic: large counts", ZERO, MA("{'input_tokens':3000000000}"), U(3000000000LL, 0, 0, 0, 1)),
    /* Anthropic stream events */
    CASE1("event: message_start carries message.usage", ZERO, EA("message_start", MSG_START, 0),
          U(21, 1, 5, 3072, 1)),
    CASE2("event: message_delta replaces output only", ZERO, EA("message_start", MSG_START, 0),
          EA("message_delta", MSG_DELTA, 0), U(21, 42, 5, 3072, 1)),
    CASE3("event: message_stop returns 1 and keeps usage", ZERO, EA("message_start", MSG_START, 0),
          EA("message_delta", MSG_DELTA, 0), EA("message_stop", "{'type':'message_stop'}", 1),
          U(21, 42, 5, 3072, 1)),
    CASE1("event: message_delta with input too", U(21, 1, 0, 0, 1),
          EA("message_delta", "{'type':'message_delta','usage':{'input_tokens':25,'output_tokens':9}}", 0),
          U(25, 9, 0, 0, 1)),
    CASE1("event: content_block_delta is not parsed for usage", ZERO,
          EA("content_block_delta", "{'type':'content_block_delta','usage':{'output_tokens':99}}", 0), ZERO),
    CASE1("event: ping returns 0", ZERO, EA("ping", "{'type':'ping'}", 0), ZERO),
    CASE1("event: error returns 0", ZERO,
          EA("error", "{'type':'error','error':{'type':'overloaded_error','message':'x'}}", 0), ZERO),
    CASE1("event: message_stop with empty data returns 1", ZERO, EA("message_stop", "", 1), ZERO),
    CASE1("event: invalid JSON ignored", U(1, 1, 0, 0, 1), EA("message_delta", "{'usage':", 0),
          U(1, 1, 0, 0, 1)),
    CASE1("event: message_start without usage", ZERO,
          EA("message_start", "{'type':'message_start','message':{'id':'m'}}", 0), ZERO),
    /* Anthropic bodies */
    CASE1("anthropic body", ZERO,
          BA("{'id':'msg_1','type':'message','content':[{'type':'text','text':'hi'}],"
             "'usage':{'input_tokens':12,'output_tokens':6,'cache_read_input_tokens':100}}"),
          U(12, 6, 0, 100, 1)),
    CASE1("anthropic body without usage", ZERO, BA("{'id':'msg_1','type':'message'}"), ZERO),
    CASE1("anthropic body not JSON", ZERO, BA("<html>502</html>"), ZERO),
    CASE1("anthropic error body", ZERO,
          BA("{'type':'error','error':{'type':'invalid_request_error','message':'bad'}}"), ZERO),
    /* OpenAI usage objects */
    CASE1("openai: prompt and completion", ZERO, MO("{'prompt_tokens':30,'completion_tokens':7,'total_tokens':37}"),
          U(30, 7, 0, 0, 1)),
    CASE1("openai: cached tokens excluded from input", ZERO,
          MO("{'prompt_tokens':1000,'completion_tokens':50,'prompt_tokens_details':{'cached_tokens':800}}"),
          U(200, 50, 0, 800, 1)),
    CASE1("openai: cached zero", ZERO,
          MO("{'prompt_tokens':100,'completion_tokens':5,'prompt_tokens_details':{'cached_tokens':0}}"),
          U(100, 5, 0, 0, 1)),
    CASE1("openai: cached more than prompt clamps input to 0", ZERO,
          MO("{'prompt_tokens':10,'completion_tokens':1,'prompt_tokens_details':{'cached_tokens':20}}"),
          U(0, 1, 0, 20, 1)),
    CASE1("openai: details null", ZERO, MO("{'prompt_tokens':9,'completion_tokens':1,'prompt_tokens_details':null}"),
          U(9, 1, 0, 0, 1)),
    CASE1("openai: completion only keeps input", U(40, 1, 0, 0, 1), MO("{'completion_tokens':12}"),
          U(40, 12, 0, 0, 1)),
    CASE1("openai: cache_creation untouched", U(0, 0, 9, 0, 0), MO("{'prompt_tokens':3,'completion_tokens':4}"),
          U(3, 4, 9, 0, 1)),
    CASE2("openai: a later report without details still excludes the cached tokens known", ZERO,
          MO("{'prompt_tokens':1000,'completion_tokens':1,'prompt_tokens_details':{'cached_tokens':800}}"),
          MO("{'prompt_tokens':1000,'completion_tokens':50}"), U(200, 50, 0, 800, 1)),
    CASE2("openai: a later report with new details replaces cached", ZERO,
          MO("{'prompt_tokens':1000,'completion_tokens':1,'prompt_tokens_details':{'cached_tokens':800}}"),
          MO("{'prompt_tokens':1000,'completion_tokens':50,'prompt_tokens_details':{'cached_tokens':900}}"),
          U(100, 50, 0, 900, 1)),
    CASE1("openai: null usage ignored", U(1, 2, 0, 0, 1), MO("null"), U(1, 2, 0, 0, 1)),
    CASE1("openai: empty usage not seen", ZERO, MO("{}"), ZERO),
    /* OpenAI bodies */
    CASE1("openai body", ZERO,
          BO("{'id':'chatcmpl-1','object':'chat.completion','choices':[],"
             "'usage':{'prompt_tokens':120,'completion_tokens':30,'prompt_tokens_details':{'cached_tokens':100}}}"),
          U(20, 30, 0, 100, 1)),
    CASE1("openai final stream chunk as body", ZERO,
          BO("{'id':'c','object':'chat.completion.chunk','choices':[],'usage':{'prompt_tokens':5,'completion_tokens':2}}"),
          U(5, 2, 0, 0, 1)),
    CASE1("openai chunk with usage null", ZERO, BO("{'id':'c','choices':[{'delta':{}}],'usage':null}"), ZERO),
    CASE1("openai body not JSON", ZERO, BO("not json"), ZERO),
};

int main(void)
{
    return cmocka_run_group_tests_name("usage", tests, NULL, NULL);
}
