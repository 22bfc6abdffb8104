"""A mock OpenAI chat-completions upstream for the Claude Code test (stdlib only).

It answers like a small, obedient model:
  * the last message is a tool result  -> text: "The command printed: <result>"
  * the last user turn contains RUN_TOOL and a `Bash` tool is offered
                                       -> a `Bash` tool call running `echo hi`
  * anything else                      -> text: "pong from the mock upstream (<model>)"
streamed (with a usage chunk when asked) or not, as the request says.

It also checks what a chat model's template needs: the first message is the one system
message and no system message comes later (Claude Code sends a `role: "system"` message
in the middle of `messages`; the gateway must merge it). A request breaking that is
answered 400 and recorded in `violations`.

Run alone for manual testing: `python3 mock_upstream.py` prints its base URL.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RUN_TOOL = "[run-tool]"
PONG = "pong from the mock upstream"
TOOL_CALL_ID = "call_claude_code_0001"
TOOL_COMMAND = "echo hi"
TOOL_ARGUMENTS = json.dumps({"command": TOOL_COMMAND, "description": "Print hi"})
FINAL_PREFIX = "The command printed: "
CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}


def text_of(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def system_problem(messages: list) -> str | None:
    """Why `messages` would break a chat template, or None."""
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if not roles or roles[0] != "system":
        return f"the first message is not a system message (roles: {roles})"
    later = [i for i, role in enumerate(roles) if role == "system" and i > 0]
    if later:
        return f"system messages after the first, at {later} (roles: {roles})"
    return None


class Mock:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # {"method", "path", "headers", "body", "t"}
        self.violations: list[str] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"mock": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> "Mock":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def chats(self) -> list[dict]:
        return [r["body"] for r in self.snapshot()
                if r["path"] == "/v1/chat/completions" and isinstance(r["body"], dict)]


def reply_for(body: dict) -> dict:
    """{"text": ...} or {"call": {"id", "name", "arguments"}} for a chat request."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return {"text": FINAL_PREFIX + text_of(last.get("content")).strip()}
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    tools = [t.get("function", {}).get("name") for t in body.get("tools") or []]
    if RUN_TOOL in text_of(last_user.get("content")) and "Bash" in tools:
        return {"call": {"id": TOOL_CALL_ID, "name": "Bash", "arguments": TOOL_ARGUMENTS}}
    return {"text": f"{PONG} ({body.get('model')})"}


def _chunk(model: str, delta: dict, finish_reason=None) -> dict:
    return {"id": "chatcmpl-cc-mock", "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def stream_events(body: dict, reply: dict) -> list[dict]:
    model = body.get("model", "mock")
    events = []
    if "call" in reply:
        call = reply["call"]
        events.append(_chunk(model, {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": ""}}]}))
        args = call["arguments"]
        for i in range(0, len(args), 9):  # split mid-token, as providers do
            events.append(_chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 9]}}]}))
        events.append(_chunk(model, {}, "tool_calls"))
    else:
        events.append(_chunk(model, {"role": "assistant", "content": ""}))
        words = reply["text"].split(" ")
        for i, word in enumerate(words):
            events.append(_chunk(model, {"content": word if i == 0 else " " + word}))
        events.append(_chunk(model, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = _chunk(model, {})
        usage["choices"], usage["usage"] = [], USAGE
        events.append(usage)
    return events


def completion(body: dict, reply: dict) -> dict:
    if "call" in reply:
        call = reply["call"]
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}}]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": reply["text"]}, "stop"
    return {"id": "chatcmpl-cc-mock", "object": "chat.completion", "created": CREATED,
            "model": body.get("model", "mock"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": USAGE}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mock: Mock

    def log_message(self, *args) -> None:
        pass

    def _record(self, body) -> None:
        with self.mock.lock:
            self.mock.requests.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body, "t": time.time()})

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": None, "code": None}})

    def do_GET(self) -> None:  # noqa: N802
        self._record(None)
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": CREATED, "owned_by": "mock"}]})
        else:
            self._error(404, "Unknown route.")

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(body)
        if self.path != "/v1/chat/completions":
            return self._error(404, "Unknown route.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, "The body is not a chat request.")
        problem = system_problem(body["messages"])
        if problem:
            with self.mock.lock:
                self.mock.violations.append(f"model {body.get('model')}: {problem}")
            return self._error(400, f"mock upstream: {problem}")
        reply = reply_for(body)
        if body.get("stream") is not True:
            return self._json(200, completion(body, reply))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        frames = [f"data: {json.dumps(e)}\n\n".encode() for e in stream_events(body, reply)]
        frames.append(b"data: [DONE]\n\n")
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


if __name__ == "__main__":
    mock = Mock().start()
    print(mock.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        mock.stop()
        sys.exit(0)
