// The official Anthropic SDK against api-proxy, for tests/integration/test_sdk.py.
//
//   PROXY_URL=http://127.0.0.1:P API_KEY=sk-... MODEL=kimi-k2.5 \
//     node tests/sdk/anthropic_client.mjs SCENARIO [SCENARIO...]
//
// Runs each scenario in order and prints one JSON line per scenario on stdout:
// {"scenario": NAME, ...what the SDK observed}. A scenario that throws prints
// {"scenario": NAME, "exception": {...}} instead; the Python side decides what
// was expected. Nothing is asserted here: the SDK's own parsers and typed errors
// are the judge, the test reads what they produced.
//
// Scenarios: text, stream, tools, tools_stream, thinking, thinking_stream,
// error, error_stream. All but the tool round trip send a system prompt.
// Optional env: PROMPT (the user text), TIMEOUT_MS.
import Anthropic from '@anthropic-ai/sdk';

const env = process.env;
const MODEL = env.MODEL;
const PROMPT = env.PROMPT || 'Hello from the Anthropic SDK test';
const SYSTEM = 'You are a terse test assistant.';
const TOOL_RESULT = 'Sunny, 22 degrees';

const client = new Anthropic({
  apiKey: env.API_KEY,
  baseURL: env.PROXY_URL, // the SDK appends /v1/messages
  maxRetries: 0, // a 429 must surface, not be retried into a success
  timeout: Number(env.TIMEOUT_MS || 20000),
});

const TOOLS = [
  {
    name: 'get_weather',
    description: 'Current weather of a city',
    input_schema: {
      type: 'object',
      properties: { city: { type: 'string', description: 'City name' } },
      required: ['city'],
    },
  },
];

// What a message looks like to the SDK's user, reduced to plain JSON.
function describeMessage(m) {
  return {
    id: m.id,
    type: m.type,
    role: m.role,
    model: m.model,
    stop_reason: m.stop_reason,
    content_types: m.content.map((b) => b.type),
    text: m.content.filter((b) => b.type === 'text').map((b) => b.text).join(''),
    tool_uses: m.content
      .filter((b) => b.type === 'tool_use')
      .map((b) => ({ id: b.id, name: b.name, input: b.input })),
    thinking: m.content
      .filter((b) => b.type === 'thinking')
      .map((b) => ({ thinking: b.thinking, signature: b.signature })),
    usage: m.usage ?? null,
  };
}

function describeError(e) {
  return {
    class: e?.constructor?.name ?? typeof e,
    is_api_error: e instanceof Anthropic.APIError,
    is_rate_limit: e instanceof Anthropic.RateLimitError,
    is_bad_request: e instanceof Anthropic.BadRequestError,
    is_connection_error: e instanceof Anthropic.APIConnectionError,
    status: e?.status ?? null,
    error: e?.error ?? null, // the parsed error body
    message: String(e?.message ?? e),
  };
}

// Streams one request with the SDK's MessageStream helper: the raw events it
// parsed (names and counts) and the message its accumulator built.
async function streamOnce(params) {
  const stream = client.messages.stream(params);
  const events = [];
  let textDeltas = 0;
  let thinkingDeltas = 0;
  let jsonDeltas = 0;
  let signatureDeltas = 0;
  const textEvents = [];
  stream.on('text', (delta) => textEvents.push(delta));
  for await (const ev of stream) {
    events.push(ev.type);
    if (ev.type === 'content_block_delta') {
      const t = ev.delta.type;
      if (t === 'text_delta') textDeltas++;
      else if (t === 'thinking_delta') thinkingDeltas++;
      else if (t === 'input_json_delta') jsonDeltas++;
      else if (t === 'signature_delta') signatureDeltas++;
    }
  }
  const final = await stream.finalMessage();
  return {
    events,
    text_deltas: textDeltas,
    thinking_deltas: thinkingDeltas,
    json_deltas: jsonDeltas,
    signature_deltas: signatureDeltas,
    text_events: textEvents.join(''),
    final: describeMessage(final),
    final_raw: final,
  };
}

const base = (extra = {}) => ({
  model: MODEL,
  max_tokens: 256,
  system: SYSTEM,
  messages: [{ role: 'user', content: PROMPT }],
  ...extra,
});

// Tool call round trip: tool_use -> tool_result -> answer, in the SDK's native way.
async function toolRoundTrip(stream) {
  const question = "What's the weather in Paris?";
  const messages = [{ role: 'user', content: question }];
  // The first turn forces the tool (tool_choice), the second leaves the choice to the model.
  const p1 = {
    model: MODEL,
    max_tokens: 256,
    tools: TOOLS,
    tool_choice: { type: 'tool', name: 'get_weather' },
    messages,
  };
  let first;
  let firstStream = null;
  if (stream) {
    firstStream = await streamOnce(p1);
    first = firstStream.final_raw;
  } else {
    first = await client.messages.create(p1);
  }
  const uses = first.content.filter((b) => b.type === 'tool_use');
  const out = {
    first: describeMessage(first),
    first_stream: firstStream && { ...firstStream, final_raw: undefined },
  };
  if (uses.length === 0) return out;
  const p2 = {
    model: MODEL,
    max_tokens: 256,
    tools: TOOLS,
    messages: [
      ...messages,
      { role: 'assistant', content: first.content },
      {
        role: 'user',
        content: uses.map((u) => ({ type: 'tool_result', tool_use_id: u.id, content: TOOL_RESULT })),
      },
    ],
  };
  if (stream) {
    const s = await streamOnce(p2);
    out.second = s.final;
    out.second_stream = { ...s, final_raw: undefined };
  } else {
    out.second = describeMessage(await client.messages.create(p2));
  }
  return out;
}

const THINKING = { thinking: { type: 'enabled', budget_tokens: 2048 }, max_tokens: 4096 };

const scenarios = {
  async text() {
    return { message: describeMessage(await client.messages.create(base())) };
  },
  async stream() {
    const s = await streamOnce(base());
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
    return { message: describeMessage(await client.messages.create(base(THINKING))) };
  },
  async thinking_stream() {
    const s = await streamOnce(base(THINKING));
    delete s.final_raw;
    return s;
  },
  async error() {
    try {
      const m = await client.messages.create(base());
      return { unexpected_success: describeMessage(m) };
    } catch (e) {
      return { error: describeError(e) };
    }
  },
  async error_stream() {
    const stream = client.messages.stream(base());
    try {
      const m = await stream.finalMessage();
      return { unexpected_success: describeMessage(m) };
    } catch (e) {
      return { error: describeError(e) };
    }
  },
};

async function main() {
  const names = process.argv.slice(2);
  if (names.length === 0 || names.some((n) => !(n in scenarios))) {
    console.error('usage: anthropic_client.mjs SCENARIO... (one of: %s)', Object.keys(scenarios).join(', '));
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
