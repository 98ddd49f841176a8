"""Crash isolation: failing handlers, raising hooks and a worker crash storm never take the arbiter down."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from fault.fault_probe import proc_state, wait_for

HOOKS = '''
def boom(watcher, arbiter, hook_name, **kwargs):
    raise RuntimeError("hook " + hook_name + " exploded on purpose")
'''


def test_commands_on_vanished_pids_and_raising_hooks_cost_one_error_reply(
    circusd: Any, wire: Any, events: Any, tmp_path: Path
) -> None:
    (tmp_path / "crashhooks.py").write_text(HOOKS)
    d = circusd(
        "[watcher:w]\ncmd = sh -c 'sleep 1000 & wait'\nnumprocesses = 2\ngraceful_timeout = 2\n"
        "hooks.after_signal = crashhooks.boom\nhooks.extended_stats = crashhooks.boom\n",
        env={"PYTHONPATH": str(tmp_path)},
    )
    w = wire(d)
    ev = events(d, "watcher.w.")
    pids = wait_for(lambda: (p := w.pids("w")) and len(p) == 2 and p, what="w up")
    victim = pids[0]
    child = wait_for(lambda: _children(victim), what="the worker's child")[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: proc_state(victim) is None, what="victim reaped")
    for props in (
        {"pid": victim, "signum": "HUP"},
        {"pid": victim, "childpid": child, "signum": "HUP"},
        {"pid": victim, "signum": "HUP", "children": True, "recursive": True},
    ):
        r = w.call("signal", name="w", **props)
        assert r["status"] == "error" and r["errno"] == 3 and str(victim) in r["reason"], r
    r = w.call("kill", name="w", pid=victim)
    assert r["status"] == "error" and r["errno"] == 3, r
    r = w.call("stats", name="w", process=victim)
    assert r["status"] == "error", r
    # The hooks raise: the signal still goes, the failure is an event, the command answers.
    alive = wait_for(lambda: (p := w.pids("w")) and len(p) == 2 and p, what="w refilled")
    assert w.call("signal", name="w", signum="CONT")["status"] == "ok"
    failure = ev.wait(".hook_failure")
    assert "exploded on purpose" in failure["error"], failure
    assert w.call("stats", name="w", extended=True)["status"] in ("ok", "error")
    assert w.call("list")["status"] == "ok" and d.proc.poll() is None
    assert w.pids("w") == alive


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_a_worker_crash_storm_leaves_the_arbiter_and_other_watchers_alone(
    circusd: Any, wire: Any, events: Any
) -> None:
    d = circusd(
        "[watcher:storm]\ncmd = sh -c 'exit 3'\nnumprocesses = 20\nmax_retry = -1\n\n"
        "[watcher:calm]\ncmd = sleep 1000\nnumprocesses = 2\ngraceful_timeout = 2\n"
    )
    w = wire(d)
    ev = events(d, "watcher.storm.reap")
    calm = wait_for(lambda: (p := w.pids("calm")) and len(p) == 2 and sorted(p), what="calm up")
    # 20 wids crash-looping (about 6 crashes each before the backoff reaches seconds), commands coming in.
    reaps = 0
    while reaps < 80:
        assert w.call("status", name="storm")["status"] in ("active", "starting", "stopped"), d.log_text()
        ev.wait("reap")
        reaps = len(ev.drain())
    assert d.proc.poll() is None
    assert sorted(w.pids("calm")) == calm
    assert all(p["exit_code"] == 3 for _, p in ev.seen)
    assert w.call("stop", name="storm", waiting=True)["status"] == "ok"
    assert w.call("list")["status"] == "ok"
    assert "Traceback" not in d.log_text(), d.log_text()[-3000:]
