"""Client headers reach the upstream the same way whichever route the SDK calls.

gatewayd forwards a safe list of client headers (User-Agent with ` gatewayd/<version>`
appended, OpenAI-Beta, Idempotency-Key, Accept and the SDK's X-Stainless-* headers; see
src/upstream/headers.rs) and never the client's key. Chat completions and a Responses
call translated onto the same chat upstream must forward the same list.
"""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from conftest import UPSTREAM_KEY, run_gatewayd

SAFE_EXACT = ("user-agent", "openai-beta", "idempotency-key")


@pytest.fixture(scope="module")
def gatewayd_version(gatewayd_bin) -> str:
    out = run_gatewayd(gatewayd_bin, "--version").stdout.split()
    assert out[0] == "gatewayd" and len(out) == 2, out
    return out[1]


@pytest.fixture
def recording_client(gateway, client_key):
    """An SDK client whose every request to gatewayd is kept, headers as sent."""
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]}, timeout=30.0)
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=client_key, max_retries=0, http_client=http
    ) as c:
        yield c, sent


def forwarded_by_default(headers) -> dict[str, str]:
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() in SAFE_EXACT or k.lower().startswith("x-stainless-")
    }


def check_forwarded(sent: httpx.Request, received, client_key: str, version: str, extra: dict):
    """What the upstream got for one SDK request: each header of the safe list, as the SDK
    sent it (User-Agent with gatewayd's product token appended). Returns them."""
    sdk_agent = sent.headers["user-agent"]
    assert sdk_agent.startswith("OpenAI/Python"), sdk_agent
    stainless = {
        k.lower(): v for k, v in sent.headers.items() if k.lower().startswith("x-stainless-")
    }
    assert {"x-stainless-lang", "x-stainless-package-version", "x-stainless-os"} <= stainless.keys(), stainless
    expected = {
        "user-agent": f"{sdk_agent} gatewayd/{version}",
        **{name.lower(): value for name, value in extra.items()},
        **stainless,
    }
    forwarded = forwarded_by_default(received.headers)
    assert forwarded == expected, f"the upstream saw {received.headers!r}"
    # gatewayd's own key for the upstream, never the client's.
    assert received.authorization == f"Bearer {UPSTREAM_KEY}"
    assert all(client_key not in v for v in received.headers.values()), received.headers
    return forwarded


def test_chat_and_translated_responses_forward_the_same_client_headers(
    recording_client, mock_upstream, client_key, gatewayd_version
):
    client, sent = recording_client
    beta = f"responses=v1; gatewayd-test={uuid.uuid4().hex}"

    chat_marker = f"chat-{uuid.uuid4().hex}"
    chat_extra = {"OpenAI-Beta": beta, "Idempotency-Key": f"idem-chat-{uuid.uuid4().hex}"}
    completion = client.chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": chat_marker}],
        extra_headers=chat_extra,
    )
    assert completion.choices[0].message.content
    chat_sent = sent[-1]
    assert chat_sent.url.path.endswith("/chat/completions")
    chat_received = mock_upstream.find(chat_marker)
    assert chat_received.path == "/v1/chat/completions"
    chat_forwarded = check_forwarded(
        chat_sent, chat_received, client_key, gatewayd_version, chat_extra
    )

    responses_marker = f"responses-{uuid.uuid4().hex}"
    responses_extra = {
        "OpenAI-Beta": beta,
        "Idempotency-Key": f"idem-responses-{uuid.uuid4().hex}",
    }
    response = client.responses.create(
        model="mock-model", input=responses_marker, extra_headers=responses_extra
    )
    assert response.status == "completed" and response.output_text
    responses_sent = sent[-1]
    assert responses_sent.url.path.endswith("/responses")
    responses_received = mock_upstream.find(responses_marker)
    assert responses_received.path == "/v1/chat/completions", "translated onto chat"
    responses_forwarded = check_forwarded(
        responses_sent, responses_received, client_key, gatewayd_version, responses_extra
    )

    # Both routes forward the same list: the same names, the same values but for the
    # per-request Idempotency-Key.
    assert responses_forwarded.keys() == chat_forwarded.keys()
    for name in chat_forwarded.keys() - {"idempotency-key"}:
        assert responses_forwarded[name] == chat_forwarded[name], name
