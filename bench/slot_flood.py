#!/usr/bin/env python3
"""Slot exhaustion from many addresses (issue 26, item 1), measured from outside.

Starts a gatewayd binary with `[limits] max_connections = SLOTS` and one API key, then:
- a flood process holds PER_ADDRESS silent connections from each of 127.0.1.1..N
  (every one under the per-address cap of 256); each connection the gateway closes is
  reopened at once;
- once every flood connection has connected, a keyed client on 127.0.0.2 sends
  GET /v1/models, one new connection per request, one request every INTERVAL seconds
  (or as soon as the previous one ends, if later), for at most DURATION seconds or
  REQUESTS requests; each request gets TIMEOUT seconds.

Prints one JSON line: requests sent, answered 200, p50/p99/max in ms, how many flood
connections the gateway closed (seen by the flood), and the gateway's slot-relief
counters. Linux only (127.0.1.x works on loopback by binding the
client socket before connect). Python 3.11 standard library only.

    bench/slot_flood.py --binary target/release/gatewayd
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

KEY = "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe"


def start_gateway(binary: str, slots: int) -> tuple[subprocess.Popen, int]:
    workdir = tempfile.mkdtemp(prefix="gatewayd-slot-flood-")
    os.chmod(workdir, 0o700)
    config = os.path.join(workdir, "gatewayd.toml")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    with open(config, "w") as f:
        f.write(
            f'[limits]\nmax_connections = {slots}\n\n'
            f'[[keys]]\nname = "bench"\nsha256 = "{digest}"\n'
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_SERVER", "GATEWAYD"))}
    env.update(GATEWAYD_DATA_DIR=os.path.join(workdir, "data"), RUST_LOG="warn,gatewayd=info")
    process = subprocess.Popen(
        [binary, "--port", "0", "--config", config],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"addresses=[^ ,]*:(\d+)", line)
        if found:
            # Keep draining stderr so the gateway never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, int(found.group(1))
    sys.exit(f"gatewayd did not start (exit {process.wait()})")


async def hold(port: int, source: str, connected, closed) -> None:
    first = True
    while True:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        except OSError:
            await asyncio.sleep(0.01)
            continue
        if first:
            first = False
            with connected.get_lock():
                connected.value += 1
        try:
            await reader.read(64)  # silent: wait for the gateway to close it
        except OSError:
            pass
        writer.close()
        with closed.get_lock():
            closed.value += 1


def flood(port: int, addresses: int, per_address: int, connected, closed) -> None:
    async def main() -> None:
        tasks = [
            asyncio.create_task(hold(port, f"127.0.1.{a}", connected, closed))
            for a in range(1, addresses + 1)
            for _ in range(per_address)
        ]
        await asyncio.gather(*tasks)

    asyncio.run(main())


def one_request(port: int, timeout: float) -> bool:
    request = (
        "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.socket() as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.startswith(b"HTTP/1.1 200")


def percentile(sorted_ms: list[float], p: int) -> float:
    if not sorted_ms:
        return float("nan")
    index = max(0, -(-len(sorted_ms) * p // 100) - 1)
    return sorted_ms[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the gatewayd binary to measure")
    parser.add_argument("--slots", type=int, default=1000, help="[limits] max_connections")
    parser.add_argument("--addresses", type=int, default=10, help="flood addresses 127.0.1.1..N")
    parser.add_argument("--per-address", type=int, default=200, help="silent connections per address")
    parser.add_argument("--requests", type=int, default=200, help="legitimate requests at most")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of legitimate traffic at most")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between legitimate requests")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per legitimate request")
    args = parser.parse_args()

    gateway, port = start_gateway(args.binary, args.slots)
    connected = multiprocessing.Value("i", 0)
    closed = multiprocessing.Value("l", 0)
    flooder = multiprocessing.Process(
        target=flood,
        args=(port, args.addresses, args.per_address, connected, closed),
        daemon=True,
    )
    flooder.start()
    total = args.addresses * args.per_address
    deadline = time.monotonic() + 60
    while connected.value < total and time.monotonic() < deadline:
        time.sleep(0.05)

    took_ms: list[float] = []
    ok = failed = 0
    closed_before = closed.value
    began = time.monotonic()
    end = began + args.duration
    while ok + failed < args.requests and time.monotonic() < end:
        time.sleep(max(0.0, began + (ok + failed) * args.interval - time.monotonic()))
        started = time.monotonic()
        try:
            answered = one_request(port, args.timeout)
        except OSError:
            answered = False
        took_ms.append((time.monotonic() - started) * 1000)
        ok, failed = (ok + 1, failed) if answered else (ok, failed + 1)
    legit_seconds = time.monotonic() - began
    flood_closed = closed.value - closed_before

    relief = {}
    try:
        request = (
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(request)
            metrics = b""
            while chunk := s.recv(65536):
                metrics += chunk
        for name, value in re.findall(
            r'gatewayd_connections_closed_for_slots_total\{reason="(\w+)"\} (\d+)', metrics.decode()
        ):
            relief[name] = int(value)
    except OSError:
        pass
    flooder.kill()
    gateway.kill()
    took_ms.sort()
    print(
        json.dumps(
            {
                "slots": args.slots,
                "flood_connections": total,
                "flood_connected": connected.value,
                "requests": ok + failed,
                "ok": ok,
                "p50_ms": round(percentile(took_ms, 50), 2),
                "p99_ms": round(percentile(took_ms, 99), 2),
                "max_ms": round(took_ms[-1], 2) if took_ms else None,
                "seconds": round(legit_seconds, 1),
                "flood_closed_by_gateway": flood_closed,
                "closed_for_slots": relief,
            }
        )
    )


if __name__ == "__main__":
    main()
