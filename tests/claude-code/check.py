"""Claude Code against a real gatewayd and a mock chat upstream: the driver tests/claude-code/run.sh runs.

    python3 check.py GATEWAYD_BIN CLAUDE_BIN

Starts the mock (mock_upstream.py) and gatewayd (a `models = ["*"]` upstream, so a
`claude-*` name and a local name both route to the mock), then runs `claude -p ...
--output-format json` three times:

  1. plain: exits 0, `result` holds the mock's reply; the default (claude-*) model was asked.
  2. a tool round trip: the mock asks for `Bash` `echo hi`, Claude Code runs it
     (allowed with --allowedTools) and sends the result; the mock's final answer quotes it.
  3. --model my-local-model, with ANTHROPIC_API_KEY (x-api-key) instead of a Bearer token:
     the upstream request's first message is the one (merged) system message, holding
     both Claude Code's `system` and the `role: "system"` message it puts mid-conversation.

Every chat request in every run must have its system message first and only there (the
mock refuses others). Exits 0 when all pass, 1 otherwise, with the evidence printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mock_upstream import FINAL_PREFIX, PONG, RUN_TOOL, TOOL_CALL_ID, Mock, text_of

CLAUDE_TIMEOUT = 180
LOCAL_MODEL = "my-local-model"
LISTENING = re.compile(r"gatewayd listening.*?addresses=\"?127\.0\.0\.1:(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Failure(Exception):
    pass


def base_env() -> dict[str, str]:
    """A clean environment: nothing of the caller's keys, config, proxies or Claude settings."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TERM": "dumb",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


class Gatewayd:
    def __init__(self, binary: str, workdir: Path, upstream: str):
        self.lines: list[str] = []
        key = subprocess.run([binary, "keygen"], env=base_env(), capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()[0]
        self.key = key
        config = workdir / "gatewayd.toml"
        config.write_text(
            "[[upstreams]]\n"
            'name = "mock"\n'
            f'base_url = "{upstream}"\n'
            'models = ["*"]\n'
        )
        env = base_env() | {"API_SERVER_KEY": key, "RUST_LOG": "info", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", "0", "--config", str(config),
             "--data-dir", str(workdir / "data")],
            env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace")
        self.port: int | None = None
        found = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:
                line = ANSI.sub("", line.rstrip("\n"))
                self.lines.append(line)
                match = LISTENING.search(line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(30)
        if self.port is None:
            self.stop()
            raise Failure("gatewayd did not start:\n" + self.log())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_claude(claude: str, gateway: Gatewayd, workdir: Path, name: str, args: list[str],
               *, api_key_header: bool = False) -> dict:
    home = workdir / f"home-{name}"
    project = home / "project"
    project.mkdir(parents=True)
    env = base_env() | {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway.url,
        # No telemetry, update checks or other hosts: only ANTHROPIC_BASE_URL is contacted.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        # A failure shows at once instead of after Claude Code's backoff.
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    # ANTHROPIC_API_KEY is sent as x-api-key, ANTHROPIC_AUTH_TOKEN as Authorization: Bearer.
    env["ANTHROPIC_API_KEY" if api_key_header else "ANTHROPIC_AUTH_TOKEN"] = gateway.key
    cmd = [claude, "-p", *args, "--output-format", "json"]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, cwd=project, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=CLAUDE_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise Failure(f"[{name}] claude did not finish in {CLAUDE_TIMEOUT} s\n"
                      f"stdout: {err.stdout!r}\nstderr: {err.stderr!r}") from None
    elapsed = time.monotonic() - started
    evidence = (f"command: {' '.join(cmd)}\nexit: {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    if proc.returncode != 0:
        raise Failure(f"[{name}] claude exited with {proc.returncode}\n{evidence}")
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise Failure(f"[{name}] claude's output is not JSON\n{evidence}") from None
    if result.get("is_error") or result.get("subtype") != "success":
        raise Failure(f"[{name}] claude reports an error\n{evidence}")
    print(f"claude-code: [{name}] exit 0 in {elapsed:.1f} s: {result.get('result')!r}", flush=True)
    result["_evidence"] = evidence
    return result


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def chats_since(mock: Mock, start: int) -> list[dict]:
    return [r["body"] for r in mock.snapshot()[start:]
            if r["path"] == "/v1/chat/completions" and isinstance(r["body"], dict)]


def summary(chats: list[dict]) -> str:
    return json.dumps([{"model": c.get("model"), "stream": c.get("stream"),
                        "roles": [m.get("role") for m in c.get("messages", [])],
                        "tools": len(c.get("tools") or [])} for c in chats], indent=1)


def main() -> int:
    gatewayd_bin, claude = sys.argv[1], sys.argv[2]
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-claude-code-"))
    mock = Mock().start()
    gateway = None
    try:
        gateway = Gatewayd(gatewayd_bin, workdir, mock.base_url)

        # 1. Plain.
        start = len(mock.snapshot())
        result = run_claude(claude, gateway, workdir, "plain", ["say pong"])
        chats = chats_since(mock, start)
        expect(PONG in result["result"],
               f"[plain] result lacks the mock's reply: {result['result']!r}\n{result['_evidence']}")
        expect(chats and all(str(c.get("model", "")).startswith("claude-") for c in chats),
               f"[plain] expected the default claude-* model upstream:\n{summary(chats)}")

        # 2. A tool round trip (Bash `echo hi`, allowed without a prompt).
        start = len(mock.snapshot())
        result = run_claude(claude, gateway, workdir, "tool",
                            [f"Use the Bash tool to run: echo hi {RUN_TOOL}",
                             "--allowedTools", "Bash(echo hi)"])
        chats = chats_since(mock, start)
        expect(result["result"].strip() == FINAL_PREFIX + "hi",
               f"[tool] expected {FINAL_PREFIX + 'hi'!r}, got {result['result']!r}\n{result['_evidence']}")
        expect(not result.get("permission_denials"),
               f"[tool] permission denied: {result.get('permission_denials')}")
        with_result = [c for c in chats if c["messages"][-1].get("role") == "tool"]
        expect(len(with_result) == 1, f"[tool] expected one request with the tool result:\n{summary(chats)}")
        last = with_result[0]["messages"]
        expect(last[-1].get("tool_call_id") == TOOL_CALL_ID,
               f"[tool] the tool result's id is {last[-1].get('tool_call_id')!r}, not {TOOL_CALL_ID!r}")
        expect(text_of(last[-1].get("content")).strip() == "hi",
               f"[tool] the tool result is {last[-1].get('content')!r}, not 'hi'")
        calls = [m for m in last if m.get("role") == "assistant" and m.get("tool_calls")]
        expect(calls and calls[-1]["tool_calls"][0]["id"] == TOOL_CALL_ID,
               f"[tool] the assistant's tool call did not come back with id {TOOL_CALL_ID}")

        # 3. A local (non-claude) model, key sent as x-api-key.
        start = len(mock.snapshot())
        result = run_claude(claude, gateway, workdir, "local-model",
                            ["say pong", "--model", LOCAL_MODEL], api_key_header=True)
        chats = chats_since(mock, start)
        expect(f"{PONG} ({LOCAL_MODEL})" in result["result"],
               f"[local-model] result lacks the mock's reply: {result['result']!r}")
        local = [c for c in chats if c.get("model") == LOCAL_MODEL]
        expect(local, f"[local-model] no upstream request for {LOCAL_MODEL}:\n{summary(chats)}")
        for chat in local:
            messages = chat["messages"]
            roles = [m.get("role") for m in messages]
            expect(roles[0] == "system" and "system" not in roles[1:],
                   f"[local-model] system message not first and alone: {roles}")
            system = text_of(messages[0].get("content"))
            # Claude Code 2.1.332: its `system` blocks say "You are a Claude agent..."; the
            # environment ("# Environment ...") comes as a role:"system" message after the user turn.
            expect("You are a Claude agent" in system,
                   "[local-model] the top-level system text is not in the first system message")
            expect("# Environment" in system,
                   "[local-model] the mid-conversation system message was not merged into the first")
            expect(all("# Environment" not in text_of(m.get("content")) for m in messages[1:]),
                   "[local-model] the environment text also appears in a later message")

        # Every request, every run.
        expect(not mock.violations, "system message problems:\n" + "\n".join(mock.violations))
        print(f"claude-code: all 3 runs passed ({len(mock.chats())} upstream chat requests)")
        return 0
    except Failure as failure:
        print(f"claude-code: FAILED: {failure}", file=sys.stderr)
        if mock.violations:
            print("mock violations:\n" + "\n".join(mock.violations), file=sys.stderr)
        print("upstream chat requests:\n" + summary(mock.chats()), file=sys.stderr)
        if gateway is not None:
            print("--- gatewayd log (last lines) ---\n" + gateway.log(), file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            gateway.stop()
        mock.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
