"""Control-channel benchmark: round-trip latency of `list` and `incr`/`decr`, server side and end to end,
and the throughput of a command storm, while circusd runs N idle workers.

    .venv/bin/python bench/control.py [--workers 500] [--calls 2000] [--storm 20000]

End to end is measured by the client (DEALER send -> reply received); server side is circusd's own
figure (handler entered -> reply queued on the ROUTER), read from `dstats` after each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from circus_target import Circusd
from procfs import children


def call(sock: zmq.Socket, command: str, **props: object) -> dict:
    sock.send(json.dumps({"id": uuid.uuid4().hex, "command": command, "properties": props}).encode())
    if not sock.poll(30_000):
        raise TimeoutError(command)
    return json.loads(sock.recv())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_side(sock: zmq.Socket) -> dict:
    return call(sock, "dstats")["info"].get("server_latency", {})


def measure(sock: zmq.Socket, calls: int, commands: list[tuple[str, dict]]) -> list[float]:
    times = []
    for i in range(calls):
        name, props = commands[i % len(commands)]
        t0 = time.perf_counter()
        reply = call(sock, name, **props)
        times.append((time.perf_counter() - t0) * 1000)
        if reply["status"] != "ok":
            raise RuntimeError(reply)
    return times


def storm(endpoint: str, ctx: zmq.Context, total: int, window: int = 64) -> float:
    """Pipelined `list` requests, `window` in flight: replies per second."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    body = json.dumps({"id": "s", "command": "list", "properties": {}}).encode()
    sent = received = 0
    t0 = time.perf_counter()
    while received < total:
        while sent < total and sent - received < window:
            sock.send(body)
            sent += 1
        if not sock.poll(30_000):
            raise TimeoutError("storm")
        sock.recv()
        received += 1
    elapsed = time.perf_counter() - t0
    sock.close()
    return total / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=500)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--storm", type=int, default=20000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="circus-bench-ctl-", dir="/var/tmp"))
    target = Circusd(["/bin/sleep", "100000"], tmp, f"circus-bench-{os.getpid()}")
    target.start(args.workers)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp}/endpoint.sock"
    try:
        deadline = time.monotonic() + 120
        while len(children(target.pid or 0)) < args.workers:
            target.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not start")
            time.sleep(0.01)
        sock.connect(endpoint)
        call(sock, "numwatchers")
        rows = []
        phases: tuple[tuple[str, str, list[tuple[str, dict[str, Any]]]], ...] = (
            ("list", "list", [("list", {})]),
            ("list bench (500 pids)", "list", [("list", {"name": "bench"})]),
            (
                "incr (waiting)",
                "incr",
                [("incr", {"name": "bench", "waiting": True}), ("decr", {"name": "bench", "waiting": True})],
            ),
        )
        for label, key, commands in phases:
            e2e = measure(sock, args.calls, commands)
            srv = server_side(sock).get(key, {})
            rows.append((label, statistics.median(e2e), pct(e2e, 0.99), srv))
        rate = storm(endpoint, ctx, args.storm)
        print(f"circus-linux control channel, {args.workers} idle workers, {args.calls} calls per row")
        head = ("command", "e2e median ms", "e2e p99 ms", "server median ms", "server p99 ms")
        print(f"{head[0]:<22}{head[1]:>15}{head[2]:>12}{head[3]:>18}{head[4]:>15}")
        for label, med, p99, srv in rows:
            # server figures: circusd's own, per command, over its last 10,000 calls of that command
            s_med, s_p99 = srv.get("median_ms", 0.0), srv.get("p99_ms", 0.0)
            print(f"{label:<22}{med:>15.3f}{p99:>12.3f}{s_med:>18.3f}{s_p99:>15.3f}")
        print(f"storm: {args.storm} pipelined `list` (64 in flight): {rate:,.0f} replies/s")
    finally:
        sock.close()
        ctx.term()
        target.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
