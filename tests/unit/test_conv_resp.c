/*
 * Response and error body conversion, one case per mapping rule and direction
 * (the table in include/ap_conv.h), each compared with the exact expected JSON
 * (cJSON_Compare, case-sensitive). OpenAI responses made here carry the
 * current time in "created": it is checked against the clock, then removed
 * before the comparison.
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
#include <time.h>
#include <cmocka.h>

#include <cJSON.h>

#include "ap_conv.h"

enum kind { O2A, A2O, ERR_TO_A, ERR_TO_O };

struct resp_case {
    enum kind kind;
    const char *in;    /* body (for errors: raw text, NULL allowed) */
    const char *model; /* model to report, NULL: the upstream's */
    int status;        /* errors only */
    const char *want;
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

/* "created" must be now; it is then removed so the rest compares exactly. */
static void take_created(cJSON *out, time_t before)
{
    cJSON *c = cJSON_DetachItemFromObjectCaseSensitive(out, "created");
    assert_true(cJSON_IsNumber(c));
    assert_true(c->valuedouble >= (double)before && c->valuedouble <= (double)time(NULL));
    cJSON_Delete(c);
}

static cJSON *convert_error(const struct resp_case *c)
{
    char *body = NULL;
    if (c->in != NULL) {
        body = strdup(c->in);
        for (char *p = body; *p != '\0'; p++)
            if (*p == '\'')
                *p = '"';
    }
    cJSON *out = ap_conv_error(c->kind == ERR_TO_A ? AP_FMT_ANTHROPIC : AP_FMT_OPENAI, c->status, body,
                               body ? strlen(body) : 0);
    free(body);
    return out;
}

static void run_case(void **state)
{
    const struct resp_case *c = *state;
    time_t before = time(NULL);
    cJSON *in = NULL, *out;

    if (c->kind == ERR_TO_A || c->kind == ERR_TO_O) {
        out = convert_error(c);
    } else {
        in = json(c->in);
        out = c->kind == O2A ? ap_conv_resp_o2a(in, c->model) : ap_conv_resp_a2o(in, c->model);
    }
    assert_non_null(out);
    if (c->kind == A2O)
        take_created(out, before);
    assert_json(out, c->want);
    cJSON_Delete(out);
    cJSON_Delete(in);
}

static void test_not_a_response(void **state)
{
    (void)state;
    cJSON *arr = cJSON_CreateArray();
    assert_null(ap_conv_resp_o2a(arr, NULL));
    assert_null(ap_conv_resp_a2o(arr, NULL));
    assert_null(ap_conv_resp_o2a(NULL, NULL));
    cJSON_Delete(arr);
}

static void test_error_text_is_cut(void **state)
{
    (void)state;
    char body[3000];
    memset(body, 'x', sizeof(body));
    memcpy(body + 1022, "\xc3\xa9", 2); /* an e-acute straddling the 1024-byte cut */
    cJSON *out = ap_conv_error(AP_FMT_ANTHROPIC, 502, body, sizeof(body));
    const char *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(out, "error"), "message")->valuestring;
    assert_int_equal(strlen(msg), 1024);
    cJSON_Delete(out);
    memcpy(body + 1023, "\xc3\xa9", 2);
    out = ap_conv_error(AP_FMT_ANTHROPIC, 502, body, sizeof(body));
    msg = cJSON_GetObjectItem(cJSON_GetObjectItem(out, "error"), "message")->valuestring;
    assert_int_equal(strlen(msg), 1023); /* not cut inside the character */
    cJSON_Delete(out);
}

#define CASE(name, kind, in, model, status, want) \
    {name, run_case, NULL, NULL, &(struct resp_case){kind, in, model, status, want}}
#define OK_O2A(name, in, model, want) CASE(name, O2A, in, model, 0, want)
#define OK_A2O(name, in, model, want) CASE(name, A2O, in, model, 0, want)

/* An OpenAI response around one choice, and the Anthropic message it becomes. */
#define O_RESP(msg, finish) \
    "{'id':'chatcmpl-B9MHD','object':'chat.completion','created':1741569952,'model':'gpt-4o-2024-08-06'," \
    "'choices':[{'index':0,'message':" msg ",'logprobs':null,'finish_reason':" finish "}]," \
    "'usage':{'prompt_tokens':19,'completion_tokens':10,'total_tokens':29," \
    "'prompt_tokens_details':{'cached_tokens':0,'audio_tokens':0}}}"
#define A_MSG(content, stop) \
    "{'id':'msg_B9MHD','type':'message','role':'assistant','model':'gpt-4o-2024-08-06'," \
    "'content':" content ",'stop_reason':" stop ",'stop_sequence':null,'usage':{'input_tokens':19," \
    "'cache_creation_input_tokens':0,'cache_read_input_tokens':0,'output_tokens':10}}"

/* An Anthropic response, and the OpenAI completion it becomes (without "created"). */
#define A_RESP(content, stop) \
    "{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','type':'message','role':'assistant','model':'claude-sonnet-4-5'," \
    "'content':" content ",'stop_reason':" stop ",'stop_sequence':null," \
    "'usage':{'input_tokens':12,'cache_creation_input_tokens':0,'cache_read_input_tokens':0,'output_tokens':6}}"
#define O_COMPL(msg, finish) \
    "{'id':'chatcmpl-01XFDUDYJgAACzvnptvVoYEL','object':'chat.completion','model':'claude-sonnet-4-5'," \
    "'choices':[{'index':0,'message':" msg ",'logprobs':null,'finish_reason':" finish "}]," \
    "'usage':{'prompt_tokens':12,'completion_tokens':6,'total_tokens':18,'prompt_tokens_details':{'cached_tokens':0}}}"

static const struct CMUnitTest tests[] = {
    /* ======== OpenAI response -> Anthropic ======== */
    OK_O2A("o2a text, id msg_ + suffix, stop -> end_turn, usage",
        O_RESP("{'role':'assistant','content':'Hello there.','refusal':null}", "'stop'"), NULL,
        A_MSG("[{'type':'text','text':'Hello there.'}]", "'end_turn'")),
    OK_O2A("o2a model to report replaces the upstream model",
        "{'id':'chatcmpl-1','choices':[{'message':{'role':'assistant','content':'x'},'finish_reason':'stop'}],"
        "'model':'kimi-k2.5'}", "claude-opus-4-6",
        "{'id':'msg_1','type':'message','role':'assistant','model':'claude-opus-4-6','content':[{'type':'text','text':'x'}],"
        "'stop_reason':'end_turn','stop_sequence':null,'usage':{'input_tokens':0,'cache_creation_input_tokens':0,"
        "'cache_read_input_tokens':0,'output_tokens':0}}"),
    OK_O2A("o2a id without the chatcmpl- prefix gets msg_ in front",
        "{'id':'5f1a2b','model':'deepseek-chat','choices':[{'message':{'role':'assistant','content':'x'},'finish_reason':'stop'}]}",
        NULL,
        "{'id':'msg_5f1a2b','type':'message','role':'assistant','model':'deepseek-chat','content':[{'type':'text','text':'x'}],"
        "'stop_reason':'end_turn','stop_sequence':null,'usage':{'input_tokens':0,'cache_creation_input_tokens':0,"
        "'cache_read_input_tokens':0,'output_tokens':0}}"),
    OK_O2A("o2a tool_calls -> tool_use blocks, arguments parsed, tool_calls -> tool_use",
        O_RESP("{'role':'assistant','content':null,'tool_calls':[{'id':'call_abc','type':'function',"
               "'function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}},"
               "{'id':'call_def','type':'function','function':{'name':'get_time','arguments':'{}'}}]}", "'tool_calls'"),
        NULL,
        A_MSG("[{'type':'tool_use','id':'call_abc','name':'get_weather','input':{'city':'Paris'}},"
              "{'type':'tool_use','id':'call_def','name':'get_time','input':{}}]", "'tool_use'")),
    OK_O2A("o2a arguments not JSON -> input {} and raw_arguments kept",
        O_RESP("{'role':'assistant','content':'Calling.','tool_calls':[{'id':'call_x','type':'function',"
               "'function':{'name':'f','arguments':'{\\'city\\': Par'}}]}", "'tool_calls'"), NULL,
        A_MSG("[{'type':'text','text':'Calling.'},{'type':'tool_use','id':'call_x','name':'f','input':{},"
              "'raw_arguments':'{\\'city\\': Par'}]", "'tool_use'")),
    OK_O2A("o2a finish stop with tool calls -> tool_use",
        O_RESP("{'role':'assistant','content':'','tool_calls':[{'id':'c','type':'function',"
               "'function':{'name':'f','arguments':'{}'}}]}", "'stop'"), NULL,
        A_MSG("[{'type':'tool_use','id':'c','name':'f','input':{}}]", "'tool_use'")),
    OK_O2A("o2a length -> max_tokens",
        O_RESP("{'role':'assistant','content':'Hel'}", "'length'"), NULL,
        A_MSG("[{'type':'text','text':'Hel'}]", "'max_tokens'")),
    OK_O2A("o2a content_filter -> refusal; refusal text -> text block",
        O_RESP("{'role':'assistant','content':null,'refusal':'I cannot help with that.'}", "'content_filter'"), NULL,
        A_MSG("[{'type':'text','text':'I cannot help with that.'}]", "'refusal'")),
    OK_O2A("o2a reasoning_content -> thinking block first, signature empty when unknown",
        O_RESP("{'role':'assistant','content':'42','reasoning_content':'Six times seven.'}", "'stop'"), NULL,
        A_MSG("[{'type':'thinking','thinking':'Six times seven.','signature':''},{'type':'text','text':'42'}]",
              "'end_turn'")),
    OK_O2A("o2a reasoning_signature -> thinking signature",
        O_RESP("{'role':'assistant','content':'42','reasoning_content':'Six times seven.',"
               "'reasoning_signature':'EqQBCgIYAhIM'}", "'stop'"), NULL,
        A_MSG("[{'type':'thinking','thinking':'Six times seven.','signature':'EqQBCgIYAhIM'},{'type':'text','text':'42'}]",
              "'end_turn'")),
    OK_O2A("o2a reasoning (the vLLM/OpenRouter name) -> thinking block",
        O_RESP("{'role':'assistant','content':'42','reasoning':'Six times seven.'}", "'stop'"), NULL,
        A_MSG("[{'type':'thinking','thinking':'Six times seven.','signature':''},{'type':'text','text':'42'}]",
              "'end_turn'")),
    OK_O2A("o2a usage: cached tokens split out of prompt_tokens",
        "{'id':'chatcmpl-9','model':'gpt-4o','choices':[{'message':{'role':'assistant','content':'x'},'finish_reason':'stop'}],"
        "'usage':{'prompt_tokens':2006,'completion_tokens':300,'total_tokens':2306,'prompt_tokens_details':{'cached_tokens':1920}}}",
        NULL,
        "{'id':'msg_9','type':'message','role':'assistant','model':'gpt-4o','content':[{'type':'text','text':'x'}],"
        "'stop_reason':'end_turn','stop_sequence':null,'usage':{'input_tokens':86,'cache_creation_input_tokens':0,"
        "'cache_read_input_tokens':1920,'output_tokens':300}}"),
    OK_O2A("o2a empty answer -> empty content list",
        O_RESP("{'role':'assistant','content':''}", "'stop'"), NULL, A_MSG("[]", "'end_turn'")),
    {"o2a / a2o refuse a body that is not a response", test_not_a_response, NULL, NULL, NULL},

    /* ======== Anthropic response -> OpenAI ======== */
    OK_A2O("a2o text, id chatcmpl- + suffix, end_turn -> stop, usage",
        A_RESP("[{'type':'text','text':'Hi! How can I help?'}]", "'end_turn'"), NULL,
        O_COMPL("{'role':'assistant','content':'Hi! How can I help?'}", "'stop'")),
    OK_A2O("a2o several text blocks concatenated (citations split text)",
        A_RESP("[{'type':'text','text':'The sky is '},{'type':'text','text':'blue','citations':[]},"
               "{'type':'text','text':'.'}]", "'end_turn'"), NULL,
        O_COMPL("{'role':'assistant','content':'The sky is blue.'}", "'stop'")),
    OK_A2O("a2o model to report replaces the upstream model",
        "{'id':'msg_1','content':[{'type':'text','text':'x'}],'model':'claude-x','stop_reason':'end_turn'}", "gpt-4o",
        "{'id':'chatcmpl-1','object':'chat.completion','model':'gpt-4o','choices':[{'index':0,'message':"
        "{'role':'assistant','content':'x'},'logprobs':null,'finish_reason':'stop'}],"
        "'usage':{'prompt_tokens':0,'completion_tokens':0,'total_tokens':0,'prompt_tokens_details':{'cached_tokens':0}}}"),
    OK_A2O("a2o tool_use -> tool_calls (id kept, arguments JSON string), tool_use -> tool_calls",
        A_RESP("[{'type':'text','text':'Let me check.'},{'type':'tool_use','id':'toolu_01A09q90qw90lq917835lq9',"
               "'name':'get_weather','input':{'location':'San Francisco, CA','unit':'celsius'}}]", "'tool_use'"),
        NULL,
        O_COMPL("{'role':'assistant','content':'Let me check.','tool_calls':[{'id':'toolu_01A09q90qw90lq917835lq9',"
                "'type':'function','function':{'name':'get_weather',"
                "'arguments':'{\\'location\\':\\'San Francisco, CA\\',\\'unit\\':\\'celsius\\'}'}}]}",
                "'tool_calls'")),
    OK_A2O("a2o thinking -> reasoning_content + reasoning_signature, redacted dropped",
        A_RESP("[{'type':'thinking','thinking':'Six times seven.','signature':'EqQBCgIYAhIM'},"
               "{'type':'redacted_thinking','data':'EmwKAhgBEgy3va3pzix'},{'type':'text','text':'42'}]", "'end_turn'"),
        NULL,
        O_COMPL("{'role':'assistant','content':'42','reasoning_content':'Six times seven.',"
                "'reasoning_signature':'EqQBCgIYAhIM'}", "'stop'")),
    OK_A2O("a2o max_tokens -> length",
        A_RESP("[{'type':'text','text':'Hel'}]", "'max_tokens'"), NULL,
        O_COMPL("{'role':'assistant','content':'Hel'}", "'length'")),
    OK_A2O("a2o stop_sequence -> stop",
        A_RESP("[{'type':'text','text':'a'}]", "'stop_sequence'"), NULL,
        O_COMPL("{'role':'assistant','content':'a'}", "'stop'")),
    OK_A2O("a2o refusal -> content_filter",
        A_RESP("[]", "'refusal'"), NULL, O_COMPL("{'role':'assistant','content':''}", "'content_filter'")),
    OK_A2O("a2o usage: prompt_tokens = input + cache read + cache creation, cached_tokens = cache read",
        "{'id':'msg_2','model':'claude-x','content':[{'type':'text','text':'x'}],'stop_reason':'end_turn',"
        "'usage':{'input_tokens':50,'cache_creation_input_tokens':1000,'cache_read_input_tokens':2000,'output_tokens':7}}",
        NULL,
        "{'id':'chatcmpl-2','object':'chat.completion','model':'claude-x','choices':[{'index':0,'message':"
        "{'role':'assistant','content':'x'},'logprobs':null,'finish_reason':'stop'}],"
        "'usage':{'prompt_tokens':3050,'completion_tokens':7,'total_tokens':3057,'prompt_tokens_details':{'cached_tokens':2000}}}"),

    /* ======== error bodies ======== */
    CASE("error OpenAI body -> Anthropic, 429 rate_limit_error", ERR_TO_A,
         "{'error':{'message':'Rate limit reached for gpt-4o','type':'requests','param':null,'code':'rate_limit_exceeded'}}",
         NULL, 429, "{'type':'error','error':{'type':'rate_limit_error','message':'Rate limit reached for gpt-4o'}}"),
    CASE("error Anthropic body -> OpenAI, 529 overloaded_error", ERR_TO_O,
         "{'type':'error','error':{'type':'overloaded_error','message':'Overloaded'}}", NULL, 529,
         "{'error':{'message':'Overloaded','type':'overloaded_error','code':null}}"),
    CASE("error 400 invalid_request_error", ERR_TO_O,
         "{'type':'error','error':{'type':'invalid_request_error','message':'max_tokens: Field required'}}", NULL, 400,
         "{'error':{'message':'max_tokens: Field required','type':'invalid_request_error','code':null}}"),
    CASE("error 401 authentication_error", ERR_TO_A, "{'error':{'message':'Incorrect API key provided'}}", NULL, 401,
         "{'type':'error','error':{'type':'authentication_error','message':'Incorrect API key provided'}}"),
    CASE("error 403 permission_error", ERR_TO_O, "{'error':{'message':'no'}}", NULL, 403,
         "{'error':{'message':'no','type':'permission_error','code':null}}"),
    CASE("error 404 not_found_error", ERR_TO_A, "{'error':{'message':'model: nope'}}", NULL, 404,
         "{'type':'error','error':{'type':'not_found_error','message':'model: nope'}}"),
    CASE("error 413 request_too_large", ERR_TO_O, "{'error':{'message':'too big'}}", NULL, 413,
         "{'error':{'message':'too big','type':'request_too_large','code':null}}"),
    CASE("error 500 api_error", ERR_TO_A, "{'error':{'message':'boom'}}", NULL, 500,
         "{'type':'error','error':{'type':'api_error','message':'boom'}}"),
    CASE("error 503 overloaded_error", ERR_TO_A, "{'error':{'message':'busy'}}", NULL, 503,
         "{'type':'error','error':{'type':'overloaded_error','message':'busy'}}"),
    CASE("error 504 timeout_error", ERR_TO_O, "{'error':{'message':'slow'}}", NULL, 504,
         "{'error':{'message':'slow','type':'timeout_error','code':null}}"),
    CASE("error other 4xx invalid_request_error", ERR_TO_O, "{'error':{'message':'gone'}}", NULL, 410,
         "{'error':{'message':'gone','type':'invalid_request_error','code':null}}"),
    CASE("error string error field", ERR_TO_A, "{'error':'model overloaded'}", NULL, 502,
         "{'type':'error','error':{'type':'api_error','message':'model overloaded'}}"),
    CASE("error FastAPI detail field", ERR_TO_O, "{'detail':'Not Found'}", NULL, 404,
         "{'error':{'message':'Not Found','type':'not_found_error','code':null}}"),
    CASE("error plain text body, trimmed", ERR_TO_A, "  upstream connect error  \n", NULL, 502,
         "{'type':'error','error':{'type':'api_error','message':'upstream connect error'}}"),
    CASE("error JSON without a message -> the body text", ERR_TO_O, "{'code':7}", NULL, 500,
         "{'error':{'message':'{\\'code\\':7}','type':'api_error','code':null}}"),
    CASE("error empty body -> generic message with the status", ERR_TO_A, NULL, NULL, 502,
         "{'type':'error','error':{'type':'api_error','message':'upstream error (HTTP 502)'}}"),
    {"error long text cut at 1024 bytes on a character boundary", test_error_text_is_cut, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("conv_resp", tests, NULL, NULL);
}
