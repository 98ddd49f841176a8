"""Spawn/kill churn with double-forking workers: circusd (the subreaper) leaves no zombie and leaks no fd."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fault.fault_probe import Wire, fd_count, fd_targets, wait_for, zombie_children

WORKERS = 50

# Each worker forks a grandchild through a subshell that exits at once: the grandchild is orphaned and
# re-parented to circusd (PR_SET_CHILD_SUBREAPER), which must reap it when it exits 50 ms later.
DOUBLE_FORK = f"""
[watcher:churn]
cmd = sh -c '(sleep 0.05 &); exec sleep 1000'
numprocesses = {WORKERS}
graceful_timeout = 5
max_retry = -1
"""


def _churn(w: Wire, cycles: int) -> float:
    """Kill the whole pool through `kill` until `cycles` workers have been replaced; returns cycles/s."""
    start = time.monotonic()
    done = 0
    pids = set(wait_for(lambda: (p := w.pids("churn")) and len(p) == WORKERS and p, what="pool up"))
    while done < cycles:
        reply = w.call("kill", name="churn", waiting=True, timeout=30)
        assert reply["status"] == "ok", reply
        pids = set(
            wait_for(
                lambda old=pids: (p := set(w.pids("churn"))) and len(p) == WORKERS and not p & old and p,
                timeout=30,
                what="replacements",
            )
        )
        done += WORKERS
    return done / (time.monotonic() - start)


def _settle(w: Wire, daemon_pid: int, baseline: int, slack: int) -> int:
    """Wait until the grandchildren are reaped and circusd's fd count is back near its baseline."""

    def settled() -> bool:
        return not zombie_children(daemon_pid) and fd_count(daemon_pid) <= baseline + slack

    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:
        w.call("list")  # an idle loop has nothing to do; a request lets any pending reap run
        time.sleep(0.02)
    return fd_count(daemon_pid)


def _stat(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read()
    except OSError:
        return "gone"


def _run(circusd: Any, wire: Any, cycles: int) -> tuple[float, int, int, int]:
    d = circusd(DOUBLE_FORK)
    w = wire(d)
    pid = d.proc.pid
    wait_for(lambda: len(w.pids("churn")) == WORKERS, timeout=30, what="pool up")
    # A warm-up round first: lazily opened things (streams, cgroup files, zmq pipes) exist before we count.
    _churn(w, WORKERS)
    before = _settle(w, pid, fd_count(pid), 0)
    orphans_before = w.call("dstats")["info"]["reaped_orphans"]
    rate = _churn(w, cycles)
    # zmq may keep a couple of internal fds (ipc reconnections) around: a leak per cycle would show as
    # hundreds or thousands, not a handful.
    after = _settle(w, pid, before, 4)
    # The last round's grandchildren exit ~50 ms after their workers start: a zombie seen at one instant
    # may be one the reaper is about to collect. What counts is a zombie that stays.
    deadline = time.monotonic() + 5
    zombies = zombie_children(pid)
    while zombies and time.monotonic() < deadline:
        w.call("list")
        time.sleep(0.05)
        zombies = [z for z in zombie_children(pid) if z in zombies]  # still there since the last look
    assert not zombies, (
        f"zombies under circusd: {[(z, _stat(z)) for z in zombies]}\n"
        + "\n".join(line for line in d.log_text().splitlines() if "INFO" not in line)[-3000:]
    )
    assert after <= before + 4, (before, after, sorted(fd_targets(pid)))
    orphans = w.call("dstats")["info"]["reaped_orphans"] - orphans_before
    return rate, before, after, orphans


def test_no_zombie_and_no_fd_leak_after_a_short_churn(circusd: Any, wire: Any) -> None:
    rate, before, after, orphans = _run(circusd, wire, 500)
    # every killed worker's subshell left one orphan behind; they all went through circusd's reaper
    assert orphans >= 500 * 0.9, orphans
    print(f"\nshort churn: 500 cycles at {rate:.0f} cycles/s, fds {before} -> {after}, orphans {orphans}")


@pytest.mark.slow
def test_no_zombie_and_no_fd_leak_after_10000_double_fork_cycles(circusd: Any, wire: Any) -> None:
    rate, before, after, orphans = _run(circusd, wire, 10_000)
    assert orphans >= 10_000 * 0.9, orphans
    print(f"\n10000 cycles at {rate:.0f} cycles/s, fds {before} -> {after}, orphans reaped {orphans}")
