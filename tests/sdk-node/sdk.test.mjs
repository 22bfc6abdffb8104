// The official OpenAI Node SDK against a real gatewayd process and a mock upstream.
// GATEWAYD_BIN names the binary (tests/sdk-node/run.sh sets it). Nothing uses a fixed
// port: the mock binds 127.0.0.1:0 and gatewayd runs with --port 0.

import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import OpenAI from "openai";

const UPSTREAM_KEY = "sk-upstream-node-test-123";
const CREATED = 1_700_000_000;
const TEXT = "Hello from the mock upstream!";
const PIECES = ["Hello", " from", " the", " mock", " upstream!"];
const USAGE = { prompt_tokens: 11, completion_tokens: 6, total_tokens: 17 };
const TOOL_ARGS = '{"location": "Paris, France"}';
const BAD_REQUEST = {
  error: {
    message: "Invalid value for 'model': 'bad-request' is not a model.",
    type: "invalid_request_error",
    param: "model",
    code: "model_not_found",
  },
};
const MODELS = [
  { id: "mock-model", object: "model", created: CREATED, owned_by: "mock" },
  { id: "org/slashed-model", object: "model", created: CREATED + 1, owned_by: "org" },
];

// ---------------------------------------------------------------------------
// Mock upstream: records every request, answers like OpenAI.
// ---------------------------------------------------------------------------

const received = [];

function chunk(model, delta, finish_reason = null) {
  return {
    id: "chatcmpl-mock",
    object: "chat.completion.chunk",
    created: CREATED,
    model,
    choices: [{ index: 0, delta, finish_reason }],
  };
}

function completion(body) {
  const tools = Array.isArray(body.tools) && body.tools.length > 0;
  const message = tools
    ? {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_mock",
            type: "function",
            function: { name: body.tools[0].function.name, arguments: TOOL_ARGS },
          },
        ],
      }
    : { role: "assistant", content: TEXT };
  return {
    id: "chatcmpl-mock",
    object: "chat.completion",
    created: CREATED,
    model: body.model,
    choices: [{ index: 0, message, finish_reason: tools ? "tool_calls" : "stop" }],
    usage: USAGE,
  };
}

function answer(req, res, raw) {
  const send = (status, payload, headers = {}) => {
    const data = JSON.stringify(payload);
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(data);
  };
  if (req.method === "GET" && req.url === "/v1/models") {
    return send(200, { object: "list", data: MODELS });
  }
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    return send(404, { error: { message: "Unknown route.", type: "invalid_request_error", param: null, code: null } });
  }
  const body = JSON.parse(raw);
  if (body.model === "bad-request") {
    return send(400, BAD_REQUEST, { "x-request-id": "req_upstream_bad" });
  }
  if (body.stream !== true) {
    return send(200, completion(body), { "x-ratelimit-remaining-requests": "99" });
  }
  res.writeHead(200, { "content-type": "text/event-stream", "x-ratelimit-remaining-requests": "98" });
  const events = [chunk(body.model, { role: "assistant", content: "" })];
  for (const piece of PIECES) events.push(chunk(body.model, { content: piece }));
  events.push(chunk(body.model, {}, "stop"));
  if (body.stream_options?.include_usage) {
    events.push({ ...chunk(body.model, {}), choices: [], usage: USAGE });
  }
  for (const event of events) res.write(`data: ${JSON.stringify(event)}\n\n`);
  res.end("data: [DONE]\n\n");
}

const mock = http.createServer((req, res) => {
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    const raw = Buffer.concat(parts).toString("utf8");
    received.push({ method: req.method, url: req.url, headers: req.headers, raw });
    answer(req, res, raw);
  });
});

/** The one recorded request whose body contains `marker`. */
function upstreamSaw(marker) {
  const found = received.filter((r) => r.raw.includes(marker));
  assert.equal(found.length, 1, `expected one upstream request with ${marker}, got ${found.length}`);
  const seen = found[0];
  assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  for (const [name, value] of Object.entries(seen.headers)) {
    assert.ok(!String(value).includes(clientKey), `client key leaked upstream in ${name}`);
  }
  return seen;
}

// ---------------------------------------------------------------------------
// gatewayd
// ---------------------------------------------------------------------------

const BIN = process.env.GATEWAYD_BIN;
let gatewayd;
let stderr = "";
let clientKey;
let baseURL;
let client;

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(API_SERVER_.*|GATEWAYD_.*|CREDENTIALS_DIRECTORY|RUST_LOG|NO_COLOR|(HTTP|HTTPS|ALL|NO)_PROXY)$/i.test(k)) {
      env[k] = v;
    }
  }
  return { ...env, RUST_LOG: "info", NO_COLOR: "1", NO_PROXY: "127.0.0.1,localhost", ...extra };
}

before(async () => {
  assert.ok(BIN, "GATEWAYD_BIN is not set; run bash tests/sdk-node/run.sh");
  mock.listen(0, "127.0.0.1");
  await once(mock, "listening");
  const mockURL = `http://127.0.0.1:${mock.address().port}/v1`;
  clientKey = execFileSync(BIN, ["keygen"], { env: cleanEnv({}), encoding: "utf8" }).trim().split("\n")[0];
  assert.match(clientKey, /^gwd_/);
  const dataDir = mkdtempSync(join(tmpdir(), "gatewayd-node-"));
  gatewayd = spawn(
    BIN,
    ["--host", "127.0.0.1", "--port", "0", "--upstream", mockURL, "--data-dir", join(dataDir, "data")],
    { env: cleanEnv({ API_SERVER_KEY: clientKey, GATEWAYD_UPSTREAM_API_KEY: UPSTREAM_KEY }), stdio: ["ignore", "ignore", "pipe"] },
  );
  const port = await new Promise((resolve, reject) => {
    gatewayd.stderr.setEncoding("utf8");
    gatewayd.stderr.on("data", (text) => {
      stderr += text;
      const match = /gatewayd listening.*addresses="?127\.0\.0\.1:(\d+)/.exec(stderr);
      if (match) resolve(Number(match[1]));
    });
    gatewayd.on("exit", (code) => reject(new Error(`gatewayd exited with ${code}:\n${stderr}`)));
  });
  baseURL = `http://127.0.0.1:${port}/v1`;
  client = new OpenAI({ baseURL, apiKey: clientKey, maxRetries: 0, timeout: 30_000 });
});

after(async () => {
  if (gatewayd && gatewayd.exitCode === null) {
    gatewayd.kill("SIGTERM");
    await once(gatewayd, "exit");
  }
  mock.close();
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
