"""`stats` extras in a real circusd: the extended_stats hook (Circus semantics, bounded), restart counts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from conftest import wait_for
from integration.plugin_tap import PRIMER, EventTap

HOOKS = """\
import time

def extend(watcher, arbiter, hook_name, pid, stats, **kwargs):
    stats["extra"] = {"pid": pid, "hook": hook_name, "watcher": watcher.name, "keys": len(stats)}
    return False  # Circus ignores the result

def slow(watcher, arbiter, hook_name, pid, stats, **kwargs):
    time.sleep(8)
    stats["late"] = True
    return True
"""

SLOW = """
[watcher:slowext]
cmd = sleep 600
hooks.extended_stats = exthooks.slow
"""

SECTIONS = """
[watcher:ext]
cmd = sleep 600
numprocesses = 2
hooks.extended_stats = exthooks.extend

[watcher:plain]
cmd = sleep 600
"""


def _start(circusd: Any, tmp_path: Path, extra: str = "") -> Any:
    (tmp_path / "exthooks.py").write_text(HOOKS)
    return circusd(PRIMER + SECTIONS + extra, env={"PYTHONPATH": str(tmp_path)})


def test_extended_stats_hook_adds_to_each_process_info(circusd: Any, tmp_path: Path) -> None:
    d = _start(circusd, tmp_path)
    pids = wait_for(lambda: (p := d.pids("ext")) and len(p) == 2 and p, what="two ext workers")
    plain = d.call("stats", name="ext")
    assert all("extra" not in info for info in plain["info"].values())  # only when asked
    reply = d.call("stats", name="ext", extended=True)
    assert reply["status"] == "ok", reply
    assert {int(k) for k in reply["info"]} == set(pids)
    for key, info in reply["info"].items():
        assert info["extra"]["pid"] == int(key) and info["extra"]["hook"] == "extended_stats"
        assert info["extra"]["watcher"] == "ext" and info["extra"]["keys"] > 5  # it saw Circus's info
    one = d.call("stats", name="ext", process=pids[0], extended=True)
    assert one["info"]["extra"]["pid"] == pids[0]
    every = d.call("stats", extended=True)
    assert all("extra" in info for info in every["infos"]["ext"].values())
    assert all("extra" not in info for info in every["infos"]["plain"].values())


def test_slow_extended_stats_hook_is_bounded_and_stalls_nothing(circusd: Any, tmp_path: Path) -> None:
    d = _start(circusd, tmp_path, SLOW)
    tap = EventTap(d.pubsub_endpoint)
    try:
        tap.prime(d)
        wait_for(lambda: d.pids("slowext"), what="slowext worker")
        result: dict[str, Any] = {}

        def ask() -> None:
            started = time.monotonic()
            result["reply"] = d.call("stats", name="slowext", extended=True, timeout=20)
            result["took"] = time.monotonic() - started

        asker = threading.Thread(target=ask)
        asker.start()
        # While the hook sleeps in its thread, the loop answers other requests at once.
        lags: list[float] = []
        while asker.is_alive() and len(lags) < 20:
            t0 = time.monotonic()
            assert d.call("numwatchers")["status"] == "ok"
            lags.append(time.monotonic() - t0)
        asker.join(30)
        reply = result["reply"]
        assert reply["status"] == "ok" and reply["info"]
        assert all("late" not in info for info in reply["info"].values())  # left as it was
        assert result["took"] < 6.0, result  # the budget (2 s), not the hook's 8 s
        assert lags and max(lags) < 1.5, lags
        tap.wait(
            lambda ev: any(
                t == "watcher.slowext.hook_failure" and p["name"] == "extended_stats" for t, p in ev
            ),
            what="hook_failure for the overrun",
        )
    finally:
        tap.close()


def test_restarts_in_stats_and_on_the_stats_stream(circusd: Any, tmp_path: Path) -> None:
    d = circusd("[watcher:web]\ncmd = sleep 600\n")
    wait_for(lambda: d.pids("web"), what="web worker")
    assert d.call("stats", name="web")["restarts"] == 0
    for _ in range(2):
        assert d.call("restart", name="web", waiting=True)["status"] == "ok"
    wait_for(lambda: d.pids("web"), what="web worker after the restarts")
    reply = d.call("stats", name="web")
    assert reply["restarts"] == 2 and reply["name"] == "web" and isinstance(reply["info"], dict)
    assert d.call("stats")["restarts"] == {"web": 2}
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(d.stats_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"stat.web")
        deadline = time.monotonic() + 15
        pool = None
        while pool is None:
            left = deadline - time.monotonic()
            assert left > 0, "no stat.web aggregate on the stats stream"
            if sub.poll(int(left * 1000)):
                topic, body = sub.recv_multipart()
                if topic == b"stat.web":
                    pool = json.loads(body)
    finally:
        sub.close()
        ctx.term()
    assert pool["restarts"] == 2
