"""The official OpenAI Python SDK's Responses and Conversations clients against gatewayd.

Every test runs twice: with SQLite and with PostgreSQL (when GATEWAYD_TEST_POSTGRES_URL is
set; otherwise that variant is skipped). The upstream is the chat-completions mock from
conftest.py, so every call also proves the translation onto a chat upstream.
"""

from __future__ import annotations

import json
import os
import uuid

import openai
import pytest

from conftest import (
    MOCK_TEXT,
    MOCK_TOOL_ARGUMENTS,
    MOCK_TOOL_CALL_ID,
    MOCK_USAGE,
    UPSTREAM_KEY,
    _start,
    clean_env,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def responses_gateway(request, gatewayd_bin, client_key, mock_upstream, tmp_path_factory):
    """A keyed gatewayd over the mock upstream, storing in SQLite or PostgreSQL."""
    args = ["--host", "127.0.0.1", "--port", "0", "--upstream", mock_upstream.base_url]
    tmp = tmp_path_factory.mktemp(f"gatewayd-responses-{request.param}")
    args += ["--data-dir", str(tmp / "data")]
    if request.param == "postgres":
        url = os.environ.get("GATEWAYD_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("GATEWAYD_TEST_POSTGRES_URL not set: PostgreSQL variant not run")
        args += ["--database-url", url]
    gw = _start(
        gatewayd_bin,
        args,
        clean_env(API_SERVER_KEY=client_key, GATEWAYD_UPSTREAM_API_KEY=UPSTREAM_KEY),
        tmp,
    )
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def rc(responses_gateway, client_key):
    with openai.OpenAI(
        base_url=responses_gateway.base_url, api_key=client_key, timeout=30.0, max_retries=0
    ) as c:
        yield c


def marked(text: str) -> tuple[str, str]:
    marker = f"marker-{uuid.uuid4().hex}"
    return marker, f"{text} [{marker}]"


def upstream_messages(mock_upstream, marker: str) -> list[dict]:
    """The chat messages of the one upstream call whose last message carries `marker`."""
    found = [
        r.body
        for r in mock_upstream.snapshot()
        if isinstance(r.body, dict)
        and marker in json.dumps(r.body.get("messages", [])[-1:])
    ]
    assert len(found) == 1, f"{len(found)} upstream calls end with {marker}"
    assert found[0]["messages"], found[0]
    return found[0]["messages"]


def test_create_plain(rc, mock_upstream):
    marker, text = marked("hello")
    response = rc.responses.create(model="mock-model", input=text, instructions="Be brief.")
    assert response.id.startswith("resp_") and len(response.id) == 37
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == MOCK_TEXT
    assert response.output[0].type == "message"
    assert response.output[0].content[0].annotations == []
    assert response.usage.input_tokens == MOCK_USAGE["prompt_tokens"]
    assert response.usage.output_tokens == MOCK_USAGE["completion_tokens"]
    assert response.usage.total_tokens == MOCK_USAGE["total_tokens"]
    assert response.instructions == "Be brief."
    messages = upstream_messages(mock_upstream, marker)
    assert messages[0] == {"role": "system", "content": "Be brief."}


def test_create_stream(rc):
    _, text = marked("stream me")
    events = list(rc.responses.create(model="mock-model", input=text, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)), numbers
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == MOCK_TEXT
    assert events[-1].response.output_text == MOCK_TEXT
    assert events[-1].response.usage.total_tokens == MOCK_USAGE["total_tokens"]


def test_stream_helper_final_response(rc):
    _, text = marked("helper")
    with rc.responses.stream(model="mock-model", input=text) as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.output_text.done" in seen
    assert final.status == "completed"
    assert final.output_text == MOCK_TEXT


def test_retrieve_input_items_delete(rc):
    _, text = marked("keep me")
    created = rc.responses.create(model="mock-model", input=text)
    got = rc.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == MOCK_TEXT
    items = rc.responses.input_items.list(created.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].role == "user"
    rc.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        rc.responses.retrieve(created.id)


def test_three_turn_chain(rc, mock_upstream):
    previous = None
    markers = []
    for turn in range(3):
        marker, text = marked(f"turn {turn}")
        markers.append(marker)
        response = rc.responses.create(
            model="mock-model", input=text, previous_response_id=previous
        )
        assert response.previous_response_id == previous
        previous = response.id
    messages = upstream_messages(mock_upstream, markers[-1])
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2 + ["user"]
    for marker, message in zip(markers, messages[::2]):
        assert marker in json.dumps(message)


def test_store_false_cannot_be_chained(rc):
    _, text = marked("forget me")
    unstored = rc.responses.create(model="mock-model", input=text, store=False)
    with pytest.raises(openai.NotFoundError):
        rc.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        rc.responses.create(model="mock-model", input="next", previous_response_id=unstored.id)


def test_three_turn_conversation(rc, mock_upstream):
    conversation = rc.conversations.create(metadata={"topic": "sdk"})
    assert conversation.id.startswith("conv_")
    markers = []
    for turn in range(3):
        marker, text = marked(f"conv turn {turn}")
        markers.append(marker)
        response = rc.responses.create(model="mock-model", input=text, conversation=conversation.id)
        assert response.output_text == MOCK_TEXT
    messages = upstream_messages(mock_upstream, markers[-1])
    assert len(messages) == 5
    items = rc.conversations.items.list(conversation.id, order="asc")
    assert [i.role for i in items.data] == ["user", "assistant"] * 3
    assert markers[0] in items.data[0].content[0].text
    assert rc.conversations.retrieve(conversation.id).metadata == {"topic": "sdk"}
    deleted = rc.conversations.delete(conversation.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        rc.conversations.retrieve(conversation.id)


def test_function_call_round_trip(rc, mock_upstream):
    _, text = marked("weather in Paris?")
    first = rc.responses.create(model="mock-model", input=text, tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call"
    assert call.call_id == MOCK_TOOL_CALL_ID
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == json.loads(MOCK_TOOL_ARGUMENTS)
    marker = f"marker-{uuid.uuid4().hex}"
    final = rc.responses.create(
        model="mock-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": f"22C {marker}"}],
    )
    assert final.output_text == MOCK_TEXT
    messages = upstream_messages(mock_upstream, marker)
    assert messages[-2]["tool_calls"][0]["id"] == MOCK_TOOL_CALL_ID
    assert messages[-1] == {"role": "tool", "tool_call_id": MOCK_TOOL_CALL_ID, "content": f"22C {marker}"}


def test_refusal_names_the_param(rc):
    with pytest.raises(openai.BadRequestError) as info:
        rc.responses.create(model="mock-model", input="x", background=True)
    assert info.value.param == "background"
