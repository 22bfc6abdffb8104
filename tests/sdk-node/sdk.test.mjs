// The official OpenAI Node SDK's chat, models and session calls against a real gatewayd
// process and the mock upstream of harness.mjs.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import OpenAI from "openai";

import { BAD_REQUEST, MODELS, TEXT, USAGE, keygen, received, startGatewayd, startMock, upstreamSaw as saw } from "./harness.mjs";

let mock;
let gatewayd;
let clientKey;
let baseURL;
let client;

const upstreamSaw = (marker) => saw(marker, clientKey);

before(async () => {
  mock = await startMock();
  clientKey = keygen();
  gatewayd = await startGatewayd(mock.url, clientKey);
  baseURL = gatewayd.baseURL;
  client = new OpenAI({ baseURL, apiKey: clientKey, maxRetries: 0, timeout: 30_000 });
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

test("chat completion", async () => {
  const { marker, messages } = marked("Say hello.");
  const { data, response } = await client.chat.completions
    .create({ model: "mock-model", messages, temperature: 0.2 })
    .withResponse();
  assert.equal(data.object, "chat.completion");
  assert.equal(data.choices[0].message.content, TEXT);
  assert.equal(data.choices[0].finish_reason, "stop");
  assert.deepEqual(data.usage, USAGE);
  assert.equal(response.headers.get("x-ratelimit-remaining-requests"), "99");
  assert.match(response.headers.get("x-request-id"), /^req_/);
  const seen = upstreamSaw(marker);
  assert.deepEqual(JSON.parse(seen.raw).messages, messages);
  assert.match(seen.headers["user-agent"], /^OpenAI\/JS .* gatewayd\//);
  assert.equal(seen.headers["x-stainless-lang"], "js");
});

test("streaming with usage", async () => {
  const { marker, messages } = marked("Stream hello.");
  const stream = await client.chat.completions.create({
    model: "mock-model",
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  const usage = [];
  for await (const event of stream) {
    for (const choice of event.choices) text += choice.delta.content ?? "";
    if (event.usage) usage.push(event.usage);
  }
  assert.equal(text, TEXT);
  assert.deepEqual(usage, [USAGE]);
  assert.deepEqual(JSON.parse(upstreamSaw(marker).raw).stream_options, { include_usage: true });
});

test("tools", async () => {
  const { marker, messages } = marked("Weather in Paris?");
  const tools = [
    {
      type: "function",
      function: {
        name: "get_weather",
        parameters: { type: "object", properties: { location: { type: "string" } }, required: ["location"] },
      },
    },
  ];
  const completion = await client.chat.completions.create({ model: "mock-model", messages, tools });
  const call = completion.choices[0].message.tool_calls[0];
  assert.equal(completion.choices[0].finish_reason, "tool_calls");
  assert.equal(call.function.name, "get_weather");
  assert.deepEqual(JSON.parse(call.function.arguments), { location: "Paris, France" });
  assert.deepEqual(JSON.parse(upstreamSaw(marker).raw).tools, tools);
});

test("models.list and models.retrieve", async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ["mock-model", "org/slashed-model"]);

  const model = await client.models.retrieve("mock-model");
  assert.deepEqual(model, MODELS[0]);
  const slashed = await client.models.retrieve("org/slashed-model");
  assert.equal(slashed.owned_by, "org");

  await assert.rejects(client.models.retrieve("no-such-model"), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError);
    assert.equal(err.code, "model_not_found");
    return true;
  });
});

test("errors keep the OpenAI shape", async () => {
  const { messages } = marked("Bad model.");
  await assert.rejects(client.chat.completions.create({ model: "bad-request", messages }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.status, 400);
    assert.deepEqual(err.error, BAD_REQUEST.error);
    assert.equal(err.headers.get("x-upstream-request-id"), "req_upstream_bad");
    return true;
  });

  const wrong = new OpenAI({ baseURL, apiKey: `gwd_${"A".repeat(43)}`, maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create({ model: "mock-model", messages }), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError);
    assert.equal(err.code, "invalid_api_key");
    return true;
  });

  await assert.rejects(client.chat.completions.create({ model: "mock-model", messages: [] }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.param, "messages");
    return true;
  });

  await assert.rejects(client.post("/images/generations", { body: { prompt: "a cat" } }), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError);
    assert.equal(err.code, "unsupported_route");
    return true;
  });
});

test("a session through the X-Session-Id header", async () => {
  const created = await client.post("/sessions", { body: { metadata: { sdk: "node" } } });
  assert.match(created.id, /^sess_[0-9a-f]{32}$/);
  const headers = { "X-Session-Id": created.id };

  const first = marked("My name is Ada.");
  const reply = await client.chat.completions.create({ model: "mock-model", messages: first.messages }, { headers });
  assert.equal(reply.choices[0].message.content, TEXT);

  const second = marked("What is my name?");
  const { data: stream, response } = await client.chat.completions
    .create({ model: "mock-model", messages: second.messages, stream: true }, { headers })
    .withResponse();
  assert.equal(response.headers.get("x-session-id"), created.id);
  let text = "";
  for await (const event of stream) for (const choice of event.choices) text += choice.delta.content ?? "";
  assert.equal(text, TEXT);

  const sent = JSON.parse(upstreamSaw(second.marker).raw).messages;
  assert.deepEqual(sent, [...first.messages, { role: "assistant", content: TEXT }, ...second.messages]);
  const firstTurn = received.find((r) => r.raw.includes(first.marker));
  assert.equal(firstTurn.headers["x-session-id"], undefined, "the session header stays at the gateway");

  const stored = await client.get(`/sessions/${created.id}`);
  assert.equal(stored.messages.length, 4);
});
