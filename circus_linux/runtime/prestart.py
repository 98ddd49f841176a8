"""Spawn the first watchers' workers before circusd imports its event loop; the arbiter adopts them.

In a normal start the first spawn waits for everything after the config: asyncio, the arbiter, the
watcher and stream modules, the arbiter's setup (about 60 ms on the project's 2-core VM, more than the
whole spawn of 50 workers). The watchers core/prestart.py lets through need none of it: their spawn is a
spec (runtime/spawnspec.py), a cgroup (kernel/cgroup.py) and one C call (kernel/native.py). So circusd
spawns them right after reading its config, then imports the rest while the workers exec on the other
cores, and the arbiter takes them over (Watcher.adopt_prestarted) the way an in-place upgrade hands
workers over: same pids, same pidfds, wids 1..N, and a `spawn` event each. The watcher's start then
finds its pool complete.

Nothing here reports a failure: a spawn that fails, or a cgroup that cannot be made, ends prestarting
there, and the arbiter's own start meets (and reports, and counts) the same failure.

This module must not import asyncio (a test checks it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from circus_linux.core import prestart as policy
from circus_linux.kernel import cgroup as kcg
from circus_linux.kernel import native
from circus_linux.runtime.spawnspec import build_spawn_spec


@dataclass(frozen=True)
class Worker:
    """One worker spawned before the event loop."""

    pid: int
    pidfd: int
    wid: int
    argv: list[str]
    started: float  # wall clock, as `stats` shows it
    started_mono: float
    spawn_ms: float  # spec + clone/exec round trip, as the `spawn` event reports it


@dataclass
class Prestarted:
    """What runtime/prestart hands the arbiter: the cgroup tree it built, the workers by watcher name."""

    tree: kcg.CgroupTree | None
    workers: dict[str, list[Worker]] = field(default_factory=dict)
    ended: str = ""  # why prestarting stopped where it did (logged by the arbiter)

    def count(self) -> int:
        return sum(len(ws) for ws in self.workers.values())

    def discard(self) -> None:
        """SIGKILL and reap the workers nobody adopted: circusd failed between spawning and adopting them
        (a socket that cannot be bound, say), so its normal start would never have run them. Once the
        arbiter adopted them (it empties `workers`), this does nothing."""
        for workers in self.workers.values():
            for w in workers:
                with contextlib.suppress(ProcessLookupError):
                    native.pidfd_send_signal(w.pidfd, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    native.waitid_pidfd(w.pidfd, block=True)
                os.close(w.pidfd)
        self.workers.clear()


class _Services:
    """The slice of WatcherServices that spawnspec reads, for a watcher with no sockets and no notify."""

    notify_socket = None

    def __init__(self, placement: kcg.Placement | None) -> None:
        self._placement = placement

    def cgroup(self, name: str) -> kcg.Placement | None:
        return self._placement

    def socket_fd(self, name: str) -> int:
        raise ValueError(f"socket {name}: not available before the arbiter binds it")

    def all_sockets(self) -> list[str]:
        return []


def prestart(cfg: Any, environ: Mapping[str, str] | None = None) -> Prestarted:
    """Spawn the workers of the watchers core/prestart.py lets through (maybe none: `ended` says why).

    Call with circusd's signals already blocked (runtime/signals.block): a worker that dies before the
    arbiter's signalfd exists is still reported by it.
    """
    watchers, ended = policy.plan(cfg, os.environ if environ is None else environ)
    if not watchers:
        return Prestarted(None, ended=ended)
    try:
        tree = kcg.tree_for(getattr(cfg.circus, "cgroup_root", None))
    except kcg.CgroupError as exc:
        # The arbiter's CgroupManager tries again, and says why it runs without cgroups.
        return Prestarted(None, ended=f"the cgroup tree: {exc}")
    out = Prestarted(tree, ended=ended)
    native.set_child_subreaper()  # as the arbiter's setup does: orphans of our workers come back to us
    try:
        for wcfg in watchers:
            workers = out.workers.setdefault(wcfg.name, [])
            failed = _spawn_pool(tree, wcfg, workers)
            if not workers:
                del out.workers[wcfg.name]
            if failed is not None:
                out.ended = f"watcher {wcfg.name}: {failed}"
                break
    except BaseException:
        out.discard()  # a bug here must not leave workers nobody supervises
        raise
    return out


def _spawn_pool(tree: kcg.CgroupTree | None, wcfg: Any, workers: list[Worker]) -> str | None:
    """Spawn wids 1..numprocesses of one watcher into `workers` (each as soon as it exists, so nothing is
    lost if this raises); returns why it stopped early, or None."""
    try:
        cg = tree.watcher(wcfg.name) if tree is not None else None
        if cg is not None:
            cg.apply_limits(kcg.CgroupLimits.of(wcfg.cgroup))
        placement = kcg.Placement(cg) if cg is not None else None
    except (kcg.CgroupError, OSError) as exc:
        return f"its cgroup: {exc}"
    svc = _Services(placement)
    try:
        for wid in range(1, wcfg.numprocesses + 1):
            t0 = time.monotonic()
            try:
                spec, argv = build_spawn_spec(wcfg, wid, svc)
                child = native.spawn(spec)
            except (native.SpawnError, OSError, ValueError) as exc:
                return f"spawn of wid {wid}: {exc}"
            now = time.monotonic()
            workers.append(
                Worker(child.pid, child.pidfd, wid, argv, time.time(), now, round((now - t0) * 1000.0, 3))
            )
    finally:
        if placement is not None:
            placement.close()
    return None
