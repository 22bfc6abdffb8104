// The official OpenAI Node SDK's Responses and Conversations clients against a real
// gatewayd over the chat-completions mock of harness.mjs, so every call also proves the
// translation onto a chat upstream. Runs on SQLite, and on PostgreSQL too when
// GATEWAYD_TEST_POSTGRES_URL is set.

import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import OpenAI from "openai";

import { TEXT, TOOL_ARGS, TOOL_CALL_ID, USAGE, keygen, received, startGatewayd, startMock } from "./harness.mjs";

const WEATHER = {
  type: "function",
  name: "get_weather",
  description: "Current weather for a location.",
  parameters: {
    type: "object",
    properties: { location: { type: "string" } },
    required: ["location"],
    additionalProperties: false,
  },
  strict: true,
};

/** Every event a streamed text answer must carry, in order of first appearance. */
const TEXT_EVENTS = [
  "response.created",
  "response.in_progress",
  "response.output_item.added",
  "response.content_part.added",
  "response.output_text.delta",
  "response.output_text.done",
  "response.content_part.done",
  "response.output_item.done",
  "response.completed",
];

function marked(text) {
  const marker = `marker-${randomUUID()}`;
  return { marker, text: `${text} [${marker}]` };
}

/** The chat messages of the one upstream call whose last message carries `marker`. */
function upstreamMessages(marker) {
  const found = received
    .filter((r) => r.url === "/v1/chat/completions")
    .map((r) => JSON.parse(r.raw))
    .filter((body) => JSON.stringify(body.messages.slice(-1)).includes(marker));
  assert.equal(found.length, 1, `${found.length} upstream calls end with ${marker}`);
  return found[0].messages;
}

const backends = [["sqlite", []]];
if (process.env.GATEWAYD_TEST_POSTGRES_URL) {
  backends.push(["postgres", ["--database-url", process.env.GATEWAYD_TEST_POSTGRES_URL]]);
} else {
  test("PostgreSQL variant", { skip: "GATEWAYD_TEST_POSTGRES_URL not set" }, () => {});
}

let mock;
before(async () => {
  mock = await startMock();
});
after(() => mock?.close());

for (const [backend, extraArgs] of backends) {
  describe(`responses on ${backend}`, () => {
    let gatewayd;
    let client;

    before(async () => {
      const key = keygen();
      gatewayd = await startGatewayd(mock.url, key, extraArgs);
      client = new OpenAI({ baseURL: gatewayd.baseURL, apiKey: key, maxRetries: 0, timeout: 30_000 });
    });
    after(async () => gatewayd?.stop());

    test("responses.create and output_text", async () => {
      const { marker, text } = marked("hello");
      const response = await client.responses.create({ model: "mock-model", input: text, instructions: "Be brief." });
      assert.match(response.id, /^resp_[0-9a-f]{32}$/);
      assert.equal(response.object, "response");
      assert.equal(response.status, "completed");
      assert.equal(response.output_text, TEXT);
      assert.equal(response.output[0].type, "message");
      assert.equal(response.output[0].role, "assistant");
      assert.deepEqual(response.output[0].content[0].annotations, []);
      assert.equal(response.usage.input_tokens, USAGE.prompt_tokens);
      assert.equal(response.usage.output_tokens, USAGE.completion_tokens);
      assert.equal(response.usage.total_tokens, USAGE.total_tokens);
      assert.equal(response.instructions, "Be brief.");
      assert.deepEqual(upstreamMessages(marker)[0], { role: "system", content: "Be brief." });
    });

    test("responses.create with stream: true", async () => {
      const { text } = marked("stream me");
      const stream = await client.responses.create({ model: "mock-model", input: text, stream: true });
      const events = [];
      for await (const event of stream) events.push(event);
      const types = events.map((e) => e.type);
      assert.deepEqual(types.slice(0, 2), ["response.created", "response.in_progress"]);
      assert.equal(types.at(-1), "response.completed");
      assert.deepEqual([...new Set(types)], TEXT_EVENTS);
      for (let i = 1; i < events.length; i++) {
        assert.ok(events[i].sequence_number > events[i - 1].sequence_number, `sequence_number not increasing at ${i}`);
      }
      const deltas = events.filter((e) => e.type === "response.output_text.delta");
      assert.equal(deltas.map((e) => e.delta).join(""), TEXT);
      for (const e of deltas) {
        assert.equal(e.output_index, 0);
        assert.equal(e.content_index, 0);
        assert.equal(e.item_id, events.find((x) => x.type === "response.output_item.added").item.id);
      }
      const completed = events.at(-1).response;
      assert.equal(completed.status, "completed");
      assert.equal(completed.output[0].content[0].text, TEXT);
      assert.equal(completed.usage.total_tokens, USAGE.total_tokens);
      assert.equal(completed.id, events[0].response.id);
    });

    test("responses.stream helper's finalResponse", async () => {
      const { text } = marked("helper");
      const stream = client.responses.stream({ model: "mock-model", input: text });
      const seen = [];
      let snapshot = "";
      stream.on("response.output_text.delta", (event) => {
        snapshot = event.snapshot;
      });
      for await (const event of stream) seen.push(event.type);
      const final = await stream.finalResponse();
      assert.ok(seen.includes("response.output_text.done"));
      assert.equal(snapshot, TEXT);
      assert.equal(final.status, "completed");
      assert.equal(final.output_text, TEXT);
      const stored = await client.responses.retrieve(final.id);
      assert.equal(stored.output_text, TEXT);
    });

    test("retrieve, inputItems.list and delete", async () => {
      const { marker, text } = marked("keep me");
      const created = await client.responses.create({ model: "mock-model", input: text });
      const got = await client.responses.retrieve(created.id);
      assert.equal(got.id, created.id);
      assert.equal(got.output_text, TEXT);

      const items = [];
      for await (const item of client.responses.inputItems.list(created.id)) items.push(item);
      assert.deepEqual(items.map((i) => [i.type, i.role]), [["message", "user"]]);
      assert.ok(JSON.stringify(items[0].content).includes(marker));

      await client.responses.delete(created.id);
      await assert.rejects(client.responses.retrieve(created.id), (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError);
        assert.equal(err.error.type, "invalid_request_error");
        return true;
      });
      await assert.rejects(client.responses.delete(created.id), OpenAI.NotFoundError);
    });

    test("three turns chained by previous_response_id", async () => {
      let previous = null;
      const markers = [];
      for (let turn = 0; turn < 3; turn++) {
        const { marker, text } = marked(`turn ${turn}`);
        markers.push(marker);
        const response = await client.responses.create({
          model: "mock-model",
          input: text,
          ...(previous ? { previous_response_id: previous } : {}),
        });
        assert.equal(response.previous_response_id, previous);
        assert.equal(response.output_text, TEXT);
        previous = response.id;
      }
      const messages = upstreamMessages(markers[2]);
      assert.deepEqual(
        messages.map((m) => m.role),
        ["user", "assistant", "user", "assistant", "user"],
      );
      markers.forEach((marker, i) => assert.ok(JSON.stringify(messages[2 * i]).includes(marker)));
    });

    test("store: false cannot be retrieved or chained", async () => {
      const { text } = marked("forget me");
      const unstored = await client.responses.create({ model: "mock-model", input: text, store: false });
      assert.equal(unstored.store, false);
      await assert.rejects(client.responses.retrieve(unstored.id), OpenAI.NotFoundError);
      await assert.rejects(
        client.responses.create({ model: "mock-model", input: "next", previous_response_id: unstored.id }),
        OpenAI.NotFoundError,
      );
    });

    test("three turns in a conversation, items.list and delete", async () => {
      const conversation = await client.conversations.create({ metadata: { topic: "sdk" } });
      assert.match(conversation.id, /^conv_[0-9a-f]{32}$/);
      const markers = [];
      for (let turn = 0; turn < 3; turn++) {
        const { marker, text } = marked(`conv turn ${turn}`);
        markers.push(marker);
        const response = await client.responses.create({ model: "mock-model", input: text, conversation: conversation.id });
        assert.equal(response.output_text, TEXT);
        assert.equal(response.conversation.id, conversation.id);
      }
      assert.equal(upstreamMessages(markers[2]).length, 5);

      const page = await client.conversations.items.list(conversation.id, { order: "asc" });
      assert.deepEqual(
        page.data.map((i) => i.role),
        ["user", "assistant", "user", "assistant", "user", "assistant"],
      );
      assert.ok(page.data[0].content[0].text.includes(markers[0]));
      assert.equal(page.data[1].content[0].text, TEXT);
      const items = [];
      for await (const item of client.conversations.items.list(conversation.id, { limit: 2 })) items.push(item);
      assert.equal(items.length, 6, "auto-pagination walks every item");
      assert.deepEqual(items.map((i) => i.id), page.data.map((i) => i.id).reverse());

      const read = await client.conversations.retrieve(conversation.id);
      assert.deepEqual(read.metadata, { topic: "sdk" });
      const deleted = await client.conversations.delete(conversation.id);
      assert.equal(deleted.deleted, true);
      await assert.rejects(client.conversations.retrieve(conversation.id), OpenAI.NotFoundError);
      await assert.rejects(
        client.responses.create({ model: "mock-model", input: "again", conversation: conversation.id }),
        OpenAI.NotFoundError,
      );
    });

    test("function call round trip", async () => {
      const { text } = marked("weather in Paris?");
      const first = await client.responses.create({ model: "mock-model", input: text, tools: [WEATHER] });
      const call = first.output[0];
      assert.equal(call.type, "function_call");
      assert.equal(call.call_id, TOOL_CALL_ID);
      assert.equal(call.name, "get_weather");
      assert.deepEqual(JSON.parse(call.arguments), JSON.parse(TOOL_ARGS));
      assert.equal(first.output_text, "");

      const { marker } = marked("");
      const final = await client.responses.create({
        model: "mock-model",
        previous_response_id: first.id,
        input: [{ type: "function_call_output", call_id: call.call_id, output: `22C ${marker}` }],
      });
      assert.equal(final.output_text, TEXT);
      const messages = upstreamMessages(marker);
      assert.equal(messages.at(-2).tool_calls[0].id, TOOL_CALL_ID);
      assert.deepEqual(messages.at(-1), { role: "tool", tool_call_id: TOOL_CALL_ID, content: `22C ${marker}` });
    });

    test("a refusal names the parameter", async () => {
      await assert.rejects(client.responses.create({ model: "mock-model", input: "x", background: true }), (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError);
        assert.equal(err.param, "background");
        return true;
      });
    });
  });
}
