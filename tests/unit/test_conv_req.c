/*
 * Request conversion, one case per mapping rule and direction (the table in
 * include/ap_conv.h). Each case converts a request body and compares the result
 * with the exact expected JSON (cJSON_Compare, case-sensitive), or expects a
 * refusal whose message contains a given text.
 *
 * JSON in this file is written with ' for " so that it stays readable; no test
 * string contains an apostrophe.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "ap_conv.h"

enum dir { A2O, O2A };

struct req_case {
    enum dir dir;
    const char *in;
    const char *want;                /* expected output, or NULL: a refusal is expected */
    const char *err;                 /* refusal: text the message must contain */
    const struct ap_conv_opts *opts; /* NULL: all defaults */
};

static cJSON *json(const char *sq)
{
    char *s = strdup(sq);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (j == NULL)
        fail_msg("bad test JSON: %s", sq);
    return j;
}

static void assert_json(const cJSON *got, const char *want_sq)
{
    cJSON *want = json(want_sq);
    int same = cJSON_Compare(got, want, 1);
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

static void run_case(void **state)
{
    const struct req_case *c = *state;
    const char *err = "untouched";
    cJSON *in = json(c->in);
    cJSON *out = c->dir == A2O ? ap_conv_req_a2o(in, c->opts, &err) : ap_conv_req_o2a(in, c->opts, &err);

    if (c->want != NULL) {
        if (out == NULL)
            print_error("refused: %s\n", err ? err : "(null)");
        assert_non_null(out);
        assert_null(err);
        assert_json(out, c->want);
    } else {
        assert_null(out);
        assert_non_null(err);
        if (strstr(err, c->err) == NULL)
            fail_msg("error \"%s\" does not contain \"%s\"", err, c->err);
    }
    cJSON_Delete(out);
    cJSON_Delete(in);
}

/* What both formats express converts there and back to the very same request. */
static void round_trip(enum dir first, const char *req)
{
    const char *err = "untouched";
    cJSON *in = json(req);
    cJSON *mid = first == A2O ? ap_conv_req_a2o(in, NULL, &err) : ap_conv_req_o2a(in, NULL, &err);
    assert_non_null(mid);
    cJSON *back = first == A2O ? ap_conv_req_o2a(mid, NULL, &err) : ap_conv_req_a2o(mid, NULL, &err);
    assert_non_null(back);
    assert_null(err);
    assert_json(back, req);
    cJSON_Delete(back);
    cJSON_Delete(mid);
    cJSON_Delete(in);
}

static void test_round_trip_anthropic(void **state)
{
    (void)state;
    round_trip(A2O,
               "{'model':'m','max_tokens':300,'temperature':0.5,'top_p':0.9,'stream':true,"
               "'stop_sequences':['END'],'metadata':{'user_id':'u-1'},'system':'Be brief.',"
               "'tools':[{'name':'get_weather','description':'Weather now','input_schema':{'type':'object',"
               "'properties':{'city':{'type':'string'}}}}],"
               "'tool_choice':{'type':'auto','disable_parallel_tool_use':true},"
               "'messages':[{'role':'user','content':[{'type':'image','source':{'type':'base64',"
               "'media_type':'image/png','data':'iVBORw0KGgo='}},{'type':'text','text':'Weather there?'}]},"
               "{'role':'assistant','content':[{'type':'thinking','thinking':'Paris, I think.','signature':'sig=='},"
               "{'type':'text','text':'Checking.'},{'type':'tool_use','id':'toolu_01','name':'get_weather',"
               "'input':{'city':'Paris'}}]},"
               "{'role':'user','content':[{'type':'tool_result','tool_use_id':'toolu_01','content':'rain',"
               "'is_error':true},{'type':'text','text':'Sure?'}]},"
               "{'role':'assistant','content':'Yes.'}]}");
}

static void test_round_trip_openai(void **state)
{
    (void)state;
    round_trip(O2A,
               "{'model':'m','max_tokens':300,'temperature':0.5,'top_p':0.9,'stream':true,'stop':['END'],"
               "'user':'u-1','tool_choice':'required','parallel_tool_calls':false,"
               "'tools':[{'type':'function','function':{'name':'f','description':'d','parameters':{'type':'object'}}}],"
               "'messages':[{'role':'system','content':'Be brief.'},{'role':'user','content':'Go.'},"
               "{'role':'assistant','content':'On it.','reasoning_content':'Plan.','reasoning_signature':'sig==',"
               "'tool_calls':[{'id':'call_1','type':'function','function':{'name':'f','arguments':'{\\'a\\':1}'}},"
               "{'id':'call_2','type':'function','function':{'name':'f','arguments':'{}'}}]},"
               "{'role':'tool','tool_call_id':'call_1','content':'one'},"
               "{'role':'tool','tool_call_id':'call_2','content':'two','is_error':true},"
               "{'role':'user','content':[{'type':'text','text':'And?'},"
               "{'type':'image_url','image_url':{'url':'https://example.com/a.png'}}]}]}");
}

static const struct ap_conv_opts opts_limit = {.max_tokens_limit = 1000};
static const struct ap_conv_opts opts_usage = {.stream_usage = 1};
static const struct ap_conv_opts opts_model = {.model = "tier-model"};

#define OK(name, d, in, want) \
    {name, run_case, NULL, NULL, &(struct req_case){d, in, want, NULL, NULL}}
#define OK_OPTS(name, d, opts, in, want) \
    {name, run_case, NULL, NULL, &(struct req_case){d, in, want, NULL, opts}}
#define REFUSED(name, d, in, err) \
    {name, run_case, NULL, NULL, &(struct req_case){d, in, NULL, err, NULL}}

/* A minimal Anthropic request around `msgs`, and its OpenAI conversion. */
#define A_REQ(extra, msgs) "{'model':'m','max_tokens':100" extra ",'messages':[" msgs "]}"
#define O_OUT(extra, msgs) "{'model':'m','max_tokens':100" extra ",'messages':[" msgs "]}"
#define HI "{'role':'user','content':'hi'}"

/* A minimal OpenAI request around `msgs`, and its Anthropic conversion. */
#define O_REQ(extra, msgs) "{'model':'m','max_tokens':100" extra ",'messages':[" msgs "]}"
#define A_OUT(extra, msgs) "{'model':'m','max_tokens':100" extra ",'messages':[" msgs "]}"
#define TOOLS_O "'tools':[{'type':'function','function':{'name':'f','parameters':{'type':'object'}}}]"
#define TOOLS_A "'tools':[{'name':'f','input_schema':{'type':'object'}}]"

/* One group, so that TAP output has a single plan. */
static const struct CMUnitTest tests[] = {
    /* ======== Anthropic -> OpenAI ======== */
    /* system */
    OK("a2o system string -> leading system message", A2O,
       A_REQ(",'system':'Be brief.'", HI),
       O_OUT("", "{'role':'system','content':'Be brief.'}," HI)),
    OK("a2o system blocks -> ONE leading system message, blank line between, cache_control dropped",
       A2O,
       A_REQ(",'system':[{'type':'text','text':'One.'},"
             "{'type':'text','text':'Two.','cache_control':{'type':'ephemeral'}},"
             "{'type':'text','text':'Three.\\nline'}]", HI),
       O_OUT("", "{'role':'system','content':'One.\\n\\nTwo.\\n\\nThree.\\nline'}," HI)),
    OK("a2o system: one block -> its text; empty blocks add nothing", A2O,
       A_REQ(",'system':[{'type':'text','text':''},{'type':'text','text':'Only.',"
             "'cache_control':{'type':'ephemeral','ttl':'1h'}},{'type':'text','text':''}]", HI),
       O_OUT("", "{'role':'system','content':'Only.'}," HI)),
    OK("a2o system: no block or only empty ones -> no system message", A2O,
       A_REQ(",'system':[{'type':'text','text':''}]", HI), O_OUT("", HI)),
    OK("a2o system blocks stay first, before a multi-turn history", A2O,
       A_REQ(",'system':[{'type':'text','text':'A.'},{'type':'text','text':'B.'}]",
             HI ",{'role':'assistant','content':'ok'},{'role':'user','content':'more'}"),
       O_OUT("", "{'role':'system','content':'A.\\n\\nB.'}," HI
                 ",{'role':'assistant','content':'ok'},{'role':'user','content':'more'}")),
    REFUSED("a2o system block without text (after good ones) is refused", A2O,
            A_REQ(",'system':[{'type':'text','text':'ok'},{'type':'text'}]", HI), "system blocks must be text"),
    REFUSED("a2o system block that is not text is refused", A2O,
            A_REQ(",'system':[{'type':'image'}]", HI), "system blocks must be text"),
    /* text */
    OK("a2o user string content stays a string", A2O, A_REQ("", HI), O_OUT("", HI)),
    OK("a2o user text blocks -> text parts", A2O,
       A_REQ("", "{'role':'user','content':[{'type':'text','text':'a'},{'type':'text','text':'b'}]}"),
       O_OUT("", "{'role':'user','content':[{'type':'text','text':'a'},{'type':'text','text':'b'}]}")),
    OK("a2o assistant string and text blocks -> content string, blocks concatenated", A2O,
       A_REQ("", HI ",{'role':'assistant','content':'x'},{'role':'user','content':'y'},"
                 "{'role':'assistant','content':[{'type':'text','text':'Hel'},{'type':'text','text':'lo'}]}"),
       O_OUT("", HI ",{'role':'assistant','content':'x'},{'role':'user','content':'y'},"
                 "{'role':'assistant','content':'Hello'}")),
    /* images */
    OK("a2o base64 image -> data URL", A2O,
       A_REQ("", "{'role':'user','content':[{'type':'image','source':{'type':'base64',"
                 "'media_type':'image/png','data':'iVBORw0KGgo='}},{'type':'text','text':'What is it?'}]}"),
       O_OUT("", "{'role':'user','content':[{'type':'image_url','image_url':"
                 "{'url':'data:image/png;base64,iVBORw0KGgo='}},{'type':'text','text':'What is it?'}]}")),
    OK("a2o url image -> image_url url", A2O,
       A_REQ("", "{'role':'user','content':[{'type':'image','source':{'type':'url',"
                 "'url':'https://example.com/cat.jpg'}}]}"),
       O_OUT("", "{'role':'user','content':[{'type':'image_url','image_url':"
                 "{'url':'https://example.com/cat.jpg'}}]}")),
    REFUSED("a2o image from the Files API is refused", A2O,
            A_REQ("", "{'role':'user','content':[{'type':'image','source':{'type':'file','file_id':'f'}}]}"),
            "image source must be"),
    REFUSED("a2o document blocks are refused, not dropped", A2O,
            A_REQ("", "{'role':'user','content':[{'type':'document','source':{'type':'text','data':'x'}}]}"),
            "user content blocks must be"),
    /* tool definitions */
    OK("a2o tools -> functions (description optional, cache_control dropped)", A2O,
       A_REQ(",'tools':[{'name':'get_weather','description':'Weather now',"
             "'input_schema':{'type':'object','properties':{'city':{'type':'string'}},'required':['city']}},"
             "{'name':'noop','input_schema':{'type':'object'},'cache_control':{'type':'ephemeral'}}]", HI),
       O_OUT(",'tools':[{'type':'function','function':{'name':'get_weather','description':'Weather now',"
             "'parameters':{'type':'object','properties':{'city':{'type':'string'}},'required':['city']}}},"
             "{'type':'function','function':{'name':'noop','parameters':{'type':'object'}}}]", HI)),
    OK("a2o custom-typed tool is a function", A2O,
       A_REQ(",'tools':[{'type':'custom','name':'f','input_schema':{'type':'object'}}]", HI),
       O_OUT(",'tools':[{'type':'function','function':{'name':'f','parameters':{'type':'object'}}}]", HI)),
    REFUSED("a2o server tools are refused", A2O,
            A_REQ(",'tools':[{'type':'web_search_20250305','name':'web_search'}]", HI), "server tools"),
    /* tool_choice */
    OK("a2o tool_choice auto -> auto", A2O,
       A_REQ(",'tool_choice':{'type':'auto'}," TOOLS_A, HI), O_OUT(",'tool_choice':'auto'," TOOLS_O, HI)),
    OK("a2o tool_choice any -> required", A2O,
       A_REQ(",'tool_choice':{'type':'any'}," TOOLS_A, HI), O_OUT(",'tool_choice':'required'," TOOLS_O, HI)),
    OK("a2o tool_choice tool -> function by name", A2O,
       A_REQ(",'tool_choice':{'type':'tool','name':'f'}," TOOLS_A, HI),
       O_OUT(",'tool_choice':{'type':'function','function':{'name':'f'}}," TOOLS_O, HI)),
    OK("a2o tool_choice none -> none", A2O,
       A_REQ(",'tool_choice':{'type':'none'}," TOOLS_A, HI), O_OUT(",'tool_choice':'none'," TOOLS_O, HI)),
    OK("a2o tool_choice without tools is dropped (OpenAI refuses it)", A2O,
       A_REQ(",'tool_choice':{'type':'any','disable_parallel_tool_use':true}", HI), O_OUT("", HI)),
    REFUSED("a2o tool_choice of an unknown type is refused", A2O,
            A_REQ(",'tool_choice':{'type':'sometimes'}," TOOLS_A, HI), "tool_choice type"),
    OK("a2o disable_parallel_tool_use -> parallel_tool_calls false", A2O,
       A_REQ(",'tool_choice':{'type':'auto','disable_parallel_tool_use':true}," TOOLS_A, HI),
       O_OUT(",'tool_choice':'auto','parallel_tool_calls':false," TOOLS_O, HI)),
    /* tool calls and results */
    OK("a2o assistant tool_use -> tool_calls, id kept, arguments a JSON string", A2O,
       A_REQ("", HI ",{'role':'assistant','content':[{'type':'text','text':'Checking.'},"
                 "{'type':'tool_use','id':'toolu_01A','name':'get_weather','input':{'city':'Paris'}},"
                 "{'type':'tool_use','id':'toolu_01B','name':'get_time','input':{}}]}"),
       O_OUT("", HI ",{'role':'assistant','content':'Checking.','tool_calls':["
                 "{'id':'toolu_01A','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}},"
                 "{'id':'toolu_01B','type':'function','function':{'name':'get_time','arguments':'{}'}}]}")),
    OK("a2o tool_use only -> content null", A2O,
       A_REQ("", HI ",{'role':'assistant','content':[{'type':'tool_use','id':'t1','name':'f','input':{}}]}"),
       O_OUT("", HI ",{'role':'assistant','content':null,'tool_calls':["
                 "{'id':'t1','type':'function','function':{'name':'f','arguments':'{}'}}]}")),
    OK("a2o raw_arguments kept by o2a are sent verbatim", A2O,
       A_REQ("", HI ",{'role':'assistant','content':[{'type':'tool_use','id':'t1','name':'f','input':{},"
                 "'raw_arguments':'{oops'}]}"),
       O_OUT("", HI ",{'role':'assistant','content':null,'tool_calls':["
                 "{'id':'t1','type':'function','function':{'name':'f','arguments':'{oops'}}]}")),
    OK("a2o tool_results -> tool messages in order, then the text as a user message", A2O,
       A_REQ("", "{'role':'user','content':[{'type':'tool_result','tool_use_id':'t1','content':'18C'},"
                 "{'type':'tool_result','tool_use_id':'t2','content':[{'type':'text','text':'line 1'},"
                 "{'type':'text','text':'line 2'}]},{'type':'text','text':'Thanks'}]}"),
       O_OUT("", "{'role':'tool','tool_call_id':'t1','content':'18C'},"
                 "{'role':'tool','tool_call_id':'t2','content':'line 1\\nline 2'},"
                 "{'role':'user','content':[{'type':'text','text':'Thanks'}]}")),
    OK("a2o tool_result only -> no user message; is_error kept; no content -> empty", A2O,
       A_REQ("", "{'role':'user','content':[{'type':'tool_result','tool_use_id':'t1','is_error':true,"
                 "'content':'boom'},{'type':'tool_result','tool_use_id':'t2'}]}"),
       O_OUT("", "{'role':'tool','tool_call_id':'t1','content':'boom','is_error':true},"
                 "{'role':'tool','tool_call_id':'t2','content':''}")),
    OK("a2o tool_result image moves to the user message after the tool messages", A2O,
       A_REQ("", "{'role':'user','content':[{'type':'tool_result','tool_use_id':'t1','content':["
                 "{'type':'text','text':'screenshot'},{'type':'image','source':{'type':'base64',"
                 "'media_type':'image/jpeg','data':'AAAA'}}]},{'type':'text','text':'See?'}]}"),
       O_OUT("", "{'role':'tool','tool_call_id':'t1','content':'screenshot'},"
                 "{'role':'user','content':[{'type':'image_url','image_url':{'url':'data:image/jpeg;base64,AAAA'}},"
                 "{'type':'text','text':'See?'}]}")),
    REFUSED("a2o tool_result without tool_use_id is refused", A2O,
            A_REQ("", "{'role':'user','content':[{'type':'tool_result','content':'x'}]}"), "tool_use_id"),
    /* thinking */
    OK("a2o thinking -> reasoning_content and reasoning_signature; redacted dropped", A2O,
       A_REQ("", HI ",{'role':'assistant','content':[{'type':'thinking','thinking':'Let me think.',"
                 "'signature':'EqQBCgIYAhIM'},{'type':'redacted_thinking','data':'xyz'},"
                 "{'type':'text','text':'Done.'}]}"),
       O_OUT("", HI ",{'role':'assistant','content':'Done.','reasoning_content':'Let me think.',"
                 "'reasoning_signature':'EqQBCgIYAhIM'}")),
    OK("a2o several thinking blocks -> joined, no signature", A2O,
       A_REQ("", HI ",{'role':'assistant','content':[{'type':'thinking','thinking':'A','signature':'s1'},"
                 "{'type':'tool_use','id':'t1','name':'f','input':{}},"
                 "{'type':'thinking','thinking':'B','signature':'s2'}]}"),
       O_OUT("", HI ",{'role':'assistant','content':null,'reasoning_content':'A\\n\\nB','tool_calls':["
                 "{'id':'t1','type':'function','function':{'name':'f','arguments':'{}'}}]}")),
    OK("a2o thinking budget -> reasoning_effort", A2O,
       A_REQ(",'thinking':{'type':'enabled','budget_tokens':10000}", HI),
       O_OUT(",'reasoning_effort':'medium'", HI)),
    OK("a2o small thinking budget -> low", A2O,
       A_REQ(",'thinking':{'type':'enabled','budget_tokens':1024}", HI),
       O_OUT(",'reasoning_effort':'low'", HI)),
    OK("a2o large thinking budget -> high", A2O,
       A_REQ(",'thinking':{'type':'enabled','budget_tokens':16384}", HI),
       O_OUT(",'reasoning_effort':'high'", HI)),
    OK("a2o thinking disabled -> nothing", A2O,
       A_REQ(",'thinking':{'type':'disabled'}", HI), O_OUT("", HI)),
    /* parameters */
    OK_OPTS("a2o max_tokens clamped to the tier limit", A2O, &opts_limit,
            "{'model':'m','max_tokens':64000,'messages':[" HI "]}",
            "{'model':'m','max_tokens':1000,'messages':[" HI "]}"),
    OK_OPTS("a2o max_tokens under the limit kept", A2O, &opts_limit,
            "{'model':'m','max_tokens':999,'messages':[" HI "]}",
            "{'model':'m','max_tokens':999,'messages':[" HI "]}"),
    OK("a2o temperature and top_p kept, top_k dropped", A2O,
       A_REQ(",'temperature':0.7,'top_p':0.9,'top_k':40", HI),
       O_OUT(",'temperature':0.7,'top_p':0.9", HI)),
    OK("a2o stop_sequences -> stop", A2O,
       A_REQ(",'stop_sequences':['END','###']", HI), O_OUT(",'stop':['END','###']", HI)),
    OK("a2o metadata.user_id -> user", A2O,
       A_REQ(",'metadata':{'user_id':'u-42'}", HI), O_OUT(",'user':'u-42'", HI)),
    OK_OPTS("a2o stream with stream_usage -> stream_options.include_usage", A2O, &opts_usage,
            A_REQ(",'stream':true", HI), O_OUT(",'stream':true,'stream_options':{'include_usage':true}", HI)),
    OK("a2o stream without stream_usage -> no stream_options", A2O,
       A_REQ(",'stream':true", HI), O_OUT(",'stream':true", HI)),
    OK_OPTS("a2o opts.model replaces the model", A2O, &opts_model,
            "{'model':'claude-opus-4-6','max_tokens':5,'messages':[" HI "]}",
            "{'model':'tier-model','max_tokens':5,'messages':[" HI "]}"),
    OK("a2o service_tier, container and unknown fields dropped", A2O,
       A_REQ(",'service_tier':'auto','container':'c1','whatever':1", HI), O_OUT("", HI)),
    REFUSED("a2o body that is not an object is refused", A2O, "[]", "JSON object"),
    REFUSED("a2o unknown role is refused", A2O, A_REQ("", "{'role':'system','content':'x'}"), "role"),
    REFUSED("a2o missing messages is refused", A2O, "{'model':'m','max_tokens':1}", "messages"),

    /* ======== OpenAI -> Anthropic ======== */
    /* system */
    OK("o2a leading system message -> system string", O2A,
       O_REQ("", "{'role':'system','content':'Be brief.'}," HI), A_OUT(",'system':'Be brief.'", HI)),
    OK("o2a several system/developer messages -> system blocks, hoisted in order", O2A,
       O_REQ("", "{'role':'system','content':'One.'},{'role':'developer','content':[{'type':'text','text':'Two.'}]},"
                 HI ",{'role':'assistant','content':'ok'},{'role':'system','content':'Three.'},"
                 "{'role':'user','content':'more'}"),
       A_OUT(",'system':[{'type':'text','text':'One.'},{'type':'text','text':'Two.'},{'type':'text','text':'Three.'}]",
             HI ",{'role':'assistant','content':'ok'},{'role':'user','content':'more'}")),
    /* text */
    OK("o2a user string stays a string", O2A, O_REQ("", HI), A_OUT("", HI)),
    OK("o2a user text parts -> text blocks", O2A,
       O_REQ("", "{'role':'user','content':[{'type':'text','text':'a'},{'type':'text','text':'b'}]}"),
       A_OUT("", "{'role':'user','content':[{'type':'text','text':'a'},{'type':'text','text':'b'}]}")),
    OK("o2a consecutive user messages merged (alternation)", O2A,
       O_REQ("", "{'role':'user','content':'a'},{'role':'user','content':[{'type':'text','text':'b'}]}"),
       A_OUT("", "{'role':'user','content':[{'type':'text','text':'a'},{'type':'text','text':'b'}]}")),
    OK("o2a assistant string stays a string, parts become text blocks", O2A,
       O_REQ("", HI ",{'role':'assistant','content':'x'},{'role':'user','content':'y'},"
                 "{'role':'assistant','content':[{'type':'text','text':'z'}]}"),
       A_OUT("", HI ",{'role':'assistant','content':'x'},{'role':'user','content':'y'},"
                 "{'role':'assistant','content':[{'type':'text','text':'z'}]}")),
    REFUSED("o2a audio parts are refused", O2A,
            O_REQ("", "{'role':'user','content':[{'type':'input_audio','input_audio':{'data':'x','format':'wav'}}]}"),
            "content parts must be text or image_url"),
    REFUSED("o2a legacy function role is refused", O2A,
            O_REQ("", "{'role':'function','name':'f','content':'x'}"), "role"),
    /* images */
    OK("o2a data URL image -> base64 source (detail dropped)", O2A,
       O_REQ("", "{'role':'user','content':[{'type':'image_url','image_url':"
                 "{'url':'data:image/png;base64,iVBORw0KGgo=','detail':'high'}}]}"),
       A_OUT("", "{'role':'user','content':[{'type':'image','source':{'type':'base64',"
                 "'media_type':'image/png','data':'iVBORw0KGgo='}}]}")),
    OK("o2a http image -> url source", O2A,
       O_REQ("", "{'role':'user','content':[{'type':'image_url','image_url':{'url':'https://example.com/a.jpg'}}]}"),
       A_OUT("", "{'role':'user','content':[{'type':'image','source':{'type':'url','url':'https://example.com/a.jpg'}}]}")),
    REFUSED("o2a data URL that is not base64 is refused", O2A,
            O_REQ("", "{'role':'user','content':[{'type':'image_url','image_url':{'url':'data:image/svg+xml,<svg/>'}}]}"),
            "base64"),
    /* tool definitions */
    OK("o2a tools -> input_schema, strict dropped, missing parameters -> empty object schema", O2A,
       O_REQ(",'tools':[{'type':'function','function':{'name':'get_weather','description':'Weather now',"
             "'strict':true,'parameters':{'type':'object','properties':{'city':{'type':'string'}}}}},"
             "{'type':'function','function':{'name':'noop'}}]", HI),
       A_OUT(",'tools':[{'name':'get_weather','description':'Weather now',"
             "'input_schema':{'type':'object','properties':{'city':{'type':'string'}}}},"
             "{'name':'noop','input_schema':{'type':'object','properties':{}}}]", HI)),
    REFUSED("o2a non-function tools are refused", O2A,
            O_REQ(",'tools':[{'type':'custom','custom':{'name':'x'}}]", HI), "functions"),
    /* tool_choice */
    OK("o2a tool_choice auto -> auto", O2A,
       O_REQ(",'tool_choice':'auto'," TOOLS_O, HI), A_OUT(",'tool_choice':{'type':'auto'}," TOOLS_A, HI)),
    OK("o2a tool_choice required -> any", O2A,
       O_REQ(",'tool_choice':'required'," TOOLS_O, HI), A_OUT(",'tool_choice':{'type':'any'}," TOOLS_A, HI)),
    OK("o2a tool_choice none -> none", O2A,
       O_REQ(",'tool_choice':'none'," TOOLS_O, HI), A_OUT(",'tool_choice':{'type':'none'}," TOOLS_A, HI)),
    OK("o2a tool_choice function -> tool by name", O2A,
       O_REQ(",'tool_choice':{'type':'function','function':{'name':'f'}}," TOOLS_O, HI),
       A_OUT(",'tool_choice':{'type':'tool','name':'f'}," TOOLS_A, HI)),
    OK("o2a parallel_tool_calls false -> disable_parallel_tool_use (auto when no tool_choice)", O2A,
       O_REQ(",'parallel_tool_calls':false," TOOLS_O, HI),
       A_OUT(",'tool_choice':{'type':'auto','disable_parallel_tool_use':true}," TOOLS_A, HI)),
    OK("o2a parallel_tool_calls false with required", O2A,
       O_REQ(",'parallel_tool_calls':false,'tool_choice':'required'," TOOLS_O, HI),
       A_OUT(",'tool_choice':{'type':'any','disable_parallel_tool_use':true}," TOOLS_A, HI)),
    OK("o2a tool_choice without tools is dropped (Anthropic refuses it)", O2A,
       O_REQ(",'tool_choice':'auto','parallel_tool_calls':true", HI), A_OUT("", HI)),
    /* tool calls and results */
    OK("o2a tool_calls -> tool_use blocks, arguments parsed, id kept", O2A,
       O_REQ("", HI ",{'role':'assistant','content':'Checking.','tool_calls':["
                 "{'id':'call_1','type':'function','function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}},"
                 "{'id':'call_2','type':'function','function':{'name':'get_time','arguments':''}}]}"),
       A_OUT("", HI ",{'role':'assistant','content':[{'type':'text','text':'Checking.'},"
                 "{'type':'tool_use','id':'call_1','name':'get_weather','input':{'city':'Paris'}},"
                 "{'type':'tool_use','id':'call_2','name':'get_time','input':{}}]}")),
    OK("o2a arguments that are not a JSON object -> input {} (raw not sent upstream)", O2A,
       O_REQ("", HI ",{'role':'assistant','content':null,'tool_calls':["
                 "{'id':'c1','type':'function','function':{'name':'f','arguments':'{\\'a\\':1}{\\'b\\':2}'}},"
                 "{'id':'c2','type':'function','function':{'name':'f','arguments':'[1]'}}]}"),
       A_OUT("", HI ",{'role':'assistant','content':[{'type':'tool_use','id':'c1','name':'f','input':{}},"
                 "{'type':'tool_use','id':'c2','name':'f','input':{}}]}")),
    OK("o2a tool messages + next user message -> one user turn of tool_results then text", O2A,
       O_REQ("", HI ",{'role':'assistant','content':null,'tool_calls':["
                 "{'id':'c1','type':'function','function':{'name':'f','arguments':'{}'}},"
                 "{'id':'c2','type':'function','function':{'name':'f','arguments':'{}'}}]},"
                 "{'role':'tool','tool_call_id':'c1','content':'one'},"
                 "{'role':'tool','tool_call_id':'c2','content':[{'type':'text','text':'two'}]},"
                 "{'role':'user','content':'Thanks'}"),
       A_OUT("", HI ",{'role':'assistant','content':[{'type':'tool_use','id':'c1','name':'f','input':{}},"
                 "{'type':'tool_use','id':'c2','name':'f','input':{}}]},"
                 "{'role':'user','content':[{'type':'tool_result','tool_use_id':'c1','content':'one'},"
                 "{'type':'tool_result','tool_use_id':'c2','content':[{'type':'text','text':'two'}]},"
                 "{'type':'text','text':'Thanks'}]}")),
    OK("o2a is_error on a tool message is kept", O2A,
       O_REQ("", "{'role':'tool','tool_call_id':'c1','content':'boom','is_error':true}"),
       A_OUT("", "{'role':'user','content':[{'type':'tool_result','tool_use_id':'c1','content':'boom','is_error':true}]}")),
    REFUSED("o2a tool message without tool_call_id is refused", O2A,
            O_REQ("", "{'role':'tool','content':'x'}"), "tool_call_id"),
    /* thinking */
    OK("o2a signed reasoning_content -> thinking block first", O2A,
       O_REQ("", HI ",{'role':'assistant','content':'Done.','reasoning_content':'Let me think.',"
                 "'reasoning_signature':'EqQBCgIYAhIM'}"),
       A_OUT("", HI ",{'role':'assistant','content':[{'type':'thinking','thinking':'Let me think.',"
                 "'signature':'EqQBCgIYAhIM'},{'type':'text','text':'Done.'}]}")),
    OK("o2a unsigned reasoning dropped (Anthropic rejects it); empty turn dropped", O2A,
       O_REQ("", HI ",{'role':'assistant','content':'Done.','reasoning_content':'hmm'},"
                 "{'role':'user','content':'a'},{'role':'assistant','content':null,'reasoning':'x'},"
                 "{'role':'user','content':'b'}"),
       A_OUT("", HI ",{'role':'assistant','content':'Done.'},{'role':'user','content':["
                 "{'type':'text','text':'a'},{'type':'text','text':'b'}]}")),
    OK("o2a reasoning_effort -> thinking budget, temperature and top_p dropped", O2A,
       "{'model':'m','max_tokens':16000,'reasoning_effort':'medium','temperature':0.5,'top_p':0.9,'messages':[" HI "]}",
       "{'model':'m','max_tokens':16000,'thinking':{'type':'enabled','budget_tokens':8192},'messages':[" HI "]}"),
    OK("o2a thinking budget capped below max_tokens", O2A,
       "{'model':'m','max_tokens':4096,'reasoning_effort':'high','messages':[" HI "]}",
       "{'model':'m','max_tokens':4096,'thinking':{'type':'enabled','budget_tokens':4095},'messages':[" HI "]}"),
    OK("o2a thinking dropped when the budget would be under 1024", O2A,
       "{'model':'m','max_tokens':1000,'reasoning_effort':'low','temperature':0.5,'messages':[" HI "]}",
       "{'model':'m','max_tokens':1000,'temperature':0.5,'messages':[" HI "]}"),
    OK("o2a reasoning_effort minimal -> no thinking", O2A,
       O_REQ(",'reasoning_effort':'minimal'", HI), A_OUT("", HI)),
    /* parameters */
    OK("o2a max_tokens absent -> 4096", O2A,
       "{'model':'m','messages':[" HI "]}", "{'model':'m','max_tokens':4096,'messages':[" HI "]}"),
    OK("o2a max_completion_tokens wins over max_tokens", O2A,
       "{'model':'m','max_tokens':10,'max_completion_tokens':20,'messages':[" HI "]}",
       "{'model':'m','max_tokens':20,'messages':[" HI "]}"),
    OK_OPTS("o2a max_tokens clamped to the tier limit (default too)", O2A, &opts_limit,
            "{'model':'m','messages':[" HI "]}", "{'model':'m','max_tokens':1000,'messages':[" HI "]}"),
    OK("o2a temperature over 1 clamped, top_p kept", O2A,
       O_REQ(",'temperature':1.5,'top_p':0.9", HI), A_OUT(",'temperature':1,'top_p':0.9", HI)),
    OK("o2a stop string -> stop_sequences list", O2A,
       O_REQ(",'stop':'END'", HI), A_OUT(",'stop_sequences':['END']", HI)),
    OK("o2a stop list -> stop_sequences", O2A,
       O_REQ(",'stop':['END','###']", HI), A_OUT(",'stop_sequences':['END','###']", HI)),
    OK("o2a user -> metadata.user_id", O2A,
       O_REQ(",'user':'u-42'", HI), A_OUT(",'metadata':{'user_id':'u-42'}", HI)),
    OK("o2a stream kept, stream_options dropped", O2A,
       O_REQ(",'stream':true,'stream_options':{'include_usage':true}", HI), A_OUT(",'stream':true", HI)),
    OK("o2a deliberately dropped fields", O2A,
       O_REQ(",'response_format':{'type':'json_object'},'logprobs':true,'top_logprobs':2,'seed':7,"
             "'presence_penalty':0.5,'frequency_penalty':0.5,'logit_bias':{'50256':-100},'store':true", HI),
       A_OUT("", HI)),
    OK("o2a n=1 accepted", O2A, O_REQ(",'n':1", HI), A_OUT("", HI)),
    REFUSED("o2a n>1 refused", O2A, O_REQ(",'n':2", HI), "n other than 1"),
    OK_OPTS("o2a opts.model replaces the model", O2A, &opts_model,
            "{'model':'gpt-4o','max_tokens':5,'messages':[" HI "]}",
            "{'model':'tier-model','max_tokens':5,'messages':[" HI "]}"),
    REFUSED("o2a missing messages is refused", O2A, "{'model':'m'}", "messages"),

    /* Item 14: max_tokens 1e300 was cast to long (UBSan abort; INT64_MIN sent upstream). */
    REFUSED("a2o max_tokens 1e300 refused", A2O, "{'model':'m','max_tokens':1e300,'messages':[" HI "]}",
            "max_tokens must be an integer from 1 to 2147483647"),
    REFUSED("a2o max_tokens -1e300 refused", A2O, "{'model':'m','max_tokens':-1e300,'messages':[" HI "]}",
            "max_tokens must be an integer"),
    REFUSED("a2o max_tokens 2^31 refused", A2O, "{'model':'m','max_tokens':2147483648,'messages':[" HI "]}",
            "max_tokens must be an integer"),
    REFUSED("a2o max_tokens 0 refused", A2O, "{'model':'m','max_tokens':0,'messages':[" HI "]}",
            "max_tokens must be an integer"),
    REFUSED("a2o max_tokens 10.5 refused", A2O, "{'model':'m','max_tokens':10.5,'messages':[" HI "]}",
            "max_tokens must be an integer"),
    OK_OPTS("a2o max_tokens 2^31-1 clamped", A2O, &opts_limit,
            "{'model':'m','max_tokens':2147483647,'messages':[" HI "]}",
            "{'model':'m','max_tokens':1000,'messages':[" HI "]}"),
    OK("a2o max_tokens 1e3 is 1000", A2O, "{'model':'m','max_tokens':1e3,'messages':[" HI "]}",
       "{'model':'m','max_tokens':1000,'messages':[" HI "]}"),
    REFUSED("o2a max_tokens 1e300 refused", O2A, "{'model':'m','max_tokens':1e300,'messages':[" HI "]}",
            "max_tokens must be an integer from 1 to 2147483647"),
    REFUSED("o2a max_completion_tokens 1e300 refused", O2A,
            "{'model':'m','max_completion_tokens':1e300,'messages':[" HI "]}",
            "max_completion_tokens must be an integer from 1 to 2147483647"),
    REFUSED("o2a max_tokens out of range beside a valid max_completion_tokens", O2A,
            "{'model':'m','max_tokens':-5,'max_completion_tokens':20,'messages':[" HI "]}",
            "max_tokens must be an integer"),

    /* ======== both ways ======== */
    {"round trip Anthropic -> OpenAI -> Anthropic", test_round_trip_anthropic, NULL, NULL, NULL},
    {"round trip OpenAI -> Anthropic -> OpenAI", test_round_trip_openai, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("conv_req", tests, NULL, NULL);
}
