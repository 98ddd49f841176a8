"""Samples stats for the `stats` command and the stats stream: cgroup aggregates and psutil per process.

Reads only (/proc, cgroup files, sock_diag); never signals, never imports zmq. The cost is per-process
psutil sampling, so psutil.Process objects are cached (one per pid and start time), each sample is one
``oneshot()``, usernames are resolved once per process, and the command line comes from the runtime (what
was exec'd) rather than /proc. Children are looked up only for watchers whose cgroup holds more pids than
workers, which an idle pool never does.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import psutil

from circus_linux.kernel import sockdiag
from circus_linux.kernel.cgroup import CgroupError, CgroupStats

NO_SUCH_PROCESS = "No such process (stopped?)"
_TOTAL_MEM = psutil.virtual_memory().total
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def bytes2human(n: float) -> str:
    """1536 -> '1.5K': how Circus prints mem_info1/mem_info2."""
    for i, unit in enumerate("YZEPTGMK"):
        size = 1 << ((8 - i) * 10)
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}B"


def ctime_text(cpu_seconds: float) -> str:
    """CPU time as Circus writes it: M:SS.cc."""
    minutes, seconds = divmod(cpu_seconds, 60)
    return f"{int(minutes)}:{int(seconds):02d}.{int((seconds % 1) * 100):02d}"


class _Proc:
    """A cached psutil.Process with what never changes for it (username, command line)."""

    __slots__ = ("cmdline", "last", "proc", "username")

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.username: str | None = None
        self.cmdline: str | None = None
        self.last: dict[str, Any] | None = None  # latest sample, reused by aggregates between samples


def cgroup_numbers(st: CgroupStats, cpu_percent: float | None) -> dict[str, Any]:
    """A CgroupStats as plain JSON numbers (PSI as {some: {avg10,...}, full: ...}); None where unserved."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(st):
        value = getattr(st, f.name)
        if f.name == "backends":
            out["backends"] = {k: str(v) for k, v in value.items()}
        elif f.name.endswith("_pressure"):
            out[f.name] = None if value is None else dataclasses.asdict(value)
        else:
            out[f.name] = value
    out["cpu_percent"] = cpu_percent
    return out


def cpu_percent_since(
    prev: tuple[Any, float, int] | None, handle: Any, now: float, usage_usec: int | None
) -> float | None:
    """CPU % (100 = one CPU) since ``prev`` = (handle, time, usage); None when there is no earlier sample
    of the same cgroup, no time has passed, or the counter went backwards (never a negative figure)."""
    if prev is None or usage_usec is None or prev[0] is not handle or now <= prev[1] or usage_usec < prev[2]:
        return None
    return round(100.0 * (usage_usec - prev[2]) / ((now - prev[1]) * 1e6), 2)


class StatsCollector:
    """Per-process and per-watcher figures for one arbiter; keeps the state cpu percentages need."""

    def __init__(self, arbiter: Any) -> None:
        self.arbiter = arbiter
        self._procs: dict[int, _Proc] = {}
        # watcher -> (its cgroup handle, monotonic, cpu usage usec): a sample counts only against one of
        # the same cgroup (rm + add of a name makes a new one, whose counter starts again from 0)
        self._cg_prev: dict[str, tuple[Any, float, int]] = {}
        self._users: dict[int, str] = {}

    # ------------------------------------------------------------------ processes
    def _entry(self, pid: int) -> _Proc:
        entry = self._procs.get(pid)
        if entry is not None:
            return entry
        entry = _Proc(psutil.Process(pid))
        self._procs[pid] = entry
        return entry

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:  # a uid with no passwd entry
                name = str(uid)
            self._users[uid] = name
        return name

    def process(
        self,
        pid: int,
        started: float | None = None,
        wid: int | None = None,
        cmdline: Iterable[str] | None = None,
        children: Iterable[int] = (),
    ) -> dict[str, Any] | None:
        """Circus's per-process info plus numbers; None when the process is gone."""
        try:
            entry = self._entry(pid)
            proc = entry.proc
            with proc.oneshot():
                if entry.username is None:
                    entry.username = self._user(proc.uids().real)
                times = proc.cpu_times()
                mem = proc.memory_info()
                cpu = proc.cpu_percent(interval=None)
                create = proc.create_time()
                nice = proc.nice()
                if entry.cmdline is None:
                    entry.cmdline = " ".join(cmdline) if cmdline else " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, FileNotFoundError):
            self._procs.pop(pid, None)
            return None
        start = create if started is None else started
        cpu_s = times.user + times.system
        info: dict[str, Any] = {
            "pid": pid,
            "name": None,
            "username": entry.username,
            "nice": nice,
            "mem_info1": bytes2human(mem.rss),
            "mem_info2": bytes2human(mem.vms),
            "cpu": cpu,
            "mem": round(100.0 * mem.rss / _TOTAL_MEM, 1),
            "ctime": ctime_text(cpu_s),
            "cmdline": entry.cmdline,
            "create_time": create,
            "age": time.time() - start,
            "started": start,
            "wid": wid,
            # numbers as numbers (the strings above are kept for Circus's clients)
            "rss": mem.rss,
            "vms": mem.vms,
            "cpu_user": times.user,
            "cpu_system": times.system,
            "cpu_seconds": cpu_s,
            "children": [c for c in (self.process(k) for k in children) if c is not None],
        }
        entry.last = info
        return info

    def last(self, pid: int) -> dict[str, Any] | None:
        entry = self._procs.get(pid)
        return None if entry is None else entry.last

    def prune(self, live: Iterable[int]) -> None:
        """Forget processes not in ``live`` (their psutil objects and samples)."""
        keep = set(live)
        for pid in [p for p in self._procs if p not in keep]:
            del self._procs[pid]

    def children_of(self, watcher: Any) -> dict[int, list[int]]:
        """worker pid -> pids of its descendants in the watcher's cgroup (empty when the cgroup has none)."""
        cgroups = getattr(self.arbiter, "cgroups", None)
        handle = cgroups.for_watcher(watcher.name) if cgroups is not None else None
        if handle is None:
            return {}
        try:
            pids = handle.cg.pids()
        except (OSError, CgroupError):
            return {}
        workers = {p.pid for p in watcher.processes()}
        extra = [p for p in pids if p not in workers]
        if not extra:
            return {}
        out: dict[int, list[int]] = {}
        parent: dict[int, int] = {}
        for pid in extra:
            try:
                parent[pid] = psutil.Process(pid).ppid()
            except psutil.Error:
                continue
        for pid in parent:
            top, seen = pid, 0
            while top in parent and seen < 64:  # walk up to the worker (bounded: ppid loops cannot exist)
                top, seen = parent[top], seen + 1
            if top in workers:
                out.setdefault(top, []).append(pid)
        return out

    # ------------------------------------------------------------------ watchers (cgroup)
    def cgroup(self, name: str) -> dict[str, Any] | None:
        """The watcher's cgroup numbers, with cpu_percent since the previous call (100 = one CPU)."""
        cgroups = getattr(self.arbiter, "cgroups", None)
        if cgroups is None:
            return None
        try:
            st = cgroups.stats(name)
        except (OSError, CgroupError):
            return None
        if st is None:
            return None
        now = time.monotonic()
        if len(self._cg_prev) > len(self.arbiter.watchers):  # not a scan per watcher and tick
            for gone in [n for n in self._cg_prev if n not in self.arbiter.watchers]:
                del self._cg_prev[gone]  # removed watchers: their samples would only pile up
        handle = cgroups.for_watcher(name)
        pct = cpu_percent_since(self._cg_prev.get(name), handle, now, st.cpu_usage_usec)
        if st.cpu_usage_usec is not None:
            self._cg_prev[name] = (handle, now, st.cpu_usage_usec)
        return cgroup_numbers(st, pct)

    def aggregate(self, watcher: Any, infos: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
        """Circus's `stat.<watcher>` body (pid list, cpu average, mem sum, oldest age) plus cgroup numbers."""
        vals = list(infos.values())
        return {
            "name": watcher.name,
            "pid": sorted(infos),
            "cpu": (sum(v["cpu"] for v in vals) / len(vals)) if vals else 0.0,
            "mem": round(sum(v["mem"] for v in vals), 1),
            "age": max((v["age"] for v in vals), default=0.0),
            "rss": sum(v["rss"] for v in vals),
            "numprocesses": watcher.numprocesses,
            "status": watcher.status(),
            "cgroup": self.cgroup(watcher.name),
        }

    def watcher(self, watcher: Any) -> dict[int, dict[str, Any]]:
        """Sample every live worker of ``watcher`` (with its cgroup descendants as children)."""
        kids = self.children_of(watcher)
        out: dict[int, dict[str, Any]] = {}
        for p in watcher.processes():
            info = self.process(p.pid, p.started, p.wid, getattr(p, "cmdline", None), kids.get(p.pid, ()))
            if info is not None:
                out[p.pid] = info
        return out

    # ------------------------------------------------------------------ circusd and sockets
    def circus(self) -> dict[str, Any] | None:
        info = self.process(os.getpid(), getattr(self.arbiter, "started", None))
        if info is not None:
            info["name"] = "circusd"
        return info

    def socket_entries(self) -> list[dict[str, Any]]:
        """The registry's `listsockets` entries (call on the loop: the registry is not thread-safe)."""
        registry = getattr(self.arbiter, "sockets", None)
        return [dict(e) for e in registry.describe()] if registry is not None else []

    @staticmethod
    def sockets(entries: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        """Per fd: name, address, accept-queue depth (queued), backlog; and the Circus-style total.

        Asks sock_diag through pyroute2, whose netlink socket cannot be made inside a running asyncio
        loop (pyroute2 0.9 runs its own): call it from a worker thread (asyncio.to_thread).
        """
        total: dict[str, Any] = {"name": "sockets", "addresses": [], "reads": 0, "queued": 0}
        if not entries:
            return {}, total
        inodes: dict[int, int] = {}
        for e in entries:
            fd = e.get("fd")
            if isinstance(fd, int):
                try:
                    inodes[fd] = os.fstat(fd).st_ino
                except OSError:
                    continue
        depths = sockdiag.queue_depths(inodes=inodes.values(), established=False)
        by_inode = depths.by_inode()
        per: dict[int, dict[str, Any]] = {}
        for e in entries:
            fd = e.get("fd")
            if not isinstance(fd, int):
                continue
            address = e.get("path") or f"{e.get('host')}:{e.get('port')}"
            q = by_inode.get(inodes.get(fd, -1))
            queued = q.queued if q is not None else None
            per[fd] = {
                "fd": fd,
                "name": e.get("name"),
                "address": address,
                # Circus counted select() wake-ups here; the closest kernel fact is the accept-queue depth.
                "reads": queued or 0,
                "queued": queued,
                "backlog": q.backlog if q is not None else e.get("backlog"),
            }
            total["addresses"].append(address)
            total["reads"] += queued or 0
            total["queued"] += queued or 0
        if not depths.available:
            total["unavailable"] = depths.reason
        return per, total


_COLLECTORS: weakref.WeakKeyDictionary[Any, StatsCollector] = weakref.WeakKeyDictionary()


def collector_for(arbiter: Any) -> StatsCollector:
    """The arbiter's one collector (cpu percentages need the previous sample of the same collector)."""
    col = _COLLECTORS.get(arbiter)
    if col is None:
        col = StatsCollector(arbiter)
        _COLLECTORS[arbiter] = col
    return col
