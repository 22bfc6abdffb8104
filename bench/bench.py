#!/usr/bin/env python3
"""Helpers for bench/run.sh (Python 3.11 standard library only).

Sub-commands:
  parse-wrk      turn wrk --latency output into one JSON line
  fixed-rate     open-loop, fixed-rate latency driver (stands in for wrk2)
  ttfb           sequential time-to-first-body-byte on one keep-alive socket
  slow-upstream  SSE upstream that sends one chunk and then holds the stream
  hold-streams   open N concurrent streaming requests and read a PID's RSS
  mk-sessions    create sessions through POST /v1/sessions
  rss            print VmRSS (kB) of a PID
  report         build the markdown report from results.jsonl

Every measuring sub-command prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import signal
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit

# --------------------------------------------------------------------------
# small utilities


def die(msg: str, code: int = 2) -> None:
    print(f"bench.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def read_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def parse_target(url: str) -> tuple[str, int, str]:
    u = urlsplit(url)
    if u.scheme != "http":
        die(f"only http:// URLs are supported: {url}")
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return u.hostname or "127.0.0.1", u.port or 80, path


def build_request(method: str, host: str, port: int, path: str, headers: list[str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    have_ct = False
    for h in headers:
        if ":" not in h:
            die(f"bad header (want 'Name: value'): {h!r}")
        if h.split(":", 1)[0].strip().lower() == "content-type":
            have_ct = True
        lines.append(h.strip())
    if body or method == "POST":
        if not have_ct:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def load_body(args) -> bytes:
    if getattr(args, "body_file", None):
        with open(args.body_file, "rb") as f:
            return f.read()
    return (getattr(args, "body", None) or "").encode()


class HttpError(Exception):
    pass


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise HttpError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    hdrs: dict[str, str] = {}
    for ln in lines[1:]:
        if not ln:
            continue
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


# --------------------------------------------------------------------------
# async HTTP/1.1 response reader (keep-alive; content-length or chunked)


async def aread_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Returns (status, body, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, hdrs = parse_head(head[:-4])
    keep = hdrs.get("connection", "").lower() != "close"
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers (usually none) end with an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(chunks), keep
    if "content-length" in hdrs:
        return status, await reader.readexactly(int(hdrs["content-length"])), keep
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", keep
    return status, await reader.read(), False


# --------------------------------------------------------------------------
# parse-wrk

_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _to_ms(tok: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", tok.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNIT[m.group(2)]


def cmd_parse_wrk(args) -> None:
    text = open(args.file).read()
    out: dict = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non2xx": 0, "socket_errors": 0}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}(?:\.000)?%\s+(\S+)", text, re.M)
        if m:
            out[f"p{p}_ms"] = _to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
    print(json.dumps(out))


# --------------------------------------------------------------------------
# fixed-rate driver


async def _fixed_rate(args) -> dict:
    host, port, path = parse_target(args.url)
    req = build_request("POST", host, port, path, args.header, load_body(args))
    rate, conns = float(args.rate), int(args.conns)
    lat: list[float] = []
    lag: list[float] = []
    errors = 0
    non2xx = 0
    sent = 0

    conn_list = []
    for _ in range(conns):
        r, w = await asyncio.open_connection(host, port)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn_list.append([r, w])

    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    t_measure = t0 + args.warmup
    t_end = t_measure + args.duration
    perf = time.perf_counter

    async def worker(k: int) -> None:
        nonlocal errors, non2xx, sent
        r, w = conn_list[k]
        j = 0
        while True:
            intended = t0 + (k + j * conns) / rate
            j += 1
            if intended >= t_end:
                return
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            measuring = intended >= t_measure
            s = perf()
            late = loop.time() - intended
            try:
                w.write(req)
                status, _, keep = await aread_response(r)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError):
                if measuring:
                    errors += 1
                keep = False
                status = 0
            e = perf()
            if measuring:
                sent += 1
                if 200 <= status < 300:
                    lat.append((e - s) * 1000.0)
                    lag.append(max(0.0, late) * 1000.0)
                elif status:
                    non2xx += 1
            if not keep:
                w.close()
                try:
                    r, w = await asyncio.open_connection(host, port)
                    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    errors += 1
                    await asyncio.sleep(0.01)

    gc.disable()
    try:
        await asyncio.gather(*(worker(k) for k in range(conns)))
    finally:
        gc.enable()
    for _, w in conn_list:
        w.close()
    lat.sort()
    lag.sort()
    return {
        "target_rate": rate,
        "achieved_rate": round(sent / args.duration, 1),
        "requests": sent,
        "ok": len(lat),
        "non2xx": non2xx,
        "errors": errors,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "p999_ms": pct(lat, 99.9),
        "max_ms": lat[-1] if lat else float("nan"),
        "send_lag_p99_ms": pct(lag, 99),
    }


def cmd_fixed_rate(args) -> None:
    print(json.dumps(asyncio.run(_fixed_rate(args))))


# --------------------------------------------------------------------------
# ttfb: sequential requests over one keep-alive socket, blocking I/O


class SockReader:
    def __init__(self, sock: socket.socket):
        self.s = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        d = self.s.recv(65536)
        if not d:
            raise HttpError("connection closed")
        self.buf += d

    def until(self, sep: bytes) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            self._fill()

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def ensure(self, n: int) -> None:
        while len(self.buf) < n:
            self._fill()


def _connect(host: str, port: int) -> socket.socket:
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def cmd_ttfb(args) -> None:
    host, port, path = parse_target(args.url)
    req = build_request("POST", host, port, path, args.header, load_body(args))
    perf = time.perf_counter
    ttfb: list[float] = []
    total: list[float] = []
    errors = 0
    non2xx = 0
    sock = _connect(host, port)
    rd = SockReader(sock)
    gc.disable()
    for i in range(args.warmup + args.count):
        try:
            t_send = perf()
            sock.sendall(req)
            head = rd.until(b"\r\n\r\n")
            status, hdrs = parse_head(head[:-4])
            chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
            t_first = None
            if chunked:
                while True:
                    line = rd.until(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while rd.until(b"\r\n") != b"\r\n":
                            pass
                        break
                    rd.ensure(1)
                    if t_first is None:
                        t_first = perf()
                    rd.exactly(size)
                    rd.exactly(2)
            elif "content-length" in hdrs:
                n = int(hdrs["content-length"])
                if n:
                    rd.ensure(1)
                    t_first = perf()
                    rd.exactly(n)
            else:
                raise HttpError("response without length; cannot keep alive")
            t_done = perf()
            keep = hdrs.get("connection", "").lower() != "close"
            if i >= args.warmup:
                if 200 <= status < 300 and t_first is not None:
                    ttfb.append((t_first - t_send) * 1000.0)
                    total.append((t_done - t_send) * 1000.0)
                else:
                    non2xx += 1
        except (OSError, HttpError, ValueError):
            if i >= args.warmup:
                errors += 1
            keep = False
        if not keep:
            sock.close()
            sock = _connect(host, port)
            rd = SockReader(sock)
    gc.enable()
    sock.close()
    ttfb.sort()
    total.sort()
    print(json.dumps({
        "count": len(ttfb), "errors": errors, "non2xx": non2xx,
        "p50_ms": pct(ttfb, 50), "p99_ms": pct(ttfb, 99),
        "total_p50_ms": pct(total, 50), "total_p99_ms": pct(total, 99),
    }))


# --------------------------------------------------------------------------
# slow SSE upstream: headers + first chunk, then hold the stream open

SSE_FIRST = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},'
    '"finish_reason":null}]}\n\n'
).encode()
SSE_LAST = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
).encode()


def _chunk(b: bytes) -> bytes:
    return b"%x\r\n" % len(b) + b + b"\r\n"


def cmd_slow_upstream(args) -> None:
    open_streams = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_streams
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                if lines[0].startswith("GET /open-streams"):
                    # the bench asks how many streams are held right now
                    n = str(open_streams).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(n), n))
                    await writer.drain()
                    return
                clen = 0
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v.strip())
                if clen:
                    await reader.readexactly(clen)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(SSE_FIRST)
                )
                await writer.drain()
                open_streams += 1
                try:
                    # hold until the client goes away or the hold time is over; an
                    # SSE comment every --ping seconds keeps gatewayd's upstream idle
                    # timeout (60 s by default) from ending a held stream
                    deadline = time.monotonic() + args.hold
                    gone = False
                    while not gone and time.monotonic() < deadline:
                        try:
                            left = max(0.01, min(args.ping, deadline - time.monotonic()))
                            eof = await asyncio.wait_for(reader.read(1), timeout=left)
                            gone = eof == b""
                        except asyncio.TimeoutError:
                            if time.monotonic() < deadline:
                                writer.write(_chunk(b": ping\n\n"))
                                await writer.drain()
                    if gone:
                        return
                finally:
                    open_streams -= 1
                writer.write(_chunk(SSE_LAST) + b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, args.host, args.port, backlog=4096, reuse_address=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # thousands of held streams: exit at once rather than unwinding each
            loop.add_signal_handler(sig, os._exit, 0)
        print(f"slow-upstream listening on {args.host}:{args.port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --------------------------------------------------------------------------
# hold-streams: N concurrent streaming requests, held open while RSS is read


async def _hold_streams(args) -> dict:
    host, port, path = parse_target(args.url)
    req = build_request("POST", host, port, path, args.header, load_body(args))
    release = asyncio.Event()
    sem = asyncio.Semaphore(args.connect_concurrency)
    established = 0
    failures: dict[str, int] = {}
    writers: list[asyncio.StreamWriter] = []

    def fail(why: str) -> None:
        failures[why] = failures.get(why, 0) + 1

    async def one() -> None:
        nonlocal established
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=args.step_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                fail(f"connect: {type(e).__name__}: {getattr(e, 'strerror', '') or e}")
                return
            writers.append(w)
            try:
                w.write(req)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout=args.step_timeout)
                status, _ = parse_head(head[:-4])
                if status != 200:
                    fail(f"HTTP {status}")
                    return
                buf = b""
                while b"data:" not in buf:
                    d = await asyncio.wait_for(r.read(4096), timeout=args.step_timeout)
                    if not d:
                        fail("closed before first event")
                        return
                    buf += d
            except asyncio.TimeoutError:
                fail("timeout waiting for headers/first event")
                return
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError) as e:
                fail(f"{type(e).__name__}")
                return
        established += 1
        await release.wait()

    before = read_status_kb(args.pid, "VmRSS")
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(args.n)]
    while established + sum(failures.values()) < args.n:
        await asyncio.sleep(0.2)
        if time.monotonic() - t0 > args.total_timeout:
            break
    t_open = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    samples = []
    for _ in range(5):
        v = read_status_kb(args.pid, "VmRSS")
        if v is not None:
            samples.append(v)
        await asyncio.sleep(0.2)
    held_at_sample = established
    hwm = read_status_kb(args.pid, "VmHWM")
    seen = await _seen_open(args)
    release.set()
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "protocol": "http/1.1",
        "requested": args.n,
        "established": held_at_sample,
        "client_connections": len(writers),
        "failures": failures,
        "open_seconds": round(t_open, 2),
        "rss_before_kb": before,
        "rss_holding_kb": max(samples) if samples else None,
        "hwm_kb": hwm,
        **seen,
    }


async def _http_get(url: str, headers: list[str], timeout: float = 10.0) -> tuple[int, bytes]:
    host, port, path = parse_target(url)
    req = build_request("GET", host, port, path, headers + ["Connection: close"], b"")
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout)
    try:
        w.write(req)
        status, body, _ = await asyncio.wait_for(aread_response(r), timeout=timeout)
        return status, body
    finally:
        w.close()


async def _seen_open(args) -> dict:
    """While the streams are held: what gatewayd's /metrics gauge and the slow
    upstream's own counter say is open, so the holder's count is not taken on trust."""
    out: dict = {"gauge_active_streams": None, "upstream_open_streams": None}
    if getattr(args, "metrics_url", None):
        try:
            status, body = await _http_get(args.metrics_url, args.header)
            if status == 200:
                m = re.search(rb"^gatewayd_active_streams(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", body, re.M)
                if m:
                    out["gauge_active_streams"] = int(float(m.group(1)))
        except (OSError, asyncio.TimeoutError, HttpError, ValueError, asyncio.IncompleteReadError):
            pass
    if getattr(args, "upstream_count_url", None):
        try:
            status, body = await _http_get(args.upstream_count_url, [])
            if status == 200:
                out["upstream_open_streams"] = int(body.strip())
        except (OSError, asyncio.TimeoutError, HttpError, ValueError, asyncio.IncompleteReadError):
            pass
    return out


async def _hold_streams_h2(args) -> dict:
    """The same as _hold_streams, but the client side speaks HTTP/2 with prior
    knowledge (h2c), the streams multiplexed over as few connections as the
    server's SETTINGS_MAX_CONCURRENT_STREAMS allows (hyper's default is 200).
    gatewayd still opens one HTTP/1.1 upstream connection per stream, so it holds
    N + (connections) sockets instead of 2 N. Needs the `h2` package."""
    try:
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings
    except ImportError:
        die("hold-streams --h2 needs the Python 'h2' package (run.sh installs it into a venv)")
    host, port, path = parse_target(args.url)
    body = load_body(args)
    hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", path)]
    have_ct = False
    for h in args.header:
        k, _, v = h.partition(":")
        k = k.strip().lower()
        have_ct = have_ct or k == "content-type"
        hdrs.append((k, v.strip()))
    if not have_ct:
        hdrs.append(("content-type", "application/json"))
    hdrs.append(("content-length", str(len(body))))

    failures: dict[str, int] = {}
    established = 0
    release = asyncio.Event()

    def fail(why: str) -> None:
        failures[why] = failures.get(why, 0) + 1

    class Conn:
        def __init__(self) -> None:
            self.h2 = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            self.waiting: dict[int, asyncio.Future] = {}
            self.buf: dict[int, bytes] = {}
            self.settings = asyncio.get_running_loop().create_future()
            self.dead = False
            self.established: set[int] = set()
            self.ended_early: set[int] = set()

        async def open(self) -> None:
            self.r, self.w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=args.step_timeout)
            self.h2.initiate_connection()
            # a large connection window: thousands of streams share it
            self.h2.increment_flow_control_window(2 ** 30)
            self.w.write(self.h2.data_to_send())
            self.task = asyncio.create_task(self.pump())
            await asyncio.wait_for(asyncio.shield(self.settings), timeout=args.step_timeout)

        def max_streams(self) -> int:
            return self.h2.remote_settings.max_concurrent_streams

        def settle(self, sid: int, why: str | None) -> None:
            fut = self.waiting.pop(sid, None)
            self.buf.pop(sid, None)
            if fut is not None and not fut.done():
                fut.set_result(why)

        async def pump(self) -> None:
            try:
                while True:
                    data = await self.r.read(65536)
                    if not data:
                        break
                    for ev in self.h2.receive_data(data):
                        if isinstance(ev, h2.events.RemoteSettingsChanged):
                            if not self.settings.done():
                                self.settings.set_result(True)
                        elif isinstance(ev, h2.events.ResponseReceived):
                            st = dict(ev.headers).get(":status", "?")
                            if st != "200":
                                self.settle(ev.stream_id, f"HTTP {st}")
                        elif isinstance(ev, h2.events.DataReceived):
                            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                            if ev.stream_id in self.waiting:
                                b = self.buf.get(ev.stream_id, b"") + ev.data
                                self.buf[ev.stream_id] = b
                                if b"data:" in b:
                                    self.established.add(ev.stream_id)
                                    self.settle(ev.stream_id, None)
                        elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                            if ev.stream_id in self.established:
                                self.ended_early.add(ev.stream_id)
                            elif isinstance(ev, h2.events.StreamReset):
                                self.settle(ev.stream_id, f"reset (error {ev.error_code})")
                            else:
                                self.settle(ev.stream_id, "ended before first event")
                        elif isinstance(ev, h2.events.ConnectionTerminated):
                            self.dead = True
                    out = self.h2.data_to_send()
                    if out:
                        self.w.write(out)
            except (OSError, asyncio.IncompleteReadError) as e:
                fail(f"connection: {type(e).__name__}")
            except Exception as e:  # h2 protocol errors
                fail(f"h2: {type(e).__name__}: {e}")
            finally:
                self.dead = True
                for sid in list(self.waiting):
                    self.settle(sid, "connection closed")
                if not self.settings.done():
                    self.settings.set_result(False)

        async def stream(self) -> str | None:
            if self.dead:
                return "connection closed"
            sid = self.h2.get_next_available_stream_id()
            fut = asyncio.get_running_loop().create_future()
            self.waiting[sid] = fut
            self.h2.send_headers(sid, hdrs)
            self.h2.send_data(sid, body, end_stream=True)
            self.w.write(self.h2.data_to_send())
            try:
                return await asyncio.wait_for(fut, timeout=args.step_timeout)
            except asyncio.TimeoutError:
                self.waiting.pop(sid, None)
                return "timeout waiting for headers/first event"

    before = read_status_kb(args.pid, "VmRSS")
    t0 = time.monotonic()
    first = Conn()
    try:
        await first.open()
    except (OSError, asyncio.TimeoutError) as e:
        die(f"h2c connection to {host}:{port} failed: {e}")
    per_conn = first.max_streams()
    if args.streams_per_conn:
        per_conn = min(per_conn, args.streams_per_conn)
    per_conn = max(1, min(per_conn, args.n))
    nconn = math.ceil(args.n / per_conn)
    conns = [first]
    for _ in range(nconn - 1):
        c = Conn()
        try:
            await c.open()
        except (OSError, asyncio.TimeoutError) as e:
            fail(f"connect: {type(e).__name__}")
            continue
        conns.append(c)
    sem = asyncio.Semaphore(args.connect_concurrency)

    async def one(c: Conn) -> None:
        nonlocal established
        async with sem:
            why = await c.stream()
        if why is None:
            established += 1
        else:
            fail(why)

    # round-robin over the connections, so each sends its first request at once
    # (gatewayd closes a connection that sends no authenticated request within
    # unauthenticated_idle_secs, 5 s by default)
    tasks = []
    for i in range(min(args.n, per_conn * len(conns))):
        tasks.append(asyncio.create_task(one(conns[i % len(conns)])))
    if args.n > per_conn * len(conns):
        failures["no connection left for them"] = args.n - per_conn * len(conns)
    await asyncio.wait(tasks, timeout=args.total_timeout)
    t_open = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    samples = []
    for _ in range(5):
        v = read_status_kb(args.pid, "VmRSS")
        if v is not None:
            samples.append(v)
        await asyncio.sleep(0.2)
    # streams that ended again after their first event are not held any more
    held_at_sample = established - sum(len(c.ended_early) for c in conns)
    hwm = read_status_kb(args.pid, "VmHWM")
    seen = await _seen_open(args)
    release.set()
    for c in conns:
        c.w.close()
        c.task.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, *(c.task for c in conns), return_exceptions=True)
    return {
        "protocol": "h2c",
        "requested": args.n,
        "established": max(0, held_at_sample),
        "client_connections": len(conns),
        "streams_per_connection": per_conn,
        "failures": failures,
        "open_seconds": round(t_open, 2),
        "rss_before_kb": before,
        "rss_holding_kb": max(samples) if samples else None,
        "hwm_kb": hwm,
        **seen,
    }


def cmd_hold_streams(args) -> None:
    print(json.dumps(asyncio.run(_hold_streams_h2(args) if args.h2 else _hold_streams(args))))


# --------------------------------------------------------------------------
# mk-sessions


def _mk_sessions_on_one_socket(host: str, port: int, req: bytes, n: int, url: str) -> list[str]:
    sock = _connect(host, port)
    rd = SockReader(sock)
    ids = []
    for _ in range(n):
        sock.sendall(req)
        head = rd.until(b"\r\n\r\n")
        status, hdrs = parse_head(head[:-4])
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(rd.until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    rd.until(b"\r\n")
                    break
                body += rd.exactly(size)
                rd.exactly(2)
        else:
            body = rd.exactly(int(hdrs.get("content-length", "0")))
        if status not in (200, 201):
            raise HttpError(f"POST {url} returned HTTP {status}: {body[:300]!r}")
        try:
            ids.append(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            raise HttpError(f"POST {url}: no 'id' in response {body[:300]!r}")
        if hdrs.get("connection", "").lower() == "close":
            sock.close()
            sock = _connect(host, port)
            rd = SockReader(sock)
    sock.close()
    return ids


def cmd_mk_sessions(args) -> None:
    from concurrent.futures import ThreadPoolExecutor

    host, port, path = parse_target(args.url)
    req = build_request("POST", host, port, path, args.header, b"{}")
    par = max(1, min(args.parallel, args.n))
    shares = [args.n // par + (1 if k < args.n % par else 0) for k in range(par)]
    try:
        with ThreadPoolExecutor(par) as ex:
            parts = list(ex.map(lambda n: _mk_sessions_on_one_socket(host, port, req, n, args.url), shares))
    except (OSError, HttpError, ValueError) as e:
        die(str(e))
    for part in parts:
        for sid in part:
            print(sid)


def cmd_tag(args) -> None:
    """Read one JSON object on stdin, add key=value pairs, print it."""
    obj = json.loads(sys.stdin.read())
    for kv in args.pairs:
        k, _, v = kv.partition("=")
        try:
            obj[k] = json.loads(v)
        except ValueError:
            obj[k] = v
    print(json.dumps(obj))


def cmd_show(args) -> None:
    """One human-readable progress line (stderr) for a measurement's JSON."""
    j = json.loads(args.json)

    def f(v, n=3):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{n}f}"

    if args.phase == "tput":
        bad = (j.get("non2xx") or 0) + (j.get("socket_errors") or 0)
        s = f"{f(j.get('rps'), 0):>8s} req/s  p50 {f(j.get('p50_ms'))} ms  p99 {f(j.get('p99_ms'))} ms"
        if bad:
            s += f"  !! {j.get('non2xx')} non-2xx, {j.get('socket_errors')} socket errors"
    elif args.phase == "fixed":
        s = (f"{f(j['achieved_rate'], 0)} req/s  p50 {f(j['p50_ms'])} ms  p99 {f(j['p99_ms'])} ms  "
             f"p99.9 {f(j['p999_ms'])} ms  failed {j['errors'] + j['non2xx']}")
    elif args.phase == "ttfb":
        s = f"TTFB p50 {f(j['p50_ms'])} ms  p99 {f(j['p99_ms'])} ms  failed {j['errors'] + j['non2xx']}"
    elif args.phase == "streams":
        s = (f"{j['established']:,} of {j['requested']:,} streams open after {j['open_seconds']} s; "
             f"RSS before {j['rss_before_kb']} kB, holding {j['rss_holding_kb']} kB")
        if j.get("failures"):
            s += f"; failures: {j['failures']}"
    else:
        s = json.dumps(j)
    print(f"    {args.label:30s} {s}", file=sys.stderr)


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals), idle


def cmd_cpu_busy(args) -> None:
    """Percent of all CPUs busy over the next few seconds (before the run starts)."""
    t1, i1 = _cpu_times()
    time.sleep(args.seconds)
    t2, i2 = _cpu_times()
    busy = 100.0 * (1.0 - (i2 - i1) / max(1, t2 - t1))
    print(f"{busy:.0f}")


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime in clock ticks) of one process, all its threads included."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[11]) + int(fields[12])


def cmd_cpu_seconds(args) -> None:
    """CPU seconds (user + system) used so far by the given PIDs and their
    children (nginx: master + workers), as one float."""
    roots = set(args.pids)
    ticks = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = _proc_stat(pid)
        if st is not None and (pid in roots or st[0] in roots):
            ticks += st[1]
    print(f"{ticks / os.sysconf('SC_CLK_TCK'):.2f}")


def cmd_rss(args) -> None:
    v = read_status_kb(args.pid, "VmRSS")
    if v is None:
        die(f"cannot read /proc/{args.pid}/status")
    print(v)


# --------------------------------------------------------------------------
# report


TARGET_STREAMS = 10_000


def _med(vals):
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else None


def _f(v, nd=2, suffix=""):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}{suffix}"


def _mb(kb):
    return None if kb is None else kb / 1024.0


def cmd_report(args) -> None:
    rows = []
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    meta = {}
    if args.meta:
        with open(args.meta) as f:
            meta = json.load(f)

    def sel(phase, **kw):
        return [r for r in rows if r.get("phase") == phase and all(r.get(k) == v for k, v in kw.items())]

    targets = ["direct", "nginx", "gatewayd"]
    label = {"direct": "direct (upstream)", "nginx": "nginx proxy", "gatewayd": "gatewayd",
             "gatewayd-session": "gatewayd + session (SQLite)",
             "gatewayd-pg-session": "gatewayd + session (PostgreSQL)",
             "gatewayd-responses": "gatewayd /v1/responses",
             "gatewayd-pool-ordered": "gatewayd, pool of 3 (ordered)",
             "gatewayd-pool-latency": "gatewayd, pool of 3 (latency)",
             "baseline": "baseline gatewayd", "baseline-session": "baseline gatewayd + session (SQLite)",
             "floor-mt": "hyper-floor, multi-thread runtime",
             "floor-tpc": "hyper-floor, a current_thread runtime per core"}
    # run.sh --hyper-floor: the HTTP stack alone, shown beside nginx
    floor_targets = ["floor-mt", "floor-tpc"]
    extra_targets = {"nonstream": ["gatewayd-responses", "gatewayd-session", "gatewayd-pg-session",
                                   "gatewayd-pool-ordered", "gatewayd-pool-latency"],
                     "stream": ["gatewayd-responses"]}
    # run.sh --baseline: a second gatewayd binary, reported in its own section only
    base_targets = {"nonstream": ["baseline", "baseline-session"], "stream": ["baseline"]}
    out: list[str] = []
    w = out.append
    w("# gatewayd benchmark")
    w("")
    for k in ("machine", "date", "host", "cpus", "kernel", "gatewayd", "baseline", "hyper-floor", "nginx", "wrk",
              "python", "settings"):
        if k in meta:
            w(f"- **{k}**: {meta[k]}")
    w("")

    # ---- throughput tables
    tput: dict = {}
    problems: list[str] = []
    for kind in ("nonstream", "stream"):
        names = targets + floor_targets + extra_targets[kind] + base_targets[kind]
        for t in names:
            rs = sel("tput", kind=kind, target=t)
            if not rs:
                continue
            bad = sum((r.get("non2xx") or 0) + (r.get("socket_errors") or 0) for r in rs)
            if bad:
                problems.append(f"{kind}/{t}: {bad} non-2xx responses or socket errors during wrk runs")
            turns = None
            if t in ("gatewayd-session", "gatewayd-pg-session", "baseline-session"):
                turns = _med([(r.get("requests") or 0) / r["sessions"] for r in rs if r.get("sessions")])
            tput[(kind, t)] = {
                "turns": turns,
                "rps": _med([r.get("rps") for r in rs]),
                "p50": _med([r.get("p50_ms") for r in rs]),
                "p99": _med([r.get("p99_ms") for r in rs]),
                "runs": len(rs),
                "all_rps": [r.get("rps") for r in rs],
                "round_rps": {r.get("round"): r.get("rps") for r in rs},
                # CPU time of the serving process(es) per request served, in µs
                "cpu_us": _med([r["cpu_s"] * 1e6 / r["requests"] for r in rs
                                if r.get("cpu_s") is not None and r.get("requests")]),
            }

    def ratio(a, b):
        if a is None or b in (None, 0):
            return None
        return a / b

    w("## Throughput (wrk, closed loop, median of rounds)")
    w("")
    w("CPU µs/req: user + system CPU time of the serving processes (the nginx master and "
      "workers; the gatewayd process with all its threads; for direct, the upstream nginx) "
      "during the run, from /proc/PID/stat, divided by the requests wrk completed. "
      "'vs gatewayd chat' compares with gatewayd's plain chat of the same mode.")
    w("")
    w("| mode | target | req/s | CPU µs/req | p50 ms | p99 ms | vs direct | vs nginx | vs gatewayd chat | runs (req/s) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for kind, kname in (("nonstream", "non-streaming"), ("stream", "streaming (SSE)")):
        d = tput.get((kind, "direct"), {}).get("rps")
        n = tput.get((kind, "nginx"), {}).get("rps")
        g = tput.get((kind, "gatewayd"), {}).get("rps")
        for t in targets[:2] + floor_targets + targets[2:] + extra_targets[kind]:
            v = tput.get((kind, t))
            if not v:
                continue
            rd = ratio(v["rps"], d) if t != "direct" else None
            rn = ratio(v["rps"], n) if t not in ("direct", "nginx") else None
            rg = ratio(v["rps"], g) if t in extra_targets[kind] else None
            runs = ", ".join(_f(x, 0) for x in v["all_rps"])
            lab = label[t]
            if v.get("turns") is not None:
                lab += f" (~{_f(v['turns'], 0)} turns per session)"
            w(f"| {kname} | {lab} | {_f(v['rps'], 0)} | {_f(v['cpu_us'], 1)} | {_f(v['p50'], 3)} | {_f(v['p99'], 3)} | "
              f"{_f(rd, 2, 'x') if rd is not None else '-'} | {_f(rn, 2, 'x') if rn is not None else '-'} | "
              f"{_f(rg, 2, 'x') if rg is not None else '-'} | {runs} |")
    w("")

    # ---- CPU per request, gatewayd vs nginx
    cpu_ratio = {}
    w("## CPU per request (median of rounds)")
    w("")
    w("| mode | nginx proxy µs/req | gatewayd µs/req | gatewayd / nginx | gatewayd /v1/responses µs/req | responses / gatewayd chat |")
    w("|---|---:|---:|---:|---:|---:|")
    for kind, kname in (("nonstream", "non-streaming"), ("stream", "streaming (SSE)")):
        cn = tput.get((kind, "nginx"), {}).get("cpu_us")
        cg = tput.get((kind, "gatewayd"), {}).get("cpu_us")
        cr = tput.get((kind, "gatewayd-responses"), {}).get("cpu_us")
        cpu_ratio[kind] = ratio(cg, cn)
        rr = ratio(cr, cg)
        w(f"| {kname} | {_f(cn, 1)} | {_f(cg, 1)} | {_f(cpu_ratio[kind], 2, 'x') if cpu_ratio[kind] is not None else 'n/a'} | "
          f"{_f(cr, 1)} | {_f(rr, 2, 'x') if rr is not None else 'n/a'} |")
    w("")

    # ---- the hyper floor: the HTTP stack alone (run.sh --hyper-floor)
    if any((kind, t) in tput for kind in ("nonstream", "stream") for t in floor_targets):
        w("## The hyper floor (CPU per request, median of rounds)")
        w("")
        w("hyper-floor is a 70-line hyper proxy with no auth, limits, metrics or logs, on the same static "
          "upstream: what the HTTP stack gatewayd is built on costs by itself. 'gatewayd above' is gatewayd's "
          "CPU µs/req minus the floor's: gatewayd's own work per request.")
        w("")
        w("| mode | target | req/s | CPU µs/req | vs nginx CPU | gatewayd above it, µs/req |")
        w("|---|---|---:|---:|---:|---:|")
        for kind, kname in (("nonstream", "non-streaming"), ("stream", "streaming (SSE)")):
            cn = tput.get((kind, "nginx"), {}).get("cpu_us")
            cg = tput.get((kind, "gatewayd"), {}).get("cpu_us")
            for t in floor_targets:
                v = tput.get((kind, t))
                if not v:
                    continue
                rc = ratio(v["cpu_us"], cn)
                above = None if cg is None or v["cpu_us"] is None else cg - v["cpu_us"]
                w(f"| {kname} | {label[t]} | {_f(v['rps'], 0)} | {_f(v['cpu_us'], 1)} | "
                  f"{_f(rc, 2, 'x') if rc is not None else 'n/a'} | {_f(above, 1)} |")
        w("")

    # ---- routing: choosing within a pool of three upstreams
    if any(("nonstream", t) in tput for t in ("gatewayd-pool-ordered", "gatewayd-pool-latency")):
        w("## Routing (a pool of 3 upstreams serving the model, non-streaming, median of rounds)")
        w("")
        w("The same static upstream behind three upstream entries, so only the choice differs from "
          "plain gatewayd (one upstream). Added CPU: the pool's CPU µs/req minus plain gatewayd's.")
        w("")
        w("| strategy | req/s | CPU µs/req | added CPU µs/req | vs gatewayd plain chat |")
        w("|---|---:|---:|---:|---:|")
        plain = tput.get(("nonstream", "gatewayd"), {})
        for t, sname in (("gatewayd-pool-ordered", "ordered"), ("gatewayd-pool-latency", "latency")):
            v = tput.get(("nonstream", t))
            if not v:
                w(f"| {sname} | not run | | | |")
                continue
            added = None if v["cpu_us"] is None or plain.get("cpu_us") is None else v["cpu_us"] - plain["cpu_us"]
            rv = ratio(v["rps"], plain.get("rps"))
            w(f"| {sname} | {_f(v['rps'], 0)} | {_f(v['cpu_us'], 1)} | {_f(added, 1)} | "
              f"{_f(rv, 2, 'x') if rv is not None else 'n/a'} |")
        w("")

    # ---- sessions: SQLite vs PostgreSQL
    sess_ratio = {}
    gplain = tput.get(("nonstream", "gatewayd"), {}).get("rps")
    if any(("nonstream", t) in tput for t in ("gatewayd-session", "gatewayd-pg-session")):
        w("## Session chat (X-Session-Id, non-streaming, median of rounds)")
        w("")
        w("| backend | req/s | CPU µs/req (gatewayd) | turns per session | vs gatewayd plain chat |")
        w("|---|---:|---:|---:|---:|")
        for t, bname in (("gatewayd-session", "SQLite"), ("gatewayd-pg-session", "PostgreSQL")):
            v = tput.get(("nonstream", t))
            if not v:
                w(f"| {bname} | not run | | | |")
                continue
            sess_ratio[t] = ratio(v["rps"], gplain)
            w(f"| {bname} | {_f(v['rps'], 0)} | {_f(v['cpu_us'], 1)} | {_f(v['turns'], 0)} | "
              f"{_f(sess_ratio[t], 2, 'x') if sess_ratio[t] is not None else 'n/a'} |")
        w("")

    # ---- against the baseline binary (run.sh --baseline)
    if any(("nonstream", t) in tput or ("stream", t) in tput for t in ("baseline", "baseline-session")):
        w("## Against the baseline")
        w("")
        w("gatewayd against the baseline binary (see **baseline** above), in the same run: in every round "
          "the baseline served the same wrk load right after gatewayd's run of the same kind, its CPU time "
          "read from its own process. Ratio: gatewayd / baseline median req/s; per-round ratios pair the "
          "two runs of each round. PASS when gatewayd is within 5 % of the baseline (ratio >= 0.95).")
        w("")
        w("| measurement | gatewayd req/s | baseline req/s | gatewayd / baseline | gatewayd CPU µs/req | "
          "baseline CPU µs/req | per-round ratios | within 5 % of the baseline |")
        w("|---|---:|---:|---:|---:|---:|---|---|")
        for kind, gt, bt, name in (("nonstream", "gatewayd", "baseline", "plain chat"),
                                   ("stream", "gatewayd", "baseline", "streamed chat (SSE)"),
                                   ("nonstream", "gatewayd-session", "baseline-session", "session chat (SQLite)")):
            g = tput.get((kind, gt))
            b = tput.get((kind, bt))
            if not g or not b:
                w(f"| {name} | {_f(g['rps'], 0) if g else 'not run'} | {_f(b['rps'], 0) if b else 'not run'} "
                  f"| n/a | {_f(g['cpu_us'], 1) if g else 'n/a'} | {_f(b['cpu_us'], 1) if b else 'n/a'} | | n/a |")
                continue
            rb = ratio(g["rps"], b["rps"])
            per = [ratio(g["round_rps"].get(k), b["round_rps"][k]) for k in sorted(b["round_rps"], key=str)
                   if g["round_rps"].get(k) is not None]
            res = "n/a" if rb is None else ("PASS" if rb >= 0.95 else "MISS")
            w(f"| {name} | {_f(g['rps'], 0)} | {_f(b['rps'], 0)} | {_f(rb, 3, 'x') if rb is not None else 'n/a'} | "
              f"{_f(g['cpu_us'], 1)} | {_f(b['cpu_us'], 1)} | "
              f"{', '.join(_f(x, 3) for x in per if x is not None) or '-'} | {res} |")
        w("")

    # ---- fixed rate
    fixed: dict = {}
    for t in targets:
        rs = sel("fixed", target=t)
        if rs:
            bad = sum((r.get("non2xx") or 0) + (r.get("errors") or 0) for r in rs)
            if bad:
                problems.append(f"fixed-rate/{t}: {bad} failed requests")
            fixed[t] = {
                "p50": _med([r.get("p50_ms") for r in rs]),
                "p99": _med([r.get("p99_ms") for r in rs]),
                "p999": _med([r.get("p999_ms") for r in rs]),
                "rate": _med([r.get("achieved_rate") for r in rs]),
                "lag": _med([r.get("send_lag_p99_ms") for r in rs]),
            }
    if fixed:
        rate = _med([r.get("target_rate") for r in sel("fixed")])
        w(f"## Latency at a fixed {_f(rate, 0)} req/s (non-streaming, open loop, median of rounds)")
        w("")
        w("| target | achieved req/s | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | driver send lag p99 ms |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        dd = fixed.get("direct", {})
        for t in targets:
            v = fixed.get(t)
            if not v:
                continue
            a50 = v["p50"] - dd["p50"] if dd and t != "direct" else None
            a99 = v["p99"] - dd["p99"] if dd and t != "direct" else None
            w(f"| {label[t]} | {_f(v['rate'], 0)} | {_f(v['p50'], 3)} | {_f(v['p99'], 3)} | {_f(v['p999'], 3)} | "
              f"{_f(a50, 3) if a50 is not None else '-'} | {_f(a99, 3) if a99 is not None else '-'} | {_f(v['lag'], 3)} |")
        w("")

    # ---- ttfb
    ttfb: dict = {}
    for t in targets:
        rs = sel("ttfb", target=t)
        if rs:
            bad = sum((r.get("non2xx") or 0) + (r.get("errors") or 0) for r in rs)
            if bad:
                problems.append(f"ttfb/{t}: {bad} failed requests")
            ttfb[t] = {"p50": _med([r.get("p50_ms") for r in rs]), "p99": _med([r.get("p99_ms") for r in rs]),
                       "count": sum(r.get("count", 0) for r in rs)}
    if ttfb:
        w("## Streaming time to first byte (sequential, one keep-alive connection, median of rounds)")
        w("")
        w("| target | requests | TTFB p50 ms | TTFB p99 ms | added p50 ms | added p99 ms |")
        w("|---|---:|---:|---:|---:|---:|")
        dd = ttfb.get("direct")
        for t in targets:
            v = ttfb.get(t)
            if not v:
                continue
            a50 = v["p50"] - dd["p50"] if dd and t != "direct" else None
            a99 = v["p99"] - dd["p99"] if dd and t != "direct" else None
            w(f"| {label[t]} | {v['count']} | {_f(v['p50'], 3)} | {_f(v['p99'], 3)} | "
              f"{_f(a50, 3) if a50 is not None else '-'} | {_f(a99, 3) if a99 is not None else '-'} |")
        w("")

    # ---- memory
    mem = {r["what"]: r for r in sel("rss")}
    hold = (sel("streams") or [None])[-1]
    soak = (sel("soak") or [None])[-1]
    w("## gatewayd memory (VmRSS)")
    w("")
    w("| measurement | RSS MB | notes |")
    w("|---|---:|---|")
    if "idle" in mem:
        w(f"| idle (after start, before any request) | {_f(_mb(mem['idle']['kb']), 1)} | non-streaming instance |")
    if "after_load" in mem:
        w(f"| after load (throughput + fixed-rate runs) | {_f(_mb(mem['after_load']['kb']), 1)} | non-streaming instance |")
    if "stream_after_load" in mem:
        w(f"| after load, streaming instance | {_f(_mb(mem['stream_after_load']['kb']), 1)} | |")
    holds = {}
    for r in sel("streams"):
        holds[r.get("protocol", "http/1.1")] = r
    for proto in ("h2c", "http/1.1"):
        h = holds.get(proto)
        if not h:
            continue
        est = h.get("established") or 0
        held_kb = h.get("rss_holding_kb")
        base_kb = h.get("rss_before_kb")
        per_kb = (held_kb - base_kb) / est if est and held_kb is not None and base_kb is not None else None
        h["per_kb"] = per_kb
        note = f"{est:,} of {h.get('requested', 0):,} streams open"
        note += f" over {h.get('client_connections', '?'):,} client connections" if isinstance(
            h.get("client_connections"), int) else ""
        seen = []
        if h.get("gauge_active_streams") is not None:
            seen.append(f"gatewayd_active_streams {h['gauge_active_streams']:,}")
        if h.get("upstream_open_streams") is not None:
            seen.append(f"slow upstream holding {h['upstream_open_streams']:,}")
        if seen:
            note += " (seen while held: " + ", ".join(seen) + ")"
        if h.get("failures"):
            note += "; failures: " + ", ".join(f"{k} x{v}" for k, v in h["failures"].items())
        if per_kb is not None:
            note += f"; **{_f(per_kb, 1)} kB per stream** (holding − idle) / N"
        w(f"| holding concurrent streams, {proto} clients (fresh instance, idle {_f(_mb(base_kb), 1)} MB) | "
          f"{_f(_mb(held_kb), 1)} | {note} |")

    # the 10k-stream targets use the run that held the most streams at once
    best = max(holds.values(), key=lambda h: h.get("established") or 0) if holds else None
    streams_mb = per_stream_kb = None
    streams_note = per_stream_note = ""
    if best and best.get("per_kb") is not None:
        est = best["established"]
        per_kb = best["per_kb"]
        proto = best.get("protocol", "http/1.1")
        per_stream_kb = per_kb
        per_stream_note = f"{_f(per_kb, 1)} kB at {est:,} streams ({proto})"
        # streams counted as held only when gatewayd's own gauge agrees
        gauge = best.get("gauge_active_streams")
        if gauge is not None and gauge < est:
            per_stream_note += f"; gatewayd's gauge saw only {gauge:,}"
        if est >= TARGET_STREAMS:
            streams_mb = _mb(best["rss_holding_kb"])
            streams_note = f"{_f(streams_mb, 1)} MB at {est:,} streams ({proto})"
        else:
            streams_mb = _mb(best["rss_before_kb"] + per_kb * TARGET_STREAMS)
            streams_note = (f"{_f(streams_mb, 1)} MB estimated for {TARGET_STREAMS:,} "
                            f"(measured {_f(_mb(best['rss_holding_kb']), 1)} MB at {est:,}, {proto})")
            per_stream_note += f" (fewer than {TARGET_STREAMS:,})"
            per_stream_kb = None if est < TARGET_STREAMS else per_kb
    soak_spread = soak_warm_spread = None
    soak_warm_note = ""
    if soak and soak.get("samples_kb"):
        s = soak["samples_kb"]
        lo, hi = min(s), max(s)
        mid = (lo + hi) / 2.0
        soak_spread = (hi - lo) / 2.0 / mid * 100.0 if mid else None
        rps = _med(soak.get("segment_rps") or [])
        skip = len(s) // 5
        warm = s[skip:]
        wlo, whi = min(warm), max(warm)
        soak_warm_spread = (whi - wlo) / (whi + wlo) * 100.0 if whi + wlo else None
        soak_warm_note = f"{len(warm)} samples after the first {skip * soak.get('interval', 0)} s"
        w(f"| soak {soak.get('seconds')} s under load, {len(s)} samples every {soak.get('interval')} s | "
          f"{_f(_mb(lo), 1)} .. {_f(_mb(hi), 1)} | ±{_f(soak_spread, 1)} % spread; "
          f"median {_f(rps, 0)} req/s during soak; samples MB: {', '.join(_f(_mb(x), 1) for x in s)} |")
    w("")

    # ---- targets
    w("## Targets")
    w("")
    w("| target | goal | measured | result |")
    w("|---|---|---|---|")

    def line(name, goal, measured, ok):
        res = "n/a" if ok is None else ("PASS" if ok else "MISS")
        w(f"| {name} | {goal} | {measured} | {res} |")

    def chk(cond_val, fn):
        return None if cond_val is None else fn(cond_val)

    def rx(v):
        return _f(v, 2, "x") if v is not None else "n/a"

    # The goals of issue 23 ("Performance, round three"), one line each.
    c1 = cpu_ratio.get("nonstream")
    line("CPU per request, non-streaming", "<= 1.6 x nginx", rx(c1), chk(c1, lambda v: v <= 1.6))
    c2 = cpu_ratio.get("stream")
    line("CPU per request, streaming", "<= 1.6 x nginx", rx(c2), chk(c2, lambda v: v <= 1.6))
    r1 = ratio(tput.get(("nonstream", "gatewayd"), {}).get("rps"), tput.get(("nonstream", "nginx"), {}).get("rps"))
    line("throughput, non-streaming", ">= 0.7 x nginx", rx(r1), chk(r1, lambda v: v >= 0.7))
    r2 = ratio(tput.get(("stream", "gatewayd"), {}).get("rps"), tput.get(("stream", "nginx"), {}).get("rps"))
    line("throughput, streaming (SSE)", ">= 0.7 x nginx", rx(r2), chk(r2, lambda v: v >= 0.7))
    r3 = sess_ratio.get("gatewayd-session")
    line("session chat, SQLite", ">= 0.5 x gatewayd plain chat", rx(r3), chk(r3, lambda v: v >= 0.5))
    r4 = sess_ratio.get("gatewayd-pg-session")
    line("session chat, PostgreSQL", ">= 0.3 x gatewayd plain chat", rx(r4) if r4 is not None else "not run",
         chk(r4, lambda v: v >= 0.3))
    for kind, kname in (("nonstream", "plain"), ("stream", "streamed")):
        rr = ratio(tput.get((kind, "gatewayd-responses"), {}).get("rps"), tput.get((kind, "gatewayd"), {}).get("rps"))
        line(f"Responses, {kname}", f">= 0.8 x gatewayd {kname} chat", rx(rr), chk(rr, lambda v: v >= 0.8))
    a99 = None
    if "gatewayd" in fixed and "direct" in fixed:
        a99 = fixed["gatewayd"]["p99"] - fixed["direct"]["p99"]
    line("p99 added at fixed rate", f"<= 0.3 ms at {_f(rate, 0) if fixed else '1,000'} req/s",
         _f(a99, 3, " ms") if a99 is not None else "n/a", chk(a99, lambda v: v <= 0.3))
    line("soak RSS, after warm-up", "within ±10 %",
         (f"±{_f(soak_warm_spread, 1, ' %')} ({soak_warm_note})") if soak_warm_spread is not None else "not run",
         chk(soak_warm_spread, lambda v: v <= 10.0))
    for proto, goal in (("h2c", 16.0), ("http/1.1", 24.0)):
        h = holds.get(proto)
        per_kb = h.get("per_kb") if h else None
        measured = "not run" if per_kb is None else f"{_f(per_kb, 1)} kB at {h.get('established') or 0:,} streams"
        line(f"memory per open stream, {proto} clients", f"<= {goal:.0f} kB", measured,
             None if per_kb is None else per_kb <= goal)
    # Earlier rounds' goals, still reported.
    t50 = None
    if "gatewayd" in ttfb and "direct" in ttfb:
        t50 = ttfb["gatewayd"]["p50"] - ttfb["direct"]["p50"]
    line("stream TTFB added p50", "<= 0.5 ms", _f(t50, 3, " ms") if t50 is not None else "n/a", chk(t50, lambda v: v <= 0.5))
    if holds:
        line("10k streams RSS", "<= 250 MB", streams_note or "no stream held", None if streams_mb is None else streams_mb <= 250.0)
    else:
        line("10k streams RSS", "<= 250 MB", "not run", None)
    idle_mb = _mb(mem["idle"]["kb"]) if "idle" in mem else None
    line("idle RSS", "<= 30 MB", _f(idle_mb, 1, " MB") if idle_mb is not None else "n/a", chk(idle_mb, lambda v: v <= 30.0))
    line("soak RSS stability, whole soak", "within ±10 %",
         ("±" + _f(soak_spread, 1, " %")) if soak_spread is not None else "not run",
         chk(soak_spread, lambda v: v <= 10.0))
    w("")
    lag = [r.get("send_lag_p99_ms") for r in sel("fixed") if r.get("send_lag_p99_ms") is not None]
    if lag and max(lag) > 2.0:
        problems.append(f"the fixed-rate driver sent up to {max(lag):.1f} ms late (p99): the machine was busy, "
                        "so the fixed-rate latencies carry scheduling noise")
    problems = [r.get("text", "") for r in sel("warning")] + problems
    if problems:
        w("## Warnings")
        w("")
        for p in problems:
            w(f"- {p}")
        w("")
    w("Ratios compare medians; 'added' latencies are gatewayd (or nginx) minus direct. "
      "See bench/README.md for the method.")
    text = "\n".join(out) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)


# --------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add_req(sp):
        sp.add_argument("--url", required=True)
        sp.add_argument("--header", "-H", action="append", default=[])
        sp.add_argument("--body", default="")
        sp.add_argument("--body-file")

    sp = sub.add_parser("parse-wrk")
    sp.add_argument("file")
    sp.set_defaults(fn=cmd_parse_wrk)

    sp = sub.add_parser("fixed-rate")
    add_req(sp)
    sp.add_argument("--rate", type=float, default=1000.0)
    sp.add_argument("--conns", type=int, default=16)
    sp.add_argument("--duration", type=float, default=10.0)
    sp.add_argument("--warmup", type=float, default=1.0)
    sp.set_defaults(fn=cmd_fixed_rate)

    sp = sub.add_parser("ttfb")
    add_req(sp)
    sp.add_argument("--count", type=int, default=500)
    sp.add_argument("--warmup", type=int, default=20)
    sp.set_defaults(fn=cmd_ttfb)

    sp = sub.add_parser("slow-upstream")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--hold", type=float, default=600.0, help="seconds to hold each stream before finishing it")
    sp.add_argument("--ping", type=float, default=20.0, help="seconds between SSE comments on a held stream")
    sp.set_defaults(fn=cmd_slow_upstream)

    sp = sub.add_parser("hold-streams")
    add_req(sp)
    sp.add_argument("--n", type=int, required=True)
    sp.add_argument("--pid", type=int, required=True)
    sp.add_argument("--connect-concurrency", type=int, default=256)
    sp.add_argument("--step-timeout", type=float, default=30.0)
    sp.add_argument("--total-timeout", type=float, default=300.0)
    sp.add_argument("--settle", type=float, default=2.0)
    sp.add_argument("--h2", action="store_true", help="client side over HTTP/2 prior knowledge (h2c)")
    sp.add_argument("--streams-per-conn", type=int, default=0,
                    help="--h2: streams per connection (default: the server's max concurrent streams)")
    sp.add_argument("--metrics-url", help="gatewayd /metrics, read while holding (gatewayd_active_streams)")
    sp.add_argument("--upstream-count-url", help="slow upstream's GET /open-streams, read while holding")
    sp.set_defaults(fn=cmd_hold_streams)

    sp = sub.add_parser("mk-sessions")
    sp.add_argument("--url", required=True)
    sp.add_argument("--header", "-H", action="append", default=[])
    sp.add_argument("--n", type=int, default=1)
    sp.add_argument("--parallel", type=int, default=8)
    sp.set_defaults(fn=cmd_mk_sessions)

    sp = sub.add_parser("tag")
    sp.add_argument("pairs", nargs="*")
    sp.set_defaults(fn=cmd_tag)

    sp = sub.add_parser("show")
    sp.add_argument("phase")
    sp.add_argument("label")
    sp.add_argument("json")
    sp.set_defaults(fn=cmd_show)

    sp = sub.add_parser("cpu-busy")
    sp.add_argument("--seconds", type=float, default=2.0)
    sp.set_defaults(fn=cmd_cpu_busy)

    sp = sub.add_parser("cpu-seconds")
    sp.add_argument("pids", type=int, nargs="+")
    sp.set_defaults(fn=cmd_cpu_seconds)

    sp = sub.add_parser("rss")
    sp.add_argument("pid", type=int)
    sp.set_defaults(fn=cmd_rss)

    sp = sub.add_parser("report")
    sp.add_argument("--results", required=True)
    sp.add_argument("--meta")
    sp.add_argument("--out")
    sp.set_defaults(fn=cmd_report)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
