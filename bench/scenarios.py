"""The four measured scenarios, each watching a supervisor from outside through /proc; no supervisor API.

A "target" is anything with `pid`, `t0` (monotonic time it was started), `start(n)`, `stop()`,
`poll_ready()` and `alive()`: the floor (floor.Floor) or circusd (circus_target.Circusd).
Every wait polls against a deadline and raises Timeout when it passes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import procfs

BULK_POLL = 0.0005  # s between polls while N workers come up (cold start, mass kill)
TIGHT_POLL = 0.0002  # s between polls while one replacement comes up
# circusd treats a worker that dies less than 1 s after its start as a failed start and backs off from
# the second one on (core/policy.py BackoffPolicy.window). The benchmark measures crash replacement, so
# it only kills workers older than this.
MIN_VICTIM_AGE = 1.5


class Timeout(RuntimeError):
    """A scenario's deadline passed before the awaited state was observed."""


class Target(Protocol):
    label: str
    pid: int | None
    t0: float

    def start(self, n: int) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...
    def poll_ready(self) -> None: ...


@dataclass
class Pool:
    """What the benchmark knows of one target's workers: pids seen exec'd, and when first seen."""

    target: Target
    comm: str
    first_seen: dict[int, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.target.pid is not None
        return self.target.pid

    def running(self, exclude: frozenset[int] | set[int] = frozenset()) -> list[int]:
        """Children that have exec'd `comm`, excluding `exclude`. A pid already seen exec'd is not re-read
        (it cannot un-exec), which keeps a poll of 500 workers cheap; `verify` re-checks for zombies."""
        now = time.monotonic()
        out = []
        for p in procfs.children(self.pid):
            if p in exclude:
                continue
            if p in self.first_seen:
                out.append(p)
            elif procfs.is_running(p, self.comm):
                self.first_seen[p] = now
                out.append(p)
        return out

    def verify(self, pids: list[int]) -> list[int]:
        """The pids of `pids` that are really running (not zombies); forgets the others."""
        ok = []
        for p in pids:
            if procfs.is_running(p, self.comm):
                ok.append(p)
            else:
                self.first_seen.pop(p, None)
        return ok


def _check(target: Target, deadline: float, what: str) -> None:
    if not target.alive():
        raise Timeout(f"{target.label} exited while waiting for {what}")
    if time.monotonic() > deadline:
        raise Timeout(f"{target.label}: {what} not observed before the deadline")


def wait_pool(pool: Pool, n: int, exclude: frozenset[int], timeout: float, what: str) -> tuple[float, float]:
    """Poll until `n` workers outside `exclude` run; returns the monotonic times when the first one and
    when all `n` were first observed."""
    deadline = time.monotonic() + timeout
    polls = 0
    first: float | None = None
    while True:
        pool.target.poll_ready()
        pids = pool.running(exclude)
        if pids and first is None:
            first = time.monotonic()
        if len(pids) >= n:
            seen = time.monotonic()
            if len(pool.verify(pids)) >= n:
                assert first is not None
                return first, seen
        polls += 1
        if polls % 64 == 0:
            _check(pool.target, deadline, what)
        time.sleep(BULK_POLL)


@dataclass(frozen=True)
class ColdStart:
    first_s: float  # start -> first worker exec'd
    running_s: float  # start -> N workers exec'd
    ready_s: float | None  # start -> READY=1 received (circusd only)


def cold_start(target: Target, pool: Pool, n: int, timeout: float) -> ColdStart:
    target.start(n)
    first, seen = wait_pool(pool, n, frozenset(), timeout, f"{n} workers at cold start")
    ready_at = getattr(target, "ready_at", None)
    if hasattr(target, "ready_at"):
        deadline = time.monotonic() + timeout
        while ready_at is None:
            _check(target, deadline, "READY=1")
            time.sleep(BULK_POLL)
            target.poll_ready()
            ready_at = getattr(target, "ready_at", None)
    return ColdStart(first - target.t0, seen - target.t0, None if ready_at is None else ready_at - target.t0)


def _wait_old_enough(pool: Pool, pids: list[int]) -> None:
    """Wait until every pid of `pids` has run for MIN_VICTIM_AGE (a computed instant, not a guess)."""
    youngest = max(pool.first_seen[p] for p in pids)
    delay = youngest + MIN_VICTIM_AGE - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def mass_kill(pool: Pool, n: int, timeout: float) -> float:
    """SIGKILL every worker at once; seconds until `n` new workers run."""
    victims = pool.verify(pool.running())
    if len(victims) < n:
        raise Timeout(f"{pool.target.label}: only {len(victims)} of {n} workers before the mass kill")
    _wait_old_enough(pool, victims)
    t0 = time.monotonic()
    for p in victims:
        os.kill(p, signal.SIGKILL)
    _first, seen = wait_pool(pool, n, frozenset(victims), timeout, f"{n} replacements after a mass kill")
    for p in victims:
        pool.first_seen.pop(p, None)
    return seen - t0


def single_kills(pool: Pool, count: int, timeout: float) -> list[float]:
    """Kill the oldest worker `count` times; each time, seconds until a new child has exec'd."""
    out = []
    for _ in range(count):
        current = pool.verify(pool.running())
        victim = min(current, key=lambda p: pool.first_seen[p])
        _wait_old_enough(pool, [victim])
        known = set(procfs.children(pool.pid))
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        polls = 0
        found = None
        while found is None:
            for p in procfs.children(pool.pid):
                if p not in known and procfs.is_running(p, pool.comm):
                    found = p
                    break
            else:
                polls += 1
                if polls % 256 == 0:
                    _check(pool.target, deadline, "a replacement worker")
                time.sleep(TIGHT_POLL)
        out.append(time.monotonic() - t0)
        pool.first_seen[found] = time.monotonic()
        pool.first_seen.pop(victim, None)
        # Let the supervisor finish with the dead one (reaped: gone from its children) before the next kill.
        while victim in procfs.children(pool.pid):
            _check(pool.target, deadline, f"reaping of {victim}")
            time.sleep(BULK_POLL)
    return out


@dataclass(frozen=True)
class Idle:
    cpu_pct_ticks: float  # utime+stime delta / wall, percent of one CPU
    cpu_pct_ns: float  # schedstat delta / wall, percent of one CPU
    rss_mib: float


# The idle window opens this long after the last worker was seen running, for every column alike: what a
# supervisor still does to finish its start (circusd builds its control channel after its first spawns)
# is start-up, not idle.
SETTLE = 1.0


def idle(target: Target, window: float) -> Idle:
    """The supervisor's own CPU over `window` seconds with its workers up and nothing happening; with its
    helper processes (`target.extra_pids()`, e.g. Circus's circusd-stats) counted in, CPU and RSS."""
    assert target.pid is not None
    extra = getattr(target, "extra_pids", None)
    pids = [target.pid, *(extra() if extra is not None else [])]

    def read(probe: Callable[[int], int | None]) -> list[int]:
        values = [probe(p) for p in pids]
        if any(v is None for v in values) or not target.alive():
            raise Timeout(f"{target.label} exited during the idle window")
        return [v for v in values if v is not None]

    time.sleep(SETTLE)  # not measured: see SETTLE
    t0 = time.monotonic()
    ticks0, ns0 = read(procfs.cpu_ticks), read(procfs.cpu_ns)
    time.sleep(window)  # the measurement window itself: nothing is awaited here
    ticks1, ns1 = read(procfs.cpu_ticks), read(procfs.cpu_ns)
    wall = time.monotonic() - t0
    rss = read(procfs.rss_kib)
    return Idle(
        cpu_pct_ticks=100.0 * (sum(ticks1) - sum(ticks0)) / procfs.CLK_TCK / wall,
        cpu_pct_ns=100.0 * (sum(ns1) - sum(ns0)) / 1e9 / wall,
        rss_mib=sum(rss) / 1024.0,
    )
