// The official Anthropic Node SDK (@anthropic-ai/sdk) against a real gatewayd serving the
// Messages API over a mock OpenAI chat-completions upstream of its own (below): create,
// streaming with finalMessage(), a tool round trip, countTokens, Anthropic-shaped errors.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import Anthropic from "@anthropic-ai/sdk";

import { CREATED, PIECES, TEXT, UPSTREAM_KEY, USAGE, keygen, startGatewayd, startMock } from "./harness.mjs";

const MODEL = "claude-sonnet-4-5";
const CALL_ID = "call_mock_anthropic";
const CALL_ARGS = ['{"loc', 'ation": "Par', 'is, France"}'];
const FINAL = "It is 18 degrees and sunny in Paris.";

// ---------------------------------------------------------------------------
// Mock chat upstream: text, or a tool call when tools are offered, or a final text
// once the last message is a tool result. Streams when asked to.
// ---------------------------------------------------------------------------

const received = [];

function chunk(model, delta, finish_reason = null) {
  return { id: "chatcmpl-mock", object: "chat.completion.chunk", created: CREATED, model, choices: [{ index: 0, delta, finish_reason }] };
}

function reply(body) {
  const last = body.messages.at(-1);
  if (last?.role === "tool") return { text: FINAL };
  if (Array.isArray(body.tools) && body.tools.length > 0) {
    return { call: { id: CALL_ID, name: body.tools[0].function.name, arguments: CALL_ARGS.join("") } };
  }
  return { text: TEXT };
}

function answer(req, res, raw) {
  const send = (status, payload) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(payload));
  };
  if (req.method === "GET" && req.url === "/v1/models") {
    return send(200, { object: "list", data: [{ id: "mock-model", object: "model", created: CREATED, owned_by: "mock" }] });
  }
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    return send(404, { error: { message: "Unknown route.", type: "invalid_request_error", param: null, code: null } });
  }
  const body = JSON.parse(raw);
  const out = reply(body);
  if (body.stream !== true) {
    const message = out.call
      ? { role: "assistant", content: null, tool_calls: [{ id: out.call.id, type: "function", function: { name: out.call.name, arguments: out.call.arguments } }] }
      : { role: "assistant", content: out.text };
    return send(200, {
      id: "chatcmpl-mock", object: "chat.completion", created: CREATED, model: body.model,
      choices: [{ index: 0, message, finish_reason: out.call ? "tool_calls" : "stop" }],
      usage: USAGE,
    });
  }
  res.writeHead(200, { "content-type": "text/event-stream" });
  const events = [];
  if (out.call) {
    events.push(chunk(body.model, { role: "assistant", content: null, tool_calls: [{ index: 0, id: out.call.id, type: "function", function: { name: out.call.name, arguments: "" } }] }));
    for (const piece of CALL_ARGS) events.push(chunk(body.model, { tool_calls: [{ index: 0, function: { arguments: piece } }] }));
    events.push(chunk(body.model, {}, "tool_calls"));
  } else {
    events.push(chunk(body.model, { role: "assistant", content: "" }));
    const pieces = out.text === TEXT ? PIECES : [out.text];
    for (const piece of pieces) events.push(chunk(body.model, { content: piece }));
    events.push(chunk(body.model, {}, "stop"));
  }
  if (body.stream_options?.include_usage) events.push({ ...chunk(body.model, {}), choices: [], usage: USAGE });
  for (const event of events) res.write(`data: ${JSON.stringify(event)}\n\n`);
  res.end("data: [DONE]\n\n");
}


/** Every upstream request carrying `marker`, in order, checked for key hygiene. */
function upstreamSaw(marker) {
  const found = received.filter((r) => r.raw.includes(marker));
  for (const seen of found) {
    assert.equal(seen.url, "/v1/chat/completions");
    assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
    assert.ok(!seen.raw.includes(clientKey), "client key leaked upstream");
    for (const value of Object.values(seen.headers)) assert.ok(!String(value).includes(clientKey));
  }
  return found.map((r) => JSON.parse(r.raw));
}

const textOf = (content) =>
  typeof content === "string" ? content : (content ?? []).map((p) => p.text ?? "").join("");

// ---------------------------------------------------------------------------

let mock;
let gatewayd;
let clientKey;
let root;
let client;

before(async () => {
  mock = await startMock(answer, received);
  clientKey = keygen();
  gatewayd = await startGatewayd(mock.url, clientKey);
  root = gatewayd.baseURL.replace(/\/v1$/, ""); // the SDK adds /v1/messages itself
  client = new Anthropic({ baseURL: root, apiKey: clientKey, maxRetries: 0, timeout: 30_000 });
});

after(async () => {
  await gatewayd?.stop();
  mock?.close();
});

let counter = 0;
function marked(text) {
  const marker = `marker-${process.pid}-${++counter}`;
  return { marker, messages: [{ role: "user", content: `${text} [${marker}]` }] };
}

const WEATHER_TOOL = {
  name: "get_weather",
  description: "Current weather for a location.",
  input_schema: { type: "object", properties: { location: { type: "string" } }, required: ["location"] },
};

test("messages.create", async () => {
  const { marker, messages } = marked("Say hello.");
  const message = await client.messages.create({ model: MODEL, max_tokens: 64, system: "You are a test.", messages });
  assert.equal(message.type, "message");
  assert.equal(message.role, "assistant");
  assert.match(message.id, /^msg_/);
  assert.equal(message.model, MODEL);
  assert.deepEqual(message.content.map((b) => b.type), ["text"]);
  assert.equal(message.content[0].text, TEXT);
  assert.equal(message.stop_reason, "end_turn");
  assert.equal(message.usage.input_tokens, USAGE.prompt_tokens);
  assert.equal(message.usage.output_tokens, USAGE.completion_tokens);

  const [chat] = upstreamSaw(marker);
  assert.equal(chat.model, MODEL);
  assert.equal(chat.max_completion_tokens ?? chat.max_tokens, 64);
  assert.equal(chat.messages[0].role, "system");
  assert.equal(textOf(chat.messages[0].content), "You are a test.");
  assert.equal(chat.messages[1].role, "user");
  assert.equal(textOf(chat.messages[1].content), messages[0].content);
});

test("messages.stream with finalMessage()", async () => {
  const { marker, messages } = marked("Stream hello.");
  const stream = client.messages.stream({ model: MODEL, max_tokens: 64, messages });
  const texts = [];
  stream.on("text", (delta) => texts.push(delta));
  const final = await stream.finalMessage();
  assert.equal(texts.join(""), TEXT);
  assert.ok(texts.length > 1, "the text should arrive in several deltas");
  assert.match(final.id, /^msg_/);
  assert.equal(final.content[0].type, "text");
  assert.equal(final.content[0].text, TEXT);
  assert.equal(final.stop_reason, "end_turn");
  assert.equal(typeof final.usage.input_tokens, "number");
  assert.equal(typeof final.usage.output_tokens, "number");
  const [chat] = upstreamSaw(marker);
  assert.equal(chat.stream, true);
});

async function toolRoundTrip(streamed) {
  const { marker, messages } = marked("Weather in Paris?");
  const tools = [WEATHER_TOOL];
  const call = (msgs) =>
    streamed
      ? client.messages.stream({ model: MODEL, max_tokens: 256, messages: msgs, tools }).finalMessage()
      : client.messages.create({ model: MODEL, max_tokens: 256, messages: msgs, tools });

  const first = await call(messages);
  assert.equal(first.stop_reason, "tool_use");
  const uses = first.content.filter((b) => b.type === "tool_use");
  assert.equal(uses.length, 1);
  assert.equal(uses[0].name, "get_weather");
  assert.ok(uses[0].id);
  assert.deepEqual(uses[0].input, { location: "Paris, France" });

  const final = await call([
    ...messages,
    { role: "assistant", content: first.content },
    { role: "user", content: [{ type: "tool_result", tool_use_id: uses[0].id, content: "18 degrees, sunny" }] },
  ]);
  assert.equal(final.stop_reason, "end_turn");
  assert.equal(final.content[0].text, FINAL);

  const seen = upstreamSaw(marker);
  assert.equal(seen.length, 2);
  assert.equal(seen[0].tools[0].function.name, "get_weather");
  assert.deepEqual(seen[0].tools[0].function.parameters, WEATHER_TOOL.input_schema);
  const chat = seen[1].messages;
  assert.deepEqual(chat.map((m) => m.role), ["user", "assistant", "tool"]);
  assert.equal(chat[1].tool_calls[0].id, CALL_ID);
  assert.equal(chat[2].tool_call_id, CALL_ID);
  assert.equal(textOf(chat[2].content), "18 degrees, sunny");
}

test("tool round trip", () => toolRoundTrip(false));
test("tool round trip, streamed", () => toolRoundTrip(true));

test("messages.countTokens", async () => {
  const short = await client.messages.countTokens({ model: MODEL, messages: [{ role: "user", content: "Hello." }] });
  assert.equal(typeof short.input_tokens, "number");
  assert.ok(short.input_tokens > 0);
  const long = await client.messages.countTokens({
    model: MODEL,
    system: "You are careful. ".repeat(20),
    messages: [{ role: "user", content: "Weather in Paris? ".repeat(20) }],
    tools: [WEATHER_TOOL],
  });
  assert.ok(long.input_tokens > short.input_tokens);
});

test("errors keep Anthropic's shape", async () => {
  const wrong = new Anthropic({ baseURL: root, apiKey: "gwd_wrong", maxRetries: 0, timeout: 30_000 });
  await assert.rejects(wrong.messages.create({ model: MODEL, max_tokens: 16, messages: marked("Wrong key.").messages }), (err) => {
    assert.ok(err instanceof Anthropic.AuthenticationError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.error.type, "error");
    assert.equal(err.error.error.type, "authentication_error");
    return true;
  });
  const response = await fetch(`${root}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": clientKey, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "no max_tokens" }] }),
  });
  assert.equal(response.status, 400);
  const body = await response.json();
  assert.equal(body.type, "error");
  assert.equal(body.error.type, "invalid_request_error");
});
