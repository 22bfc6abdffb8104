"""The official OpenAI Python SDK against a real gatewayd and a mock upstream.

Fixtures (conftest.py): `client` talks to a keyed gatewayd whose upstream is the stdlib
mock in `mock_upstream`; `echo_client` talks to a keyless gatewayd with no upstream,
which serves the built-in `echo` model.
"""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from conftest import (
    MOCK_BAD_REQUEST_ERROR,
    MOCK_COMPLETION_ID,
    MOCK_TEXT,
    MOCK_TOOL_ARGUMENTS,
    MOCK_TOOL_CALL_ID,
    MOCK_USAGE,
    RATE_LIMIT_RETRY_AFTER_SECS,
    UPSTREAM_KEY,
)

ERROR_KEYS = {"message", "type", "param", "code"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def marked_messages(text: str) -> tuple[str, list[dict]]:
    """Messages carrying a unique marker, so the mock's record of this request is found."""
    marker = f"marker-{uuid.uuid4().hex}"
    return marker, [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": f"{text} [{marker}]"},
    ]


def assert_upstream_saw(mock_upstream, marker: str, client_key: str):
    """The request reached the mock with the upstream key, never the client's key."""
    seen = mock_upstream.find(marker)
    assert seen.method == "POST"
    assert seen.path == "/v1/chat/completions"
    assert seen.authorization == f"Bearer {UPSTREAM_KEY}"
    for name, value in seen.headers.items():
        assert client_key not in value, f"client key leaked upstream in header {name}"
    assert client_key.encode() not in seen.raw_body
    return seen


def assert_error_shape(err: openai.APIStatusError) -> dict:
    payload = err.response.json()
    assert isinstance(payload, dict) and isinstance(payload.get("error"), dict), payload
    error = payload["error"]
    assert ERROR_KEYS <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    # The SDK unwraps {"error": {...}} into .body and exposes the fields as attributes.
    assert err.body == error
    assert err.message and err.type == error["type"]
    assert err.code == error["code"] and err.param == error["param"]
    return error


# ---------------------------------------------------------------------------
# 1. Non-streaming chat completion
# ---------------------------------------------------------------------------


def test_chat_completion(client, mock_upstream, client_key):
    marker, messages = marked_messages("Say hello.")
    completion = client.chat.completions.create(
        model="mock-model", messages=messages, temperature=0.2, max_tokens=32
    )

    assert completion.id == MOCK_COMPLETION_ID
    assert completion.object == "chat.completion"
    assert completion.model == "mock-model"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == MOCK_TEXT
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert completion.usage.model_dump(include=set(MOCK_USAGE)) == MOCK_USAGE

    seen = assert_upstream_saw(mock_upstream, marker, client_key)
    assert seen.body["model"] == "mock-model"
    assert seen.body["messages"] == messages
    assert seen.body["temperature"] == 0.2
    assert seen.body["max_tokens"] == 32
    assert "stream" not in seen.body or seen.body["stream"] is False


def test_chat_completion_raw_response_headers(client):
    _, messages = marked_messages("Headers?")
    raw = client.chat.completions.with_raw_response.create(model="mock-model", messages=messages)
    assert raw.http_response.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.headers.get("x-request-id")
    assert raw.parse().choices[0].message.content == MOCK_TEXT


# ---------------------------------------------------------------------------
# 2. Streaming
# ---------------------------------------------------------------------------


def test_chat_completion_stream(client, mock_upstream, client_key):
    marker, messages = marked_messages("Stream hello.")
    stream = client.chat.completions.create(model="mock-model", messages=messages, stream=True)

    pieces, finish_reasons, ids = [], [], set()
    with stream:
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            ids.add(chunk.id)
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)
            assert chunk.usage is None

    assert "".join(pieces) == MOCK_TEXT
    assert len(pieces) > 1, "the answer should arrive in several chunks"
    assert finish_reasons == ["stop"]
    assert ids == {MOCK_COMPLETION_ID}

    seen = assert_upstream_saw(mock_upstream, marker, client_key)
    assert seen.body["stream"] is True
    assert seen.body["messages"] == messages


def test_chat_completion_stream_include_usage(client, mock_upstream, client_key):
    marker, messages = marked_messages("Stream with usage.")
    stream = client.chat.completions.create(
        model="mock-model",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )

    text, usage_chunks, chunks = "", [], 0
    with stream:
        for chunk in stream:
            chunks += 1
            for choice in chunk.choices:
                text += choice.delta.content or ""
            if chunk.usage is not None:
                usage_chunks.append(chunk)

    assert text == MOCK_TEXT
    assert len(usage_chunks) == 1, "exactly one usage chunk"
    usage_chunk = usage_chunks[0]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.model_dump(include=set(MOCK_USAGE)) == MOCK_USAGE
    assert chunks >= len(MOCK_TEXT.split()) + 1

    seen = assert_upstream_saw(mock_upstream, marker, client_key)
    assert seen.body["stream_options"] == {"include_usage": True}


# ---------------------------------------------------------------------------
# 3. Tools
# ---------------------------------------------------------------------------


def test_tool_call(client, mock_upstream, client_key):
    marker, messages = marked_messages("Weather in Paris?")
    completion = client.chat.completions.create(
        model="mock-model", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    tool_calls = choice.message.tool_calls
    assert tool_calls is not None and len(tool_calls) == 1
    call = tool_calls[0]
    assert call.id == MOCK_TOOL_CALL_ID
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == MOCK_TOOL_ARGUMENTS
    assert json.loads(call.function.arguments) == {"location": "Paris, France", "unit": "celsius"}

    seen = assert_upstream_saw(mock_upstream, marker, client_key)
    # The gateway forwards the request bytes untouched: tools arrive exactly as sent.
    assert seen.body["tools"] == [WEATHER_TOOL]
    assert seen.body["tool_choice"] == "auto"
    assert seen.body["messages"] == messages


def test_tool_call_stream(client, mock_upstream, client_key):
    marker, messages = marked_messages("Weather in Paris, streamed?")
    stream = client.chat.completions.create(
        model="mock-model", messages=messages, tools=[WEATHER_TOOL], stream=True
    )

    calls: dict[int, dict] = {}
    finish_reasons = []
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                    if delta.id:
                        call["id"] = delta.id
                    if delta.function and delta.function.name:
                        call["name"] += delta.function.name
                    if delta.function and delta.function.arguments:
                        call["arguments"] += delta.function.arguments

    assert finish_reasons == ["tool_calls"]
    assert list(calls) == [0]
    assert calls[0] == {
        "id": MOCK_TOOL_CALL_ID,
        "name": "get_weather",
        "arguments": MOCK_TOOL_ARGUMENTS,
    }
    assert json.loads(calls[0]["arguments"])["location"] == "Paris, France"

    seen = assert_upstream_saw(mock_upstream, marker, client_key)
    assert seen.body["tools"] == [WEATHER_TOOL]
    assert seen.body["stream"] is True


def test_tool_call_stream_helper(client):
    """The SDK's higher-level `chat.completions.stream` helper accumulates the deltas itself."""
    _, messages = marked_messages("Weather via the stream helper?")
    with client.chat.completions.stream(
        model="mock-model", messages=messages, tools=[WEATHER_TOOL]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == MOCK_TOOL_ARGUMENTS


# ---------------------------------------------------------------------------
# 4. Errors
# ---------------------------------------------------------------------------


def test_upstream_bad_request_is_passed_through(client, mock_upstream, client_key):
    marker, messages = marked_messages("This model does not exist.")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="bad-request", messages=messages)
    err = info.value
    assert err.status_code == 400
    error = assert_error_shape(err)
    assert error == MOCK_BAD_REQUEST_ERROR["error"]
    assert_upstream_saw(mock_upstream, marker, client_key)


def test_upstream_bad_request_stream(client):
    """A 4xx from the upstream on a streamed request is still an HTTP error, not a stream."""
    _, messages = marked_messages("Bad model, streamed.")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="bad-request", messages=messages, stream=True)
    assert info.value.status_code == 400
    assert assert_error_shape(info.value) == MOCK_BAD_REQUEST_ERROR["error"]


def test_wrong_client_key_is_rejected(gateway, mock_upstream, client_key):
    wrong = "gwd_" + "A" * 43
    assert wrong != client_key
    before = len(mock_upstream.snapshot())
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=wrong, timeout=30.0, max_retries=0
    ) as bad_client:
        with pytest.raises(openai.AuthenticationError) as info:
            bad_client.chat.completions.create(
                model="mock-model", messages=[{"role": "user", "content": "hi"}]
            )
    err = info.value
    assert err.status_code == 401
    error = assert_error_shape(err)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    assert wrong not in error["message"]
    assert err.response.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert len(mock_upstream.snapshot()) == before, "a rejected request must not reach the upstream"


def test_gateway_validation_error_shape(client, mock_upstream):
    """An error made by gatewayd itself (not the upstream) has the OpenAI shape too."""
    before = len(mock_upstream.snapshot())
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="mock-model", messages=[])
    error = assert_error_shape(info.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert len(mock_upstream.snapshot()) == before


# ---------------------------------------------------------------------------
# 5. Built-in echo model (no upstream, keyless loopback)
# ---------------------------------------------------------------------------

ECHO_MESSAGES = [
    {"role": "system", "content": "Ignored by echo."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "please echo these exact words"},
]
ECHO_REPLY = "please echo these exact words"


def test_echo_completion(echo_client):
    completion = echo_client.chat.completions.create(model="echo", messages=ECHO_MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.model == "echo"
    assert completion.id
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ECHO_REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(ECHO_REPLY.split())
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_echo_stream(echo_client):
    stream = echo_client.chat.completions.create(
        model="echo",
        messages=ECHO_MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish_reasons, usage = "", [], None
    with stream:
        for chunk in stream:
            assert chunk.model == "echo"
            for choice in chunk.choices:
                text += choice.delta.content or ""
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)
            if chunk.usage is not None:
                usage = chunk.usage
    assert text == ECHO_REPLY
    assert finish_reasons == ["stop"]
    assert usage is not None and usage.completion_tokens == len(ECHO_REPLY.split())


def test_echo_stream_without_usage(echo_client):
    stream = echo_client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    with stream:
        chunks = list(stream)
    assert "".join(c.delta.content or "" for ch in chunks for c in ch.choices) == "one two three"
    assert all(ch.usage is None for ch in chunks)


def test_echo_content_parts(echo_client):
    """Array-of-parts user content is echoed as its text parts."""
    completion = echo_client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
    )
    assert completion.choices[0].message.content == "parts work"


def test_echo_unknown_model(echo_client):
    with pytest.raises(openai.NotFoundError) as info:
        echo_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 404
    error = assert_error_shape(info.value)
    assert error["code"] == "model_not_found"


# ---------------------------------------------------------------------------
# 6. Upstream headers reach the SDK: rate limits and retries, models.retrieve
# ---------------------------------------------------------------------------


def test_rate_limit_retry_after_makes_the_sdk_wait(gateway, client_key, mock_upstream):
    """A 429 with Retry-After passes through, so the SDK waits as long as the upstream
    asked (its own backoff without the header is under a second) and then retries."""
    marker, messages = marked_messages("Rate limited once.")
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=client_key, timeout=30.0, max_retries=2
    ) as retrying:
        raw = retrying.chat.completions.with_raw_response.create(
            model="rate-limited", messages=messages
        )
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == MOCK_TEXT

    tries = [r for r in mock_upstream.snapshot() if marker.encode() in r.raw_body]
    assert len(tries) == 2, "one 429, then one retry"
    waited = tries[1].received_at - tries[0].received_at
    assert waited >= RATE_LIMIT_RETRY_AFTER_SECS - 0.1, f"retried after {waited:.2f} s"
    # The SDK's own retry headers reach the upstream too.
    assert tries[1].headers.get("x-stainless-retry-count") == "1"


def test_rate_limit_headers_reach_the_client(gateway, client_key):
    _, messages = marked_messages("Rate limit headers.")
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=client_key, timeout=30.0, max_retries=0
    ) as once:
        with pytest.raises(openai.RateLimitError) as info:
            once.chat.completions.create(model="rate-limited", messages=messages)
    headers = info.value.response.headers
    assert headers["retry-after"] == str(RATE_LIMIT_RETRY_AFTER_SECS)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-upstream-request-id"] == "req_mock_ratelimited"
    assert headers["x-request-id"].startswith("req_")
    assert assert_error_shape(info.value)["code"] == "rate_limit_exceeded"


def test_models_retrieve(client):
    model = client.models.retrieve("mock-model")
    assert (model.id, model.object, model.owned_by) == ("mock-model", "model", "mock")
    assert model.created > 0
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert assert_error_shape(info.value)["code"] == "model_not_found"
