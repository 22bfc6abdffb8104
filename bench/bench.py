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
                    # hold until the client goes away or the hold time is over
                    eof = await asyncio.wait_for(reader.read(1), timeout=args.hold)
                    if eof == b"":
                        return
                except asyncio.TimeoutError:
                    pass
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
    release.set()
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "requested": args.n,
        "established": held_at_sample,
        "failures": failures,
        "open_seconds": round(t_open, 2),
        "rss_before_kb": before,
        "rss_holding_kb": max(samples) if samples else None,
        "hwm_kb": hwm,
    }


def cmd_hold_streams(args) -> None:
    print(json.dumps(asyncio.run(_hold_streams(args))))


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
             "gatewayd-session": "gatewayd + session"}
    out: list[str] = []
    w = out.append
    w("# gatewayd benchmark")
    w("")
    for k in ("date", "host", "cpus", "kernel", "gatewayd", "nginx", "wrk", "python", "settings"):
        if k in meta:
            w(f"- **{k}**: {meta[k]}")
    w("")

    # ---- throughput tables
    tput: dict = {}
    problems: list[str] = []
    for kind in ("nonstream", "stream"):
        names = targets + (["gatewayd-session"] if kind == "nonstream" else [])
        for t in names:
            rs = sel("tput", kind=kind, target=t)
            if not rs:
                continue
            bad = sum((r.get("non2xx") or 0) + (r.get("socket_errors") or 0) for r in rs)
            if bad:
                problems.append(f"{kind}/{t}: {bad} non-2xx responses or socket errors during wrk runs")
            turns = None
            if t == "gatewayd-session":
                turns = _med([(r.get("requests") or 0) / r["sessions"] for r in rs if r.get("sessions")])
            tput[(kind, t)] = {
                "turns": turns,
                "rps": _med([r.get("rps") for r in rs]),
                "p50": _med([r.get("p50_ms") for r in rs]),
                "p99": _med([r.get("p99_ms") for r in rs]),
                "runs": len(rs),
                "all_rps": [r.get("rps") for r in rs],
            }

    def ratio(a, b):
        if a is None or b in (None, 0):
            return None
        return a / b

    w("## Throughput (wrk, closed loop, median of rounds)")
    w("")
    w("| mode | target | req/s | p50 ms | p99 ms | vs direct | vs nginx | runs (req/s) |")
    w("|---|---|---:|---:|---:|---:|---:|---|")
    for kind, kname in (("nonstream", "non-streaming"), ("stream", "streaming (SSE)")):
        d = tput.get((kind, "direct"), {}).get("rps")
        n = tput.get((kind, "nginx"), {}).get("rps")
        for t in targets + (["gatewayd-session"] if kind == "nonstream" else []):
            v = tput.get((kind, t))
            if not v:
                continue
            rd = ratio(v["rps"], d) if t != "direct" else None
            rn = ratio(v["rps"], n) if t not in ("direct", "nginx") else None
            runs = ", ".join(_f(x, 0) for x in v["all_rps"])
            lab = label[t]
            if v.get("turns") is not None:
                lab += f" (~{_f(v['turns'], 0)} turns per session)"
            w(f"| {kname} | {lab} | {_f(v['rps'], 0)} | {_f(v['p50'], 3)} | {_f(v['p99'], 3)} | "
              f"{_f(rd, 2, 'x') if rd is not None else '-'} | {_f(rn, 2, 'x') if rn is not None else '-'} | {runs} |")
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
    streams_mb = None
    streams_note = ""
    if hold:
        est = hold.get("established") or 0
        req_n = hold.get("requested")
        held_kb = hold.get("rss_holding_kb")
        base_kb = hold.get("rss_before_kb")
        note = f"{est:,} of {req_n:,} streams open"
        if hold.get("failures"):
            note += "; failures: " + ", ".join(f"{k} x{v}" for k, v in hold["failures"].items())
        if est and held_kb is not None and base_kb is not None:
            per_kb = (held_kb - base_kb) / est
            note += f"; ~{_f(per_kb, 1)} kB per stream"
            if est >= TARGET_STREAMS:
                streams_mb = _mb(held_kb)
                streams_note = f"{_f(streams_mb, 1)} MB at {est:,} streams"
            else:
                # scale the per-stream cost linearly to the target count
                streams_mb = _mb(base_kb + per_kb * TARGET_STREAMS)
                note += f"; linear estimate for {TARGET_STREAMS:,}: {_f(streams_mb, 1)} MB"
                streams_note = (f"{_f(streams_mb, 1)} MB estimated for {TARGET_STREAMS:,} "
                                f"(measured {_f(_mb(held_kb), 1)} MB at {est:,})")
        w(f"| holding concurrent streams (fresh instance, idle {_f(_mb(base_kb), 1)} MB) | "
          f"{_f(_mb(held_kb), 1)} | {note} |")
    soak_spread = None
    if soak and soak.get("samples_kb"):
        s = soak["samples_kb"]
        lo, hi = min(s), max(s)
        mid = (lo + hi) / 2.0
        soak_spread = (hi - lo) / 2.0 / mid * 100.0 if mid else None
        rps = _med(soak.get("segment_rps") or [])
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

    r1 = ratio(tput.get(("nonstream", "gatewayd"), {}).get("rps"), tput.get(("nonstream", "nginx"), {}).get("rps"))
    line("non-stream throughput", ">= 0.8 x nginx", _f(r1, 2, "x") if r1 is not None else "n/a", chk(r1, lambda v: v >= 0.8))
    a99 = None
    if "gatewayd" in fixed and "direct" in fixed:
        a99 = fixed["gatewayd"]["p99"] - fixed["direct"]["p99"]
    line("p99 added at fixed rate", "<= 1 ms", _f(a99, 3, " ms") if a99 is not None else "n/a", chk(a99, lambda v: v <= 1.0))
    r2 = ratio(tput.get(("stream", "gatewayd"), {}).get("rps"), tput.get(("stream", "nginx"), {}).get("rps"))
    line("stream throughput (SSE)", ">= 0.8 x nginx", _f(r2, 2, "x") if r2 is not None else "n/a", chk(r2, lambda v: v >= 0.8))
    t50 = None
    if "gatewayd" in ttfb and "direct" in ttfb:
        t50 = ttfb["gatewayd"]["p50"] - ttfb["direct"]["p50"]
    line("stream TTFB added p50", "<= 0.5 ms", _f(t50, 3, " ms") if t50 is not None else "n/a", chk(t50, lambda v: v <= 0.5))
    r3 = ratio(tput.get(("nonstream", "gatewayd-session"), {}).get("rps"), tput.get(("nonstream", "nginx"), {}).get("rps"))
    line("session throughput", ">= 0.3 x nginx", _f(r3, 2, "x") if r3 is not None else "n/a", chk(r3, lambda v: v >= 0.3))
    if hold:
        line("10k streams RSS", "<= 250 MB", streams_note or "no stream held", None if streams_mb is None else streams_mb <= 250.0)
    else:
        line("10k streams RSS", "<= 250 MB", "not run", None)
    idle_mb = _mb(mem["idle"]["kb"]) if "idle" in mem else None
    line("idle RSS", "<= 30 MB", _f(idle_mb, 1, " MB") if idle_mb is not None else "n/a", chk(idle_mb, lambda v: v <= 30.0))
    line("soak RSS stability", "within ±10 %", ("±" + _f(soak_spread, 1, " %")) if soak_spread is not None else "not run",
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
    sp.set_defaults(fn=cmd_slow_upstream)

    sp = sub.add_parser("hold-streams")
    add_req(sp)
    sp.add_argument("--n", type=int, required=True)
    sp.add_argument("--pid", type=int, required=True)
    sp.add_argument("--connect-concurrency", type=int, default=256)
    sp.add_argument("--step-timeout", type=float, default=30.0)
    sp.add_argument("--total-timeout", type=float, default=300.0)
    sp.add_argument("--settle", type=float, default=2.0)
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
