"""The stats stream at stats_endpoint: Circus's stat.* topics over a real SUB, and no work without one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import wait_for

from circus_linux.control.statsstream import StatsStream

SECTIONS = """
[watcher:web]
cmd = sleep 600
numprocesses = 2
use_sockets = true

[socket:web]
path = {path}
replace = true
"""


def collect(sub: zmq.Socket[Any], want: set[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Receive until every topic kind in ``want`` was seen (kinds: 'web.<pid>' -> 'web.PID', ...)."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while not want <= {kind(t) for t in seen}:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"stats topics missing: {want - {kind(t) for t in seen}}; got {sorted(seen)}")
        if sub.poll(int(left * 1000)):
            topic, body = sub.recv_multipart()
            seen[topic.decode()] = json.loads(body)
    return seen


def kind(topic: str) -> str:
    parts = topic.split(".")
    return ".".join(p if not p.isdigit() else "N" for p in parts)


def test_stats_stream_publishes_circus_topics(circusd: Any, tmp_path: Path) -> None:
    d = circusd(SECTIONS.format(path=tmp_path / "web.sock"))
    pids = wait_for(lambda: (p := d.pids("web")) and len(p) == 2 and p, what="two web workers")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(d.stats_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"stat.")
        seen = collect(
            sub, {"stat.web.N", "stat.web", "stat.circus.N", "stat.circus", "stat.sockets.N", "stat.sockets"}
        )
    finally:
        sub.close()
        ctx.term()
    per = [seen[t] for t in seen if kind(t) == "stat.web.N"]
    assert {p["pid"] for p in per} <= set(pids)
    for info in per:
        # Circus's keys (strings kept) and the numbers beside them
        assert isinstance(info["mem_info1"], str) and isinstance(info["ctime"], str)
        assert isinstance(info["rss"], int) and isinstance(info["cpu"], float) and info["wid"] in (1, 2)
        assert info["cmdline"] == "sleep 600"
    agg = seen["stat.web"]
    assert sorted(agg["pid"]) == sorted(pids) or set(agg["pid"]) <= set(pids)
    assert agg["cgroup"]["backends"]["cpu"] in ("v1", "v2") and agg["cgroup"]["cpu_usage_usec"] is not None
    me = next(seen[t] for t in seen if kind(t) == "stat.circus.N")
    assert me["name"] == "circusd" and me["pid"] == d.proc.pid
    sock = next(seen[t] for t in seen if kind(t) == "stat.sockets.N")
    assert sock["name"] == "web" and sock["queued"] == 0 and sock["address"] == str(tmp_path / "web.sock")
    assert seen["stat.sockets"]["addresses"] == [str(tmp_path / "web.sock")]


class _NoWatchers:
    """The part of the arbiter the stream reads: no watchers, no sockets, no cgroups."""

    watchers: dict[str, Any] = {}
    sockets = None
    cgroups = None
    started = time.time()


def test_stream_does_no_work_without_a_subscriber(tmp_path: Path) -> None:
    async def main() -> None:
        ctx = zmq.Context()
        endpoint = f"ipc://{tmp_path}/stats.sock"
        stream = StatsStream(_NoWatchers(), endpoint, ctx, interval=3600)
        stream.start()  # the task's first tick runs now; later ones are driven by hand below
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        try:
            await stream.tick()
            assert stream.ticks == 0 and stream.idle_ticks >= 1 and stream.sent == 0
            sub.connect(endpoint)
            sub.setsockopt(zmq.SUBSCRIBE, b"stat.circus")
            deadline = time.monotonic() + 5
            while stream.ticks == 0:  # the subscription travels to the XPUB asynchronously
                assert time.monotonic() < deadline, "subscription never reached the XPUB"
                await stream.tick()
                await asyncio.sleep(0.01)
            assert stream.subscriptions == {b"stat.circus"}
            assert sub.poll(5000)
            topic, body = sub.recv_multipart()
            assert topic == f"stat.circus.{os.getpid()}".encode() and json.loads(body)["name"] == "circusd"
            sub.close()
            deadline = time.monotonic() + 5
            while stream.subscriptions:  # XPUB reports the unsubscription when the peer goes away
                assert time.monotonic() < deadline, "unsubscription never reached the XPUB"
                await stream.tick()
                await asyncio.sleep(0.01)
            before = stream.ticks
            await stream.tick()
            assert stream.ticks == before
        finally:
            if not sub.closed:
                sub.close()
            await stream.close()
            ctx.term()

    asyncio.run(main())


def test_stats_stream_children_cpu_is_real_not_always_zero(circusd: Any) -> None:
    # The worker is sh; its child (a python busy loop) burns a whole CPU.
    d = circusd(
        "[watcher:burn]\n"
        f"cmd = /bin/sh -c '{sys.executable} -c \"while True: pass\"; :'\n"
    )
    wait_for(lambda: d.pids("burn"), what="the burn worker")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(d.stats_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"stat.burn.")

        def child_cpu() -> bool | None:
            if not sub.poll(100):
                return None
            _topic, body = sub.recv_multipart()
            kids = json.loads(body).get("children") or []
            return max((k["cpu"] for k in kids), default=0.0) > 20 or None

        wait_for(child_cpu, timeout=30, what="a child's CPU % above 20 on the stats stream")
    finally:
        sub.close()
        ctx.term()


class _OneWatcher:
    """An arbiter with one watcher `w` whose one worker is `pid`; no sockets, no cgroups."""

    sockets = None
    cgroups = None
    started = time.time()

    def __init__(self, pid: int) -> None:
        proc = type("P", (), {"pid": pid, "started": time.time(), "wid": 1, "cmdline": None})()
        methods = {"status": lambda _self: "active", "processes": lambda _self: [proc]}
        watcher = type("W", (), {"name": "w", "restarts": 0, "numprocesses": 1, **methods})()
        self.watchers = {"w": watcher}


def test_stream_keeps_the_children_sampled_between_per_process_ticks(tmp_path: Path) -> None:
    # 8114ca3 kept a worker's children from being pruned, but only on the ticks that sample processes:
    # with process_interval > interval, the ticks between pruned them, and each per-process tick met them
    # as new processes again, whose psutil cpu_percent is always 0.0.
    async def main() -> None:
        worker = await asyncio.create_subprocess_exec("sleep", "60")
        child = await asyncio.create_subprocess_exec("sleep", "60")
        ctx = zmq.Context()
        stream = StatsStream(_OneWatcher(worker.pid), f"ipc://{tmp_path}/stats.sock", ctx,
                             interval=1.0, process_interval=3600.0)  # fmt: skip
        stream.collector.children_of = lambda _w: {worker.pid: [child.pid]}  # type: ignore[method-assign]
        stream.start()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        try:
            sub.connect(f"ipc://{tmp_path}/stats.sock")
            sub.setsockopt(zmq.SUBSCRIBE, b"stat.w")
            deadline = time.monotonic() + 5
            while stream.collector.last(child.pid) is None:  # the first per-process tick samples it
                assert time.monotonic() < deadline, "the child was never sampled"
                await stream.tick()
                await asyncio.sleep(0.01)
            await stream.tick()  # not a per-process tick (process_interval is an hour)
            assert stream.collector.last(child.pid) is not None, "the child's sample was pruned"
        finally:
            sub.close()
            await stream.close()
            ctx.term()
            for p in (worker, child):
                p.kill()
                await p.wait()

    asyncio.run(main())
