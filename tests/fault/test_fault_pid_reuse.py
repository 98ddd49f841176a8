"""PID reuse: once a worker is reaped and its pid goes to a stranger, no command ever signals the stranger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault.fault_probe import Wire, proc_state, wait_for

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")

# Traps every catchable signal and appends its number to a file; "ready" is written once all handlers are in.
STRANGER = r"""
import os, signal, sys
log = open(sys.argv[1], "a", buffering=1)
def note(signum, frame):
    log.write(f"{signum}\n")
for s in signal.valid_signals():
    if s not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(s, note)
        except (OSError, ValueError):
            pass
log.write("ready\n")
while True:
    signal.pause()
"""

WATCHERS = """
[watcher:victim]
cmd = sleep 1000
numprocesses = 1
respawn = false
graceful_timeout = 2

[watcher:other]
cmd = sleep 1000
numprocesses = 2
graceful_timeout = 2
"""


@pytest.fixture
def strangers() -> Iterator[list[subprocess.Popen[bytes]]]:
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for p in made:
        if p.poll() is None:
            p.kill()
        p.wait()


def _spawn_at(pid: int, log: Path, made: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes] | None:
    """Start the stranger so that it gets exactly `pid` (ns_last_pid = pid - 1 right before the fork).

    Other processes on the machine may win the race for that pid: the caller retries with a new victim.
    """
    NS_LAST_PID.write_text(str(pid - 1))
    p = subprocess.Popen([sys.executable, "-c", STRANGER, str(log)])
    made.append(p)
    if p.pid != pid:
        p.kill()
        p.wait()
        return None
    return p


def _stranger_signals(log: Path) -> list[str]:
    return [x for x in log.read_text().split() if x != "ready"] if log.exists() else []


def _take_pid_of_dead_worker(
    d: Any, w: Wire, tmp_path: Path, made: list[subprocess.Popen[bytes]]
) -> tuple[int, subprocess.Popen[bytes], Path]:
    """Kill victim's worker from outside, wait until circusd reaped it, give its pid to a stranger."""
    for attempt in range(20):
        if attempt:
            assert w.call("start", name="victim", waiting=True)["status"] == "ok"
        pid = wait_for(lambda: (p := w.pids("victim")) and p[0], what="victim up")
        os.kill(pid, signal.SIGKILL)  # the test, not circusd, kills it: the pid is ours to reuse
        wait_for(lambda: proc_state(pid) is None, what="victim reaped by circusd")  # noqa: B023
        wait_for(lambda: w.pids("victim") == [], what="victim gone from list")
        log = tmp_path / f"stranger{attempt}.log"
        stranger = _spawn_at(pid, log, made)
        if stranger is not None:
            wait_for(lambda f=log: f.exists() and "ready" in f.read_text(), what="stranger ready")
            return pid, stranger, log
    pytest.skip("could not place a process on a recycled pid in 20 attempts (a busy machine)")


def test_no_command_signals_a_process_that_took_a_dead_workers_pid(
    circusd: Any, wire: Any, tmp_path: Path, strangers: list[subprocess.Popen[bytes]]
) -> None:
    if not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip("cannot write /proc/sys/kernel/ns_last_pid (needs CAP_SYS_ADMIN in the pid namespace)")
    d = circusd(WATCHERS)
    w = wire(d)
    wait_for(lambda: len(w.pids("other")) == 2, what="other up")
    pid, stranger, log = _take_pid_of_dead_worker(d, w, tmp_path, strangers)

    # Every way a client can name that pid or the watcher that once owned it:
    replies = [
        w.call("signal", name="victim", pid=pid, signum="TERM"),
        w.call("signal", name="victim", pid=pid, signum="HUP", children=True),
        w.call("signal", name="victim", pid=pid, childpid=pid, signum="USR1"),
        w.call("signal", name="other", pid=pid, signum="TERM"),
        w.call("signal", name="victim", signum="USR2", recursive=True),
        w.call("kill", name="victim", pid=pid, signum="INT", graceful_timeout=0.1, waiting=True),
        w.call("kill", name="victim", waiting=True),
        w.call("stats", name="victim", process=pid),
        w.call("stop", name="victim", waiting=True),
        w.call("reload", name="victim", waiting=True),
        w.call("restart", name="victim", waiting=True),
        w.call("stop", name="victim", waiting=True),
    ]
    pid_named = replies[:4] + replies[5:6]
    for r in pid_named:
        assert r["status"] == "error" and r["errno"] == 3 and str(pid) in r["reason"], r
    # circusd's own view of its children must not include the stranger
    assert pid not in w.pids("other") and pid not in w.pids("victim")

    assert stranger.poll() is None, "the stranger died"
    assert _stranger_signals(log) == [], f"the stranger was signalled: {_stranger_signals(log)}"
    assert proc_state(pid) in ("S", "R")
