"""Restart policy: wid allocation, crash-loop backoff, give-up, scale decisions; pure, time is an argument."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


def allocate_wid(used: Iterable[int], numprocesses: int) -> int:
    """The lowest free worker id in 1..2*numprocesses (Circus's rule).

    During a graceful reload old and new workers overlap, which is why the range is twice the pool.
    Past that (more overlap than Circus allows) we keep counting up rather than fail a spawn.
    """
    taken = set(used)
    limit = max(2 * numprocesses, 1)
    for wid in range(1, limit + 1):
        if wid not in taken:
            return wid
    wid = limit + 1
    while wid in taken:
        wid += 1
    return wid


@dataclass(frozen=True)
class BackoffPolicy:
    """When a worker dies within `window` seconds of its start, that start failed.

    The first failed start of a wid is retried at once (a worker killed from outside right after its start
    must come back within milliseconds); from the second consecutive one on, the next spawn is delayed
    exponentially (base * 2**(n-2), capped);
    after `max_retry` of them the watcher gives up (max_retry < 0: never). A worker that lived longer than
    the window is a crash after a good start: it is replaced at once and its wid's count is reset.
    """

    window: float = 1.0
    base: float = 0.1
    cap: float = 10.0
    max_retry: int = 5

    def delay(self, failures: int) -> float:
        if failures <= 1:
            return 0.0
        return float(min(self.cap, self.base * (2 ** (failures - 2))))


@dataclass
class SlotHistory:
    """What the watcher remembers about one wid across its successive processes."""

    failures: int = 0  # consecutive failed starts
    not_before: float = 0.0  # monotonic time before which this wid must not respawn


@dataclass(frozen=True)
class ExitVerdict:
    respawn: bool
    give_up: bool
    delay: float
    failed_start: bool


@dataclass
class RestartBook:
    """Per-watcher restart bookkeeping: feed it exits, ask it when a wid may respawn."""

    policy: BackoffPolicy
    slots: dict[int, SlotHistory] = field(default_factory=dict)

    def on_exit(self, wid: int, lifetime: float, now: float, *, exec_failed: bool = False) -> ExitVerdict:
        slot = self.slots.setdefault(wid, SlotHistory())
        failed = exec_failed or lifetime < self.policy.window
        if not failed:
            slot.failures = 0
            slot.not_before = now
            return ExitVerdict(respawn=True, give_up=False, delay=0.0, failed_start=False)
        slot.failures += 1
        if 0 <= self.policy.max_retry < slot.failures:
            return ExitVerdict(respawn=False, give_up=True, delay=0.0, failed_start=True)
        delay = self.policy.delay(slot.failures)
        slot.not_before = now + delay
        return ExitVerdict(respawn=True, give_up=False, delay=delay, failed_start=True)

    def ready_at(self, wid: int) -> float:
        slot = self.slots.get(wid)
        return slot.not_before if slot else 0.0

    def forget(self) -> None:
        """A deliberate start (start/restart command) clears the history."""
        self.slots.clear()


def wids_to_spawn(
    desired: int, live_wids: Iterable[int], book: RestartBook, now: float
) -> tuple[list[int], float | None]:
    """Which wids to spawn now to reach `desired`, and when to look again for wids still backing off.

    Wids come lowest-first; a wid in backoff is skipped (its slot stays empty) rather than replaced by
    another wid, so a crash-looping slot cannot starve the others nor be dodged by renumbering.
    """
    live = set(live_wids)
    missing = desired - len(live)
    spawn: list[int] = []
    wake: float | None = None
    candidate = 0
    limit = max(2 * desired, 1)
    while missing > 0 and candidate < limit + desired:
        candidate += 1
        if candidate in live or candidate in spawn:
            continue
        at = book.ready_at(candidate)
        if at > now:
            wake = at if wake is None else min(wake, at)
            missing -= 1  # the slot is reserved for its own retry
            continue
        spawn.append(candidate)
        missing -= 1
    return spawn, wake


def pick_to_stop(live: list[tuple[int, float]], count: int) -> list[int]:
    """The `count` oldest processes (pid, start time) go first when scaling down."""
    ordered = sorted(live, key=lambda item: (item[1], item[0]))
    return [pid for pid, _ in ordered[: max(count, 0)]]
