"""The official Anthropic Python SDK against a real gatewayd serving the Messages API
(`POST /v1/messages`, `POST /v1/messages/count_tokens`, Anthropic-shaped `GET /v1/models`)
over a mock OpenAI chat-completions upstream.

The gatewayd here has its own config file: an exact model list plus a `claude-*` pattern
(so an unknown model is a 404), all routed to this file's mock. The mock is conftest's,
with one change a tool round trip needs: a request whose last message is a tool result is
answered with text (conftest's mock answers every request that carries tools with a call).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import ThreadingHTTPServer

import anthropic
import httpx
import pytest

from conftest import (
    MOCK_BAD_REQUEST_ERROR,
    MOCK_STREAM_PIECES,
    MOCK_TEXT,
    MOCK_TOOL_ARGUMENTS,
    MOCK_TOOL_CALL_ID,
    MOCK_USAGE,
    UPSTREAM_KEY,
    MockUpstream,
    RecordedRequest,
    _chunk,
    _completion,
    _MockHandler,
    _start,
    _stream_events,
    clean_env,
)

MODEL = "claude-sonnet-4-5"  # routed by the `claude-*` pattern
FINAL_TEXT = "It is 18 degrees and sunny in Paris."
FINAL_PIECES = ["It is 18 degrees", " and sunny", " in Paris."]
assert "".join(FINAL_PIECES) == FINAL_TEXT

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a location.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}


# ---------------------------------------------------------------------------
# Mock upstream and gatewayd (module-scoped, this file only)
# ---------------------------------------------------------------------------


class _AnthropicMockHandler(_MockHandler):
    """conftest's mock, except that a tool result gets a final text answer."""

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.mock.record(
            RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                authorization=self.headers.get("Authorization"),
                raw_body=raw,
                body=body,
            )
        )
        if self.path != "/v1/chat/completions" or not isinstance(body, dict):
            error = {"message": "Unknown route or body.", "type": "invalid_request_error",
                     "param": None, "code": None}
            self._send_json(404 if self.path != "/v1/chat/completions" else 400, {"error": error})
            return
        if body.get("model") == "bad-request":
            self._send_json(400, MOCK_BAD_REQUEST_ERROR)
            return
        messages = body.get("messages") or []
        after_tool = bool(messages) and messages[-1].get("role") == "tool"
        stream = body.get("stream") is True
        if after_tool and stream:
            self._send_sse(_final_stream(body))
        elif after_tool:
            self._send_json(200, _final_completion(body))
        elif stream:
            self._send_sse(_stream_events(body))
        else:
            self._send_json(200, _completion(body))


def _final_completion(body: dict) -> dict:
    completion = _completion({"model": body.get("model")})
    completion["choices"][0]["message"]["content"] = FINAL_TEXT
    return completion


def _final_stream(body: dict) -> list[dict]:
    model = body.get("model", "mock-model")
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    events += [_chunk(model, {"content": piece}) for piece in FINAL_PIECES]
    events.append(_chunk(model, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = _chunk(model, {})
        usage["choices"], usage["usage"] = [], MOCK_USAGE
        events.append(usage)
    return events


@pytest.fixture(scope="module")
def messages_upstream():
    handler = type("AnthropicMockHandler", (_AnthropicMockHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="anthropic-mock", daemon=True)
    mock = MockUpstream(server=server, thread=thread)
    handler.mock = mock
    thread.start()
    try:
        yield mock
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def messages_gateway(gatewayd_bin, client_key, messages_upstream, tmp_path_factory):
    """gatewayd routing `mock-model`, `bad-request` and `claude-*` to the mock; others 404."""
    tmp = tmp_path_factory.mktemp("gatewayd-anthropic")
    config = tmp / "gatewayd.toml"
    config.write_text(
        "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{messages_upstream.base_url}"\n'
        'api_key_env = "MOCK_UPSTREAM_KEY"\n'
        'models = ["mock-model", "bad-request", "claude-*"]\n'
    )
    gw = _start(
        gatewayd_bin,
        ["--host", "127.0.0.1", "--port", "0", "--config", str(config),
         "--data-dir", str(tmp / "data")],
        clean_env(API_SERVER_KEY=client_key, MOCK_UPSTREAM_KEY=UPSTREAM_KEY),
        tmp,
    )
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def aclient(messages_gateway, client_key):
    # The SDK appends /v1/messages itself: the base URL is the gateway's root.
    with anthropic.Anthropic(
        base_url=messages_gateway.base_url_root, api_key=client_key, timeout=30.0, max_retries=0
    ) as c:
        yield c


@pytest.fixture
def raw(messages_gateway):
    with httpx.Client(base_url=messages_gateway.base_url_root, timeout=30.0, trust_env=False) as c:
        yield c


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def marked(text: str) -> tuple[str, list[dict]]:
    marker = f"marker-{uuid.uuid4().hex}"
    return marker, [{"role": "user", "content": f"{text} [{marker}]"}]


def text_of(content) -> str:
    """A chat message's text, whether `content` is a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def upstream_requests(mock: MockUpstream, marker: str) -> list[RecordedRequest]:
    """Every chat request that carried `marker`, in arrival order, checked for key hygiene."""
    found = [r for r in mock.snapshot() if marker.encode() in r.raw_body]
    for seen in found:
        assert seen.path == "/v1/chat/completions", seen.path
        assert seen.authorization == f"Bearer {UPSTREAM_KEY}"
    return found


def upstream_saw(mock: MockUpstream, marker: str, client_key: str) -> RecordedRequest:
    found = upstream_requests(mock, marker)
    assert len(found) == 1, f"expected one upstream request with {marker}, got {len(found)}"
    seen = found[0]
    for name, value in seen.headers.items():
        assert client_key not in value, f"client key leaked upstream in header {name}"
    assert client_key.encode() not in seen.raw_body
    return seen


def max_tokens_of(chat_body: dict):
    return chat_body.get("max_completion_tokens", chat_body.get("max_tokens"))


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["type"] == "error", payload
    assert payload["error"]["type"] == kind, payload
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload


# ---------------------------------------------------------------------------
# 1. messages.create
# ---------------------------------------------------------------------------


def test_messages_create(aclient, messages_upstream, client_key):
    marker, messages = marked("Say hello.")
    message = aclient.messages.create(
        model=MODEL, max_tokens=64, system="You are a test.", messages=messages,
        stop_sequences=["STOP HERE"],
    )

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    assert isinstance(message.usage.input_tokens, int)
    assert isinstance(message.usage.output_tokens, int)
    assert message.usage.input_tokens == MOCK_USAGE["prompt_tokens"]
    assert message.usage.output_tokens == MOCK_USAGE["completion_tokens"]

    seen = upstream_saw(messages_upstream, marker, client_key)
    chat = seen.body
    assert chat["model"] == MODEL
    assert max_tokens_of(chat) == 64
    assert chat["stop"] in (["STOP HERE"], "STOP HERE")
    assert chat.get("stream") in (None, False)
    assert chat["messages"][0]["role"] == "system"
    assert text_of(chat["messages"][0]["content"]) == "You are a test."
    assert chat["messages"][1]["role"] == "user"
    assert text_of(chat["messages"][1]["content"]) == messages[0]["content"]
    assert len(chat["messages"]) == 2


def test_api_key_is_sent_as_the_sdk_sends_it(aclient, client_key):
    """`api_key=` works whichever header the SDK puts it in (2.x: `Authorization: Bearer`)."""
    _, messages = marked("Which header?")
    response = aclient.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=messages)
    sent = response.http_response.request.headers
    assert client_key in (sent.get("x-api-key") or "") + (sent.get("authorization") or "")
    assert sent.get("anthropic-version")
    assert response.parse().content[0].text == MOCK_TEXT
    assert response.headers.get("request-id") or response.headers.get("x-request-id")


def test_x_api_key_header(messages_gateway, client_key):
    """`x-api-key` alone, as Claude Code (with ANTHROPIC_API_KEY) and older SDKs send it."""
    _, messages = marked("x-api-key.")
    with anthropic.Anthropic(
        base_url=messages_gateway.base_url_root,
        api_key=None,
        auth_token=None,
        default_headers={"X-Api-Key": client_key},
        timeout=30.0,
        max_retries=0,
    ) as c:
        response = c.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=messages)
    sent = response.http_response.request.headers
    assert sent.get("x-api-key") == client_key
    assert "authorization" not in sent
    assert response.parse().content[0].text == MOCK_TEXT


def test_auth_token_bearer(messages_gateway, client_key):
    _, messages = marked("Bearer.")
    with anthropic.Anthropic(
        base_url=messages_gateway.base_url_root,
        api_key=None,
        auth_token=client_key,
        timeout=30.0,
        max_retries=0,
    ) as c:
        response = c.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=messages)
    sent = response.http_response.request.headers
    assert sent.get("authorization") == f"Bearer {client_key}"
    assert "x-api-key" not in sent
    assert response.parse().content[0].text == MOCK_TEXT


def test_system_blocks_and_content_blocks(aclient, messages_upstream, client_key):
    """System as text blocks (with cache_control, as Claude Code sends it) and user content
    as a list of text blocks."""
    marker, _ = marked("")
    message = aclient.messages.create(
        model=MODEL,
        max_tokens=32,
        system=[
            {"type": "text", "text": "First system block."},
            {"type": "text", "text": "Second system block.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Part one."},
                {"type": "text", "text": f"Part two [{marker}]", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
    )
    assert message.content[0].text == MOCK_TEXT
    chat = upstream_saw(messages_upstream, marker, client_key).body
    system = chat["messages"][0]
    assert system["role"] == "system"
    assert "First system block." in text_of(system["content"])
    assert "Second system block." in text_of(system["content"])
    assert [m["role"] for m in chat["messages"][1:]] == ["user"]
    user_text = text_of(chat["messages"][1]["content"])
    assert "Part one." in user_text and marker in user_text


def test_beta_messages_create(aclient, messages_upstream, client_key):
    """`client.beta.messages` sends `anthropic-beta` (Claude Code also adds `?beta=true`
    to the path: test_claude_code_shaped_request)."""
    marker, messages = marked("Beta.")
    response = aclient.beta.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=32,
        messages=messages,
        betas=["context-management-2025-06-27", "interleaved-thinking-2025-05-14"],
    )
    request = response.http_response.request
    assert request.url.path == "/v1/messages"
    assert "context-management-2025-06-27" in request.headers.get("anthropic-beta", "")
    message = response.parse()
    assert message.content[0].text == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    upstream_saw(messages_upstream, marker, client_key)


# ---------------------------------------------------------------------------
# 2. Streaming
# ---------------------------------------------------------------------------


def test_messages_stream_helper(aclient, messages_upstream, client_key):
    marker, messages = marked("Stream hello.")
    with aclient.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(pieces) == MOCK_TEXT
    assert len(pieces) > 1, "the text should arrive in several deltas"
    assert final.id.startswith("msg_")
    assert final.model == MODEL
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    assert isinstance(final.usage.input_tokens, int)
    assert isinstance(final.usage.output_tokens, int)

    chat = upstream_saw(messages_upstream, marker, client_key).body
    assert chat["stream"] is True
    assert max_tokens_of(chat) == 64


def test_messages_stream_events(aclient):
    """The raw event sequence, as the Messages API defines it."""
    _, messages = marked("Raw events.")
    stream = aclient.messages.create(model=MODEL, max_tokens=64, messages=messages, stream=True)
    events = []
    with stream:
        for event in stream:
            events.append(event)
    kinds = [e.type for e in events if e.type != "ping"]

    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    start = events[0].message
    assert start.id.startswith("msg_") and start.role == "assistant" and start.content == []
    assert isinstance(start.usage.input_tokens, int)
    assert kinds[1] == "content_block_start"
    block_start = next(e for e in events if e.type == "content_block_start")
    assert block_start.index == 0 and block_start.content_block.type == "text"
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert all(d.index == 0 and d.delta.type == "text_delta" for d in deltas)
    assert "".join(d.delta.text for d in deltas) == MOCK_TEXT
    assert kinds.count("content_block_stop") == 1
    assert kinds.index("content_block_stop") > max(i for i, k in enumerate(kinds) if k == "content_block_delta")
    message_delta = next(e for e in events if e.type == "message_delta")
    assert message_delta.delta.stop_reason == "end_turn"
    assert isinstance(message_delta.usage.output_tokens, int)


def test_stream_wire_format(raw, client_key):
    """`event:` lines name each `data:` payload's type; the content type is SSE."""
    _, messages = marked("Wire.")
    body = {"model": MODEL, "max_tokens": 32, "messages": messages, "stream": True}
    headers = {"x-api-key": client_key, "anthropic-version": "2023-06-01"}
    with raw.stream("POST", "/v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    frames = [f for f in text.replace("\r\n", "\n").split("\n\n") if f.strip()]
    names = []
    for frame in frames:
        lines = frame.split("\n")
        if all(line.startswith(":") for line in lines):
            continue  # an SSE comment (keep-alive)
        event = [line[len("event:"):].strip() for line in lines if line.startswith("event:")]
        data = "".join(line[len("data:"):].strip() for line in lines if line.startswith("data:"))
        assert len(event) == 1, frame
        payload = json.loads(data)
        assert payload["type"] == event[0], frame
        names.append(event[0])
    assert "[DONE]" not in text
    assert names[0] == "message_start" and names[-1] == "message_stop"


# ---------------------------------------------------------------------------
# 3. Tools
# ---------------------------------------------------------------------------


def _tool_round_trip(aclient, messages_upstream, *, stream: bool):
    marker, messages = marked("What is the weather in Paris?")
    tools = [WEATHER_TOOL]

    if stream:
        with aclient.messages.stream(model=MODEL, max_tokens=256, messages=messages, tools=tools) as s:
            first = s.get_final_message()
    else:
        first = aclient.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=tools)

    assert first.stop_reason == "tool_use"
    tool_uses = [b for b in first.content if b.type == "tool_use"]
    assert len(tool_uses) == 1
    call = tool_uses[0]
    assert isinstance(call.id, str) and call.id
    assert call.name == "get_weather"
    assert isinstance(call.input, dict)
    assert call.input == json.loads(MOCK_TOOL_ARGUMENTS)

    # The upstream got the tool in chat form.
    (seen_first,) = upstream_requests(messages_upstream, marker)
    chat_tools = seen_first.body["tools"]
    assert len(chat_tools) == 1 and chat_tools[0]["type"] == "function"
    assert chat_tools[0]["function"]["name"] == "get_weather"
    assert chat_tools[0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    assert chat_tools[0]["function"]["description"] == WEATHER_TOOL["description"]

    # Send the result back, the assistant turn exactly as the SDK returned it.
    followup = [
        *messages,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny"},
        ]},
    ]
    if stream:
        with aclient.messages.stream(model=MODEL, max_tokens=256, messages=followup, tools=tools) as s:
            final = s.get_final_message()
    else:
        final = aclient.messages.create(model=MODEL, max_tokens=256, messages=followup, tools=tools)

    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == FINAL_TEXT

    seen = upstream_requests(messages_upstream, marker)
    assert len(seen) == 2
    chat_messages = seen[1].body["messages"]
    assert [m["role"] for m in chat_messages] == ["user", "assistant", "tool"]
    assistant, tool = chat_messages[1], chat_messages[2]
    # The ids the upstream issued come back to it, whatever the client saw.
    assert [c["id"] for c in assistant["tool_calls"]] == [MOCK_TOOL_CALL_ID]
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == json.loads(MOCK_TOOL_ARGUMENTS)
    assert tool["tool_call_id"] == MOCK_TOOL_CALL_ID
    assert text_of(tool["content"]) == "18 degrees, sunny"


def test_tool_round_trip(aclient, messages_upstream):
    _tool_round_trip(aclient, messages_upstream, stream=False)


def test_tool_round_trip_streamed(aclient, messages_upstream):
    _tool_round_trip(aclient, messages_upstream, stream=True)


def test_tool_use_stream_events(aclient):
    """A streamed tool call: a tool_use block whose input arrives as input_json_delta."""
    _, messages = marked("Weather, streamed.")
    stream = aclient.messages.create(
        model=MODEL, max_tokens=64, messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    with stream:
        events = [e for e in stream if e.type != "ping"]
    starts = [e for e in events if e.type == "content_block_start"]
    tool_starts = [e for e in starts if e.content_block.type == "tool_use"]
    assert len(tool_starts) == 1
    block = tool_starts[0]
    assert block.content_block.name == "get_weather" and block.content_block.id
    partial = "".join(
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.index == block.index
        and e.delta.type == "input_json_delta"
    )
    assert json.loads(partial) == json.loads(MOCK_TOOL_ARGUMENTS)
    message_delta = next(e for e in events if e.type == "message_delta")
    assert message_delta.delta.stop_reason == "tool_use"


# ---------------------------------------------------------------------------
# 4. count_tokens
# ---------------------------------------------------------------------------


def test_count_tokens(aclient):
    short = aclient.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hello."}]
    )
    assert isinstance(short.input_tokens, int)
    assert short.input_tokens > 0

    long = aclient.messages.count_tokens(
        model=MODEL,
        system="You are a careful assistant. " * 20,
        messages=[{"role": "user", "content": "Tell me about the weather in Paris. " * 20}],
        tools=[WEATHER_TOOL],
    )
    assert long.input_tokens > short.input_tokens


def test_count_tokens_raw_shape(raw, client_key):
    response = raw.post(
        "/v1/messages/count_tokens",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"x-api-key": client_key, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"input_tokens"}
    assert isinstance(payload["input_tokens"], int) and payload["input_tokens"] > 0


# ---------------------------------------------------------------------------
# 5. Errors, in Anthropic's shape
# ---------------------------------------------------------------------------


def test_wrong_key_is_authentication_error(messages_gateway):
    _, messages = marked("Wrong key.")
    with anthropic.Anthropic(
        base_url=messages_gateway.base_url_root, api_key="gwd_wrong", timeout=30.0, max_retries=0
    ) as c:
        with pytest.raises(anthropic.AuthenticationError) as info:
            c.messages.create(model=MODEL, max_tokens=16, messages=messages)
    err = info.value
    assert err.status_code == 401
    assert_anthropic_error(err.response, 401, "authentication_error")
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "authentication_error"


def test_no_key_is_authentication_error(raw):
    response = raw.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert_anthropic_error(response, 401, "authentication_error")
    response = raw.post(
        "/v1/messages/count_tokens",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"x-api-key": "gwd_wrong", "anthropic-version": "2023-06-01"},
    )
    assert_anthropic_error(response, 401, "authentication_error")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}, id="no-max_tokens"),
        pytest.param({"model": MODEL, "max_tokens": 16}, id="no-messages"),
        pytest.param({"model": MODEL, "max_tokens": 16, "messages": "Hi"}, id="messages-not-a-list"),
        pytest.param({"model": MODEL, "max_tokens": "many", "messages": [{"role": "user", "content": "Hi"}]},
                     id="max_tokens-not-a-number"),
        pytest.param(b"{not json", id="not-json"),
    ],
)
def test_invalid_request(raw, client_key, messages_upstream, body):
    before = len(messages_upstream.snapshot())
    headers = {"x-api-key": client_key, "anthropic-version": "2023-06-01",
               "content-type": "application/json"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = raw.post("/v1/messages", content=data, headers=headers)
    assert_anthropic_error(response, 400, "invalid_request_error")
    assert len(messages_upstream.snapshot()) == before, "an invalid request reached the upstream"


def test_unknown_model_is_not_found(aclient, messages_upstream):
    before = len(messages_upstream.snapshot())
    _, messages = marked("Unknown model.")
    with pytest.raises(anthropic.NotFoundError) as info:
        aclient.messages.create(model="no-such-model", max_tokens=16, messages=messages)
    assert info.value.status_code == 404
    payload = assert_anthropic_error(info.value.response, 404, "not_found_error")
    assert "no-such-model" in payload["error"]["message"]
    assert len(messages_upstream.snapshot()) == before


def test_upstream_error_is_reshaped(aclient):
    _, messages = marked("Bad request upstream.")
    with pytest.raises(anthropic.BadRequestError) as info:
        aclient.messages.create(model="bad-request", max_tokens=16, messages=messages)
    payload = assert_anthropic_error(info.value.response, 400, "invalid_request_error")
    assert payload["error"]["message"] == MOCK_BAD_REQUEST_ERROR["error"]["message"]


def test_openai_routes_keep_openai_errors(raw):
    """The Anthropic dialect is only for /v1/messages: chat keeps OpenAI's error shape."""
    response = raw.post(
        "/v1/chat/completions",
        json={"model": "mock-model", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"authorization": "Bearer gwd_wrong"},
    )
    assert response.status_code == 401
    payload = response.json()
    assert "type" not in payload or payload.get("type") != "error"
    assert isinstance(payload["error"], dict) and payload["error"]["message"]


# ---------------------------------------------------------------------------
# 6. Models, in Anthropic's shape for a client sending anthropic-version
# ---------------------------------------------------------------------------


def test_models_list(aclient):
    models = list(aclient.models.list())
    ids = [m.id for m in models]
    assert "mock-model" in ids
    for model in models:
        assert model.type == "model"
        assert isinstance(model.display_name, str) and model.display_name
        assert model.created_at is not None


def test_models_list_raw_shape(raw, client_key):
    response = raw.get("/v1/models", headers={"x-api-key": client_key, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert isinstance(payload["data"], list) and payload["data"]
    assert payload["has_more"] is False
    assert payload["first_id"] == payload["data"][0]["id"]
    assert payload["last_id"] == payload["data"][-1]["id"]
    mock = next(m for m in payload["data"] if m["id"] == "mock-model")
    assert mock["type"] == "model"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", mock["created_at"]), mock

    # Without anthropic-version: OpenAI's shape, unchanged.
    openai_shape = raw.get("/v1/models", headers={"authorization": f"Bearer {client_key}"}).json()
    assert openai_shape["object"] == "list"
    assert all(m["object"] == "model" for m in openai_shape["data"])


# ---------------------------------------------------------------------------
# 7. A request shaped like Claude Code's (captured from Claude Code 2.1.332)
# ---------------------------------------------------------------------------


def test_claude_code_shaped_request(raw, client_key, messages_upstream):
    """What Claude Code sends: `?beta=true`, Bearer auth, anthropic-beta, a system of text
    blocks with cache_control, a `role: "system"` message *inside* `messages` (after the
    user turn), thinking/context_management/output_config/metadata, tools with
    `defer_loading`, a tool_result whose content is a string with cache_control. A chat
    upstream must get one system message, first, holding both system texts."""
    marker = f"marker-{uuid.uuid4().hex}"
    bash = {
        "name": "Bash",
        "description": "Executes a bash command and returns its output.",
        "input_schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command to execute"}},
            "required": ["command"],
            "additionalProperties": False,
        },
    }
    deferred = {
        "name": "DeferredToolPlaceholder",
        "description": "Placeholder for tools loaded later.",
        "input_schema": {"type": "object", "properties": {}},
        "defer_loading": True,
    }
    body = {
        "model": MODEL,
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.201; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an agent working with the user.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nAttribution.\n</system-reminder>"},
                {"type": "text", "text": f"run echo hi [{marker}]"},
            ]},
            {"role": "system", "content": "# Environment\nPrimary working directory: /tmp/work"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_cc_0001", "name": "Bash",
                 "input": {"command": "echo hi", "description": "Print hi"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_cc_0001", "content": "hi",
                 "is_error": False, "cache_control": {"type": "ephemeral"}},
            ]},
        ],
        "tools": [bash, deferred],
        "metadata": {"user_id": json.dumps({"device_id": "0" * 64, "account_uuid": "", "session_id": str(uuid.uuid4())})},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
    }
    headers = {
        "authorization": f"Bearer {client_key}",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-app": "cli",
        "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
    }
    with raw.stream("POST", "/v1/messages?beta=true", json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        text = "".join(response.iter_text())
    data = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert data[0]["type"] == "message_start" and data[-1]["type"] == "message_stop"
    reply = "".join(d["delta"].get("text", "") for d in data if d["type"] == "content_block_delta")
    assert reply == FINAL_TEXT

    (seen,) = upstream_requests(messages_upstream, marker)
    chat = seen.body["messages"]
    roles = [m["role"] for m in chat]
    assert roles[0] == "system"
    assert "system" not in roles[1:], roles
    assert roles[1:] == ["user", "assistant", "tool"], roles
    system_text = text_of(chat[0]["content"])
    assert "You are a Claude agent" in system_text
    assert "You are an agent working with the user." in system_text
    assert "# Environment" in system_text, "the mid-conversation system message was not merged"
    assert chat[2]["tool_calls"][0]["id"] == chat[3]["tool_call_id"]
    assert chat[2]["tool_calls"][0]["function"]["name"] == "Bash"
    assert text_of(chat[3]["content"]) == "hi"
    assert "Bash" in [t["function"]["name"] for t in seen.body.get("tools", [])]
    assert max_tokens_of(seen.body) == 32000
    assert "system" not in seen.body and "thinking" not in seen.body  # no Anthropic fields upstream
