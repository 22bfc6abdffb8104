"""Fixtures for the OpenAI SDK compatibility test: a mock OpenAI upstream (stdlib only)
and real gatewayd processes started from GATEWAYD_BIN.

Nothing here uses a fixed port: the mock binds 127.0.0.1:0 and gatewayd is started with
--port 0, its real port read from the `gatewayd listening` startup log line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

UPSTREAM_KEY = "sk-upstream-test-123"
STARTUP_TIMEOUT = 30.0

# ---------------------------------------------------------------------------
# What the mock upstream answers. The tests import these to know what to expect.
# ---------------------------------------------------------------------------

MOCK_COMPLETION_ID = "chatcmpl-mock-0001"
MOCK_CREATED = 1_700_000_000
MOCK_TEXT = "Hello from the mock upstream!"
MOCK_STREAM_PIECES = ["Hello", " from", " the", " mock", " upstream!"]
assert "".join(MOCK_STREAM_PIECES) == MOCK_TEXT
MOCK_USAGE = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
MOCK_TOOL_CALL_ID = "call_mock_0001"
MOCK_TOOL_ARGUMENTS = '{"location": "Paris, France", "unit": "celsius"}'
# Argument fragments as a real provider streams them: split mid-token.
MOCK_TOOL_ARGUMENT_PIECES = ['{"loc', 'ation": "Par', 'is, France", ', '"unit": "cel', 'sius"}']
assert "".join(MOCK_TOOL_ARGUMENT_PIECES) == MOCK_TOOL_ARGUMENTS
# Model "rate-limited": the first request with a given body gets 429 with these headers,
# a retry of the same body gets the normal answer.
RATE_LIMIT_RETRY_AFTER_SECS = 2
RATE_LIMIT_HEADERS = {
    "Retry-After": str(RATE_LIMIT_RETRY_AFTER_SECS),
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": f"{RATE_LIMIT_RETRY_AFTER_SECS}s",
    "x-request-id": "req_mock_ratelimited",
}
MOCK_BAD_REQUEST_ERROR = {
    "error": {
        "message": "Invalid value for 'model': 'bad-request' is not a model.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
}

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
LISTENING_PORT = re.compile(r"addresses=\"?127\.0\.0\.1:(\d+)")

# Variables that would change how gatewayd starts (keys, config, upstream) or where
# traffic goes (proxies): none of the caller's may leak into the processes under test.
_SCRUBBED_ENV = re.compile(
    r"^(API_SERVER_.*|GATEWAYD_.*|CREDENTIALS_DIRECTORY|RUST_LOG|NO_COLOR"
    r"|(HTTP|HTTPS|ALL|NO)_PROXY)$",
    re.IGNORECASE,
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SCRUBBED_ENV.match(k)}
    env.update(
        RUST_LOG="info",
        NO_COLOR="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


# The SDK (httpx) and urllib also honour proxy variables; loopback must never be proxied.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------
# Mock upstream
# ---------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    authorization: str | None
    raw_body: bytes
    body: object  # parsed JSON, or None when the body was not JSON
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class MockUpstream:
    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.requests)

    def find(self, marker: str) -> RecordedRequest:
        """The single recorded request whose body contains `marker`."""
        found = [r for r in self.snapshot() if marker.encode() in r.raw_body]
        assert len(found) == 1, (
            f"expected exactly one upstream request containing {marker!r}, got {len(found)}; "
            f"recorded: {[r.raw_body[:200] for r in self.snapshot()]}"
        )
        return found[0]


def _chunk(model: str, delta: dict, finish_reason=None, *, usage_null: bool = False) -> dict:
    chunk = {
        "id": MOCK_COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": MOCK_CREATED,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage_null:
        chunk["usage"] = None
    return chunk


def _tool_name(body: dict) -> str:
    tool = body["tools"][0]
    return tool["function"]["name"]


def _completion(body: dict) -> dict:
    model = body.get("model", "mock-model")
    if body.get("tools"):
        message = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": MOCK_TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": _tool_name(body), "arguments": MOCK_TOOL_ARGUMENTS},
                }
            ],
        }
        finish_reason = "tool_calls"
    else:
        message = {"role": "assistant", "content": MOCK_TEXT, "refusal": None}
        finish_reason = "stop"
    return {
        "id": MOCK_COMPLETION_ID,
        "object": "chat.completion",
        "created": MOCK_CREATED,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": MOCK_USAGE,
    }


def _stream_events(body: dict) -> list[dict]:
    model = body.get("model", "mock-model")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    u = include_usage  # OpenAI sends "usage": null on every chunk when usage is requested
    events: list[dict] = []
    if body.get("tools"):
        events.append(
            _chunk(
                model,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": MOCK_TOOL_CALL_ID,
                            "type": "function",
                            "function": {"name": _tool_name(body), "arguments": ""},
                        }
                    ],
                },
                usage_null=u,
            )
        )
        for piece in MOCK_TOOL_ARGUMENT_PIECES:
            events.append(
                _chunk(
                    model,
                    {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                    usage_null=u,
                )
            )
        events.append(_chunk(model, {}, "tool_calls", usage_null=u))
    else:
        events.append(_chunk(model, {"role": "assistant", "content": ""}, usage_null=u))
        for piece in MOCK_STREAM_PIECES:
            events.append(_chunk(model, {"content": piece}, usage_null=u))
        events.append(_chunk(model, {}, "stop", usage_null=u))
    if include_usage:
        events.append(
            {
                "id": MOCK_COMPLETION_ID,
                "object": "chat.completion.chunk",
                "created": MOCK_CREATED,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [],
                "usage": MOCK_USAGE,
            }
        )
    return events


class _MockHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider; gatewayd pools connections
    server_version = "mock-openai/1.0"
    mock: MockUpstream  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output quiet
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, events: list[dict]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        frames = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
        frames.append(b"data: [DONE]\n\n")
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

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
        if self.path != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": "Unknown route.", "type": "invalid_request_error", "param": None, "code": None}})
            return
        if not isinstance(body, dict):
            self._send_json(400, {"error": {"message": "Body is not JSON.", "type": "invalid_request_error", "param": None, "code": None}})
            return
        if body.get("model") == "bad-request":
            self._send_json(400, MOCK_BAD_REQUEST_ERROR)
            return
        if body.get("model") == "rate-limited":
            tries = sum(1 for r in self.mock.snapshot() if r.raw_body == raw)
            if tries == 1:
                error = {"error": {"message": "Rate limit reached.", "type": "requests",
                                   "param": None, "code": "rate_limit_exceeded"}}
                self._send_json(429, error, RATE_LIMIT_HEADERS)
                return
        if body.get("stream") is True:
            self._send_sse(_stream_events(body))
        else:
            self._send_json(200, _completion(body))

    def do_GET(self) -> None:  # noqa: N802
        self.mock.record(
            RecordedRequest(
                method="GET",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                authorization=self.headers.get("Authorization"),
                raw_body=b"",
                body=None,
            )
        )
        if self.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": "mock-model", "object": "model", "created": MOCK_CREATED, "owned_by": "mock"}]})
        else:
            self._send_json(404, {"error": {"message": "Unknown route.", "type": "invalid_request_error", "param": None, "code": None}})


@pytest.fixture(scope="session")
def mock_upstream():
    handler = type("MockHandler", (_MockHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="mock-upstream", daemon=True)
    mock = MockUpstream(server=server, thread=thread)
    handler.mock = mock
    thread.start()
    try:
        yield mock
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------
# gatewayd processes
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gatewayd_bin() -> str:
    path = os.environ.get("GATEWAYD_BIN")
    if not path:
        pytest.fail("GATEWAYD_BIN is not set; run the suite with `bash tests/sdk/run.sh`")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"GATEWAYD_BIN={path!r} is not an executable file")
    return os.path.abspath(path)


class Gatewayd:
    """One gatewayd subprocess; stderr is drained by a thread for the whole run."""

    def __init__(self, binary: str, args: list[str], env: dict[str, str], cwd: Path):
        self.args = [binary, *args]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._port_found = threading.Event()
        self.port: int | None = None
        self.proc = subprocess.Popen(
            self.args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._drain, name="gatewayd-stderr", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = ANSI_ESCAPE.sub("", line.rstrip("\n"))
            with self._lock:
                self.lines.append(line)
            if self.port is None and "gatewayd listening" in line:
                match = LISTENING_PORT.search(line)
                if match:
                    self.port = int(match.group(1))
                    self._port_found.set()
        self._port_found.set()  # EOF: wake a waiter so it can report the exit

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_listening(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """The port from the `gatewayd listening` line (for listeners /health can't reach
        over plain HTTP, such as TLS)."""
        self._port_found.wait(timeout)
        if self.port is None:
            raise RuntimeError(f"gatewayd did not start: {self.args}\n--- stderr ---\n{self.log()}")
        return self.port

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        self._port_found.wait(timeout)
        if self.port is None:
            code = self.proc.poll()
            state = f"exited with {code}" if code is not None else f"no listening line in {timeout:.0f} s"
            raise RuntimeError(f"gatewayd did not start ({state}): {self.args}\n--- stderr ---\n{self.log()}")
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gatewayd exited with {self.proc.returncode}\n--- stderr ---\n{self.log()}")
            try:
                with _NO_PROXY_OPENER.open(f"{self.base_url_root}/health", timeout=2) as response:
                    if response.status == 200:
                        return
                    last_error = f"status {response.status}"
            except (urllib.error.URLError, OSError) as err:
                last_error = err
            time.sleep(0.1)
        raise RuntimeError(f"GET /health never returned 200 (last: {last_error})\n--- stderr ---\n{self.log()}")

    @property
    def base_url_root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.base_url_root}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _start(binary: str, args: list[str], env: dict[str, str], cwd: Path) -> Gatewayd:
    gw = Gatewayd(binary, args, env, cwd)
    try:
        gw.wait_ready()
    except BaseException:
        gw.stop()
        raise
    return gw


def run_gatewayd(gatewayd_bin: str, *args: str) -> subprocess.CompletedProcess:
    """One short gatewayd command (keygen, --version) in a clean environment."""
    return subprocess.run(
        [gatewayd_bin, *args],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


@pytest.fixture(scope="session")
def client_key(gatewayd_bin) -> str:
    result = run_gatewayd(gatewayd_bin, "keygen")
    key = result.stdout.strip().splitlines()[0].strip()
    assert key.startswith("gwd_"), f"unexpected keygen output: {result.stdout!r}"
    return key


@pytest.fixture(scope="session")
def gateway(gatewayd_bin, client_key, mock_upstream, tmp_path_factory):
    """gatewayd with an API key, proxying every model to the mock upstream."""
    tmp = tmp_path_factory.mktemp("gatewayd-upstream")
    gw = _start(
        gatewayd_bin,
        [
            "--host", "127.0.0.1",
            "--port", "0",
            "--upstream", mock_upstream.base_url,
            "--data-dir", str(tmp / "data"),
        ],
        clean_env(API_SERVER_KEY=client_key, GATEWAYD_UPSTREAM_API_KEY=UPSTREAM_KEY),
        tmp,
    )
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def echo_gateway(gatewayd_bin, tmp_path_factory):
    """gatewayd with no upstream and no key: keyless loopback mode, built-in `echo` model."""
    tmp = tmp_path_factory.mktemp("gatewayd-echo")
    gw = _start(
        gatewayd_bin,
        ["--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp / "data")],
        clean_env(),
        tmp,
    )
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def client(gateway, client_key):
    import openai

    with openai.OpenAI(
        base_url=gateway.base_url, api_key=client_key, timeout=30.0, max_retries=0
    ) as c:
        yield c


@pytest.fixture
def echo_client(echo_gateway):
    import openai

    with openai.OpenAI(
        base_url=echo_gateway.base_url, api_key="unused", timeout=30.0, max_retries=0
    ) as c:
        yield c
