// What the Node SDK tests share: a mock chat-completions upstream that records every
// request, and real gatewayd processes over it. GATEWAYD_BIN names the binary
// (tests/sdk-node/run.sh sets it). Nothing uses a fixed port: the mock binds 127.0.0.1:0
// and gatewayd runs with --port 0, its port read from the `gatewayd listening` log line.

import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

export const UPSTREAM_KEY = "sk-upstream-node-test-123";
export const CREATED = 1_700_000_000;
export const TEXT = "Hello from the mock upstream!";
export const PIECES = ["Hello", " from", " the", " mock", " upstream!"];
export const USAGE = { prompt_tokens: 11, completion_tokens: 6, total_tokens: 17 };
export const TOOL_CALL_ID = "call_mock";
export const TOOL_ARGS = '{"location": "Paris, France"}';
export const BAD_REQUEST = {
  error: {
    message: "Invalid value for 'model': 'bad-request' is not a model.",
    type: "invalid_request_error",
    param: "model",
    code: "model_not_found",
  },
};
export const MODELS = [
  { id: "mock-model", object: "model", created: CREATED, owned_by: "mock" },
  { id: "org/slashed-model", object: "model", created: CREATED + 1, owned_by: "org" },
];

// ---------------------------------------------------------------------------
// Mock upstream: records every request, answers like OpenAI's chat completions.
// ---------------------------------------------------------------------------

/** Every request the mock received: method, url, headers, raw body text. */
export const received = [];

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
            id: TOOL_CALL_ID,
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

/**
 * Starts the mock upstream; resolves to `{ url, close() }` (`url` ends in /v1). Another
 * suite may answer its own way (`answerWith`) and keep its own log (`log`).
 */
export async function startMock(answerWith = answer, log = received) {
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on("data", (part) => parts.push(part));
    req.on("end", () => {
      const raw = Buffer.concat(parts).toString("utf8");
      log.push({ method: req.method, url: req.url, headers: req.headers, raw });
      answerWith(req, res, raw);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${server.address().port}/v1`, close: () => server.close() };
}

/** The one recorded request whose body contains `marker`, checked for key hygiene. */
export function upstreamSaw(marker, clientKey) {
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

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(API_SERVER_.*|GATEWAYD_.*|CREDENTIALS_DIRECTORY|RUST_LOG|NO_COLOR|(HTTP|HTTPS|ALL|NO)_PROXY)$/i.test(k)) {
      env[k] = v;
    }
  }
  return { ...env, RUST_LOG: "info", NO_COLOR: "1", NO_PROXY: "127.0.0.1,localhost", ...extra };
}

/** A fresh client key from `gatewayd keygen`. */
export function keygen() {
  assert.ok(BIN, "GATEWAYD_BIN is not set; run bash tests/sdk-node/run.sh");
  const key = execFileSync(BIN, ["keygen"], { env: cleanEnv({}), encoding: "utf8" }).trim().split("\n")[0];
  assert.match(key, /^gwd_/);
  return key;
}

/**
 * Starts gatewayd over `upstreamURL` with `clientKey` and a fresh data dir (plus
 * `extraArgs`, e.g. `--database-url`). Resolves to `{ baseURL, stop() }` once it listens.
 */
export async function startGatewayd(upstreamURL, clientKey, extraArgs = []) {
  assert.ok(BIN, "GATEWAYD_BIN is not set; run bash tests/sdk-node/run.sh");
  const dataDir = mkdtempSync(join(tmpdir(), "gatewayd-node-"));
  const args = ["--host", "127.0.0.1", "--port", "0", "--upstream", upstreamURL, "--data-dir", join(dataDir, "data")];
  const child = spawn(BIN, [...args, ...extraArgs], {
    env: cleanEnv({ API_SERVER_KEY: clientKey, GATEWAYD_UPSTREAM_API_KEY: UPSTREAM_KEY }),
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  const port = await new Promise((resolve, reject) => {
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text) => {
      stderr += text;
      const match = /gatewayd listening.*addresses="?127\.0\.0\.1:(\d+)/.exec(stderr);
      if (match) resolve(Number(match[1]));
    });
    child.on("exit", (code) => reject(new Error(`gatewayd exited with ${code}:\n${stderr}`)));
  });
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    },
  };
}
