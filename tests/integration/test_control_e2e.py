"""The control layer inside a real circusd: scaling, concurrency without a global lock, events, circusctl."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import zmq
from conftest import wait_for

from circus_linux.cli import circusctl
from circus_linux.control.client import Client

SECTIONS = """
[watcher:web]
cmd = sleep 600
numprocesses = 2

[watcher:stubborn]
cmd = sh -c 'trap "" TERM; while :; do sleep 0.1; done'
graceful_timeout = 3
"""


def test_scale_live_and_read_back(circusd: Any) -> None:
    d = circusd(SECTIONS)
    with Client(d.endpoint, timeout=20) as c:
        assert sorted(c.call("list")["watchers"]) == ["stubborn", "web"]
        assert c.call("incr", name="web", nb=2, waiting=True)["numprocesses"] == 4
        assert len(c.call("list", name="web")["pids"]) == 4
        c.call("set", name="web", options={"numprocesses": 1}, waiting=True)
        wait_for(lambda: len(c.call("list", name="web")["pids"]) == 1, what="scale down to 1")
        assert c.call("get", name="web", keys=["numprocesses"])["options"] == {"numprocesses": 1}
        pid = c.call("list", name="web")["pids"][0]
        info = c.call("stats", name="web")["info"][str(pid)]
        assert info["pid"] == pid and info["cmdline"] == "sleep 600" and info["wid"] >= 1
        assert c.call("status", name="web")["status"] == "active"


def test_slow_stop_of_one_watcher_does_not_block_another(circusd: Any) -> None:
    d = circusd(SECTIONS)
    done: dict[str, Any] = {}

    def trap_installed() -> bool:
        # sh has a `sleep` child only once it runs its loop, after `trap "" TERM`: an earlier TERM kills it
        with Client(d.endpoint, timeout=20) as c:
            infos = c.call("stats", name="stubborn")["info"].values()
            return any(isinstance(i, dict) and i["children"] for i in infos)

    wait_for(trap_installed, what="the stubborn worker to ignore TERM")

    def slow_stop() -> None:
        with Client(d.endpoint, timeout=30) as c:
            started = time.monotonic()
            done["reply"] = c.request("stop", name="stubborn", waiting=True)
            done["took"] = time.monotonic() - started

    t = threading.Thread(target=slow_stop)
    t.start()
    with Client(d.endpoint, timeout=20) as c:
        wait_for(lambda: c.call("status", name="stubborn")["status"] == "stopping", what="stopping")
        started = time.monotonic()
        for _ in range(50):
            assert c.call("list")["status"] == "ok"
        assert c.call("incr", name="web", waiting=True)["numprocesses"] == 3
        fast = time.monotonic() - started
        assert "reply" not in done, "the stubborn stop should still be in its graceful period"
    t.join(30)
    assert done["reply"]["status"] == "ok" and done["took"] >= 2.5
    assert fast < done["took"]


def test_events_on_the_pubsub_endpoint(circusd: Any) -> None:
    d = circusd(SECTIONS)
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"watcher.web.")
        sub.connect(d.pubsub_endpoint)
        with Client(d.endpoint, timeout=20) as c:
            # a SUB only hears what is published after its subscription reached the PUB: retry the incr
            def spawned() -> dict[str, Any] | None:
                c.call("incr", name="web", waiting=True)
                while sub.poll(200):
                    topic, body = sub.recv_multipart()
                    if topic == b"watcher.web.spawn":
                        return dict(json.loads(body))
                return None

            event = wait_for(spawned, what="spawn event")
            assert event["process_pid"] in c.call("list", name="web")["pids"] and "time" in event
        sub.close()
    finally:
        ctx.destroy(linger=0)


def test_circusctl_against_circusd(circusd: Any) -> None:
    d = circusd(SECTIONS)

    def ctl(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = circusctl.main(["--endpoint", d.endpoint, "--timeout", "20", *argv], out, io.StringIO())
        return code, out.getvalue()

    assert ctl("status") == (0, "stubborn: active\nweb: active\n")
    assert ctl("incr", "web", "--waiting") == (0, "3\n")
    code, out = ctl("stats", "web")
    assert code == 0 and len(out.splitlines()) == 4
    assert ctl("numprocesses") == (0, "4\n")
    assert ctl("quit") == (0, "ok\n")
    assert d.proc.wait(30) == 0
