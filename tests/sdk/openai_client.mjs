// The official OpenAI SDK against api-proxy, for tests/integration/test_sdk.py.
//
//   PROXY_URL=http://127.0.0.1:P API_KEY=sk-... MODEL=claude-opus-4-6-thinking \
//     node tests/sdk/openai_client.mjs SCENARIO [SCENARIO...]
//
// Runs each scenario in order and prints one JSON line per scenario on stdout:
// {"scenario": NAME, ...what the SDK observed}. A scenario that throws prints
// {"scenario": NAME, "exception": {...}} instead; the Python side decides what
// was expected. Nothing is asserted here: the SDK's own parsers, stream
// accumulator and typed errors are the judge, the test reads what they produced.
//
// Scenarios: text, stream (chunks, include_usage), stream_no_usage,
// stream_final (the SDK's ChatCompletionStream helper + finalChatCompletion),
// tools, tools_stream, thinking, thinking_stream, error, error_stream. All but
// the tool round trip start with a system message.
// Optional env: PROMPT (the user text), TIMEOUT_MS.
import OpenAI from 'openai';

const env = process.env;
const MODEL = env.MODEL;
const PROMPT = env.PROMPT || 'Hello from the OpenAI SDK test';
const SYSTEM = 'You are a terse test assistant.';
const TOOL_RESULT = 'Sunny, 22 degrees';

const client = new OpenAI({
  apiKey: env.API_KEY,
  baseURL: env.PROXY_URL + '/v1', // the SDK appends /chat/completions
  maxRetries: 0, // a 429 must surface, not be retried into a success
  timeout: Number(env.TIMEOUT_MS || 20000),
});

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather of a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', description: 'City name' } },
        required: ['city'],
      },
    },
  },
];

function describeCompletion(c) {
  const choice = c.choices[0];
  const m = choice.message;
  return {
    id: c.id,
    object: c.object,
    model: c.model,
    n_choices: c.choices.length,
    finish_reason: choice.finish_reason,
    role: m.role,
    content: m.content,
    reasoning_content: m.reasoning_content ?? null,
    reasoning_signature: m.reasoning_signature ?? null,
    tool_calls: (m.tool_calls ?? []).map((t) => ({
      id: t.id,
      type: t.type,
      name: t.function.name,
      arguments: t.function.arguments,
    })),
    usage: c.usage ?? null,
  };
}

function describeError(e) {
  return {
    class: e?.constructor?.name ?? typeof e,
    is_api_error: e instanceof OpenAI.APIError,
    is_rate_limit: e instanceof OpenAI.RateLimitError,
    is_bad_request: e instanceof OpenAI.BadRequestError,
    is_connection_error: e instanceof OpenAI.APIConnectionError,
    status: e?.status ?? null,
    error: e?.error ?? null, // the parsed "error" object of the body
    type: e?.type ?? null,
    code: e?.code ?? null,
    message: String(e?.message ?? e),
  };
}

// A raw `stream: true` request: iterate the SDK's parsed chunks and accumulate
// them the way a client application does.
async function rawStream(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const acc = {
    chunks: 0,
    ids: [],
    models: [],
    roles: [],
    content: '',
    content_deltas: 0,
    reasoning_content: '',
    reasoning_deltas: 0,
    reasoning_signature: null,
    tool_calls: [],
    finish_reasons: [],
    usage_chunks: [], // usage objects seen (non-null)
    usage_key_chunks: 0, // chunks that have a "usage" key at all (null included)
    empty_choice_chunks: 0, // chunks with choices: [] (the usage chunk)
    last_chunk_has_usage: false,
    kinds: [], // order of what the chunks carried: role, reasoning, content, tool_call, finish, usage
  };
  const kind = (k) => {
    if (acc.kinds.at(-1) !== k) acc.kinds.push(k);
  };
  for await (const chunk of stream) {
    acc.chunks++;
    if (!acc.ids.includes(chunk.id)) acc.ids.push(chunk.id);
    if (!acc.models.includes(chunk.model)) acc.models.push(chunk.model);
    if ('usage' in chunk) acc.usage_key_chunks++;
    if (chunk.choices.length === 0 && chunk.usage) kind('usage');
    if (chunk.usage) acc.usage_chunks.push(chunk.usage);
    acc.last_chunk_has_usage = !!chunk.usage;
    if (chunk.choices.length === 0) acc.empty_choice_chunks++;
    for (const choice of chunk.choices) {
      const d = choice.delta ?? {};
      if (d.role) {
        acc.roles.push(d.role);
        kind('role');
      }
      if (d.reasoning_content) kind('reasoning');
      if (d.content) kind('content');
      if (d.tool_calls?.length) kind('tool_call');
      if (choice.finish_reason) kind('finish');
      if (d.content) {
        acc.content += d.content;
        acc.content_deltas++;
      }
      if (d.reasoning_content) {
        acc.reasoning_content += d.reasoning_content;
        acc.reasoning_deltas++;
      }
      if (d.reasoning_signature) acc.reasoning_signature = (acc.reasoning_signature ?? '') + d.reasoning_signature;
      for (const tc of d.tool_calls ?? []) {
        const slot = (acc.tool_calls[tc.index] ??= { id: null, type: null, name: '', arguments: '' });
        if (tc.id) slot.id = tc.id;
        if (tc.type) slot.type = tc.type;
        if (tc.function?.name) slot.name += tc.function.name;
        if (tc.function?.arguments) slot.arguments += tc.function.arguments;
      }
      if (choice.finish_reason) acc.finish_reasons.push(choice.finish_reason);
    }
  }
  return acc;
}

// The SDK's own stream helper: its accumulator builds the final completion.
async function helperStream(params) {
  const stream = client.chat.completions.stream({ ...params, stream: true });
  let chunks = 0;
  let contentDeltas = '';
  stream.on('content', (delta) => {
    contentDeltas += delta;
  });
  for await (const _chunk of stream) chunks++;
  const final = await stream.finalChatCompletion();
  return { chunks, content_events: contentDeltas, final: describeCompletion(final), final_raw: final };
}

const base = (extra = {}) => ({
  model: MODEL,
  max_tokens: 256,
  messages: [
    { role: 'system', content: SYSTEM },
    { role: 'user', content: PROMPT },
  ],
  ...extra,
});

const WITH_USAGE = { stream_options: { include_usage: true } };

// Tool call round trip: tool_calls -> role "tool" message -> answer.
async function toolRoundTrip(stream) {
  const question = "What's the weather in Paris?";
  const messages = [{ role: 'user', content: question }];
  // The first turn forces a tool call (tool_choice), the second leaves the choice to the model.
  const p1 = { model: MODEL, max_tokens: 256, tools: TOOLS, tool_choice: 'required', messages };
  let first;
  const out = {};
  if (stream) {
    const s = await helperStream({ ...p1, ...WITH_USAGE });
    out.first_stream = { chunks: s.chunks };
    first = s.final_raw;
  } else {
    first = await client.chat.completions.create(p1);
  }
  out.first = describeCompletion(first);
  const msg = first.choices[0].message;
  const calls = msg.tool_calls ?? [];
  if (calls.length === 0) return out;
  out.parsed_arguments = calls.map((c) => {
    try {
      return JSON.parse(c.function.arguments);
    } catch (e) {
      return { unparseable: c.function.arguments };
    }
  });
  const p2 = {
    model: MODEL,
    max_tokens: 256,
    tools: TOOLS,
    messages: [
      ...messages,
      { role: 'assistant', content: msg.content ?? null, tool_calls: calls },
      ...calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: TOOL_RESULT })),
    ],
  };
  if (stream) {
    const s = await helperStream({ ...p2, ...WITH_USAGE });
    out.second = s.final;
    out.second_stream = { chunks: s.chunks };
  } else {
    out.second = describeCompletion(await client.chat.completions.create(p2));
  }
  return out;
}

const THINKING = { reasoning_effort: 'medium', max_completion_tokens: 16000, max_tokens: undefined };

const scenarios = {
  async text() {
    return { completion: describeCompletion(await client.chat.completions.create(base())) };
  },
  async stream() {
    return rawStream(base(WITH_USAGE));
  },
  async stream_no_usage() {
    return rawStream(base());
  },
  async stream_final() {
    const s = await helperStream(base(WITH_USAGE));
    delete s.final_raw;
    return s;
  },
  async tools() {
    return toolRoundTrip(false);
  },
  async tools_stream() {
    return toolRoundTrip(true);
  },
  async thinking() {
    return { completion: describeCompletion(await client.chat.completions.create(base(THINKING))) };
  },
  async thinking_stream() {
    return rawStream(base({ ...THINKING, ...WITH_USAGE }));
  },
  async error() {
    try {
      const c = await client.chat.completions.create(base());
      return { unexpected_success: describeCompletion(c) };
    } catch (e) {
      return { error: describeError(e) };
    }
  },
  async error_stream() {
    try {
      const s = await rawStream(base(WITH_USAGE));
      return { unexpected_success: s };
    } catch (e) {
      return { error: describeError(e) };
    }
  },
};

async function main() {
  const names = process.argv.slice(2);
  if (names.length === 0 || names.some((n) => !(n in scenarios))) {
    console.error('usage: openai_client.mjs SCENARIO... (one of: %s)', Object.keys(scenarios).join(', '));
    process.exit(2);
  }
  for (const name of names) {
    let line;
    try {
      line = { scenario: name, ...(await scenarios[name]()) };
    } catch (e) {
      line = { scenario: name, exception: describeError(e), stack: String(e?.stack ?? '') };
    }
    process.stdout.write(JSON.stringify(line) + '\n');
  }
}

await main();
