"""Per-watcher cgroups for the arbiter: one tree, a handle per watcher, kernel events as runtime events.

Owns no policy about *when* to stop a watcher: it answers "is it empty yet" (from cgroup.events, without
blocking the loop), applies limits (at creation and live), samples stats and reports OOM kills and limit
hits as `watcher.<name>.oom` / `watcher.<name>.limit` through the emit callback. Never imports zmq.

Events (payload always has `time`):
  watcher.<name>.oom    {"oom_kill": total, "count": new kills, "limit": "memory_max"}  memory.events oom_kill
  watcher.<name>.limit  {"limit": "pids_max"|"memory_high"|"memory_max", "count": hits since the last
                        event, "total": kernel counter, "source": "pids.events max" ...}; at most one per
                        second per watcher and limit (memory.high can be hit thousands of times a second)
memory.events and v2 pids.events are watched through one EventsMonitor on the loop (the kernel notifies
their changes); v1 pids.events has no notification and is re-read once a second. A spawn the v1 pids_max
check refuses (kernel.cgroup.Placement: v1 pids.max never refuses the worker's own migration) fails with
EAGAIN like a v2 clone3 past pids.max, and counts towards a `limit` event with "source": "pids.current"
("total": the pids.current read).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from circus_linux.errors import CommandError
from circus_linux.kernel import cgroup as kcg
from circus_linux.kernel.cgroup_parse import parse_flat_keyed

log = logging.getLogger("circus_linux.cgroups")

Emit = Callable[[str, dict[str, Any]], None]

# A `limit` event per watcher and limit at most this often: memory.high can be hit thousands of times a
# second under pressure, and each hit bumps memory.events; the count since the last event travels along.
LIMIT_EVENT_INTERVAL = 1.0
# How often counters without change notification (v1 pids.events) are re-read.
POLL_INTERVAL = 1.0
# v1-only hosts have no cgroup.events: emptiness is polled at this period against the caller's deadline.
V1_EMPTY_POLL = 0.05

# memory.events / pids.events counter -> (event, limit name in the payload)
_COUNTERS: dict[str, dict[str, tuple[str, str]]] = {
    "memory": {
        "oom_kill": ("oom", "memory_max"),
        "high": ("limit", "memory_high"),
        "max": ("limit", "memory_max"),
    },
    "pids": {"max": ("limit", "pids_max")},
}


def limits_not_applied(cfg: Any, why: str) -> list[str]:
    """One line per watcher of ``cfg`` with cgroup limits configured: they will not be applied, ``why``."""
    out = []
    for w in cfg.watchers:
        keys = [f.name for f in dataclasses.fields(w.cgroup) if getattr(w.cgroup, f.name) is not None]
        if keys:
            out.append(f"[watcher:{w.name}] {', '.join(keys)}: not applied, {why}")
    return out


def check_warnings(cfg: Any) -> list[str]:
    """What `circusd --check` can tell of the cgroup limits without touching the system: none is applied
    when `[circus] cgroup_root` turns cgroups off. (Which controllers a host offers is only known at start,
    where each limit no backend serves is logged.)"""
    root = getattr(cfg.circus, "cgroup_root", None)
    if root not in kcg.OFF_SETTINGS:
        return []
    return limits_not_applied(cfg, f"[circus] cgroup_root = {root} turns cgroups off")


class WatcherHandle(kcg.Placement):
    """A watcher's cgroup plus the fds the spawner needs (kernel/cgroup.Placement), and its event state."""

    def __init__(self, cg: kcg.WatcherCgroup, manager: CgroupManager | None = None) -> None:
        super().__init__(cg)
        self.cg = cg
        self._manager = manager
        self.backends: dict[str, str] = {}  # limit -> backend that took it
        self.counters: dict[str, dict[str, int]] = {}  # "memory"/"pids" -> last counter values seen
        self.pending: dict[str, int] = {}  # limit -> hits not yet reported (rate limit)
        self.last_limit_event: dict[str, float] = {}
        self.pids_file: str | None = None  # pids.events, when it exists (v2 or v1)
        self.pids_notified = False  # True when pids.events is the v2 file (kernel notifies changes)
        self.pids_limited = False  # a pids_max is set: only then can pids.events count anything of ours
        self.refused: dict[str, int] = {}  # limit -> pids.current of the last refused spawn, if last hit
        self.staged: Any = None  # the section stage_reload made this handle for, until create() takes it

    def v1_procs_fds(self) -> list[int]:
        try:
            return super().v1_procs_fds()
        except kcg.PidsMaxReached as exc:
            # The v1 stand-in for v2's refused clone3: the spawn fails (EAGAIN) and, as v2's pids.events
            # max would, the refusal counts towards a `limit` event.
            if self._manager is not None:
                self._manager.spawn_refused(self, exc.current)
            raise

    def kill(self) -> None:
        # Not cgroup.kill: after one write to it, Linux 6.18 (the project's VM, 6.18.44) SIGKILLs every
        # child later cloned into the cgroup with CLONE_INTO_CGROUP (how we spawn), so a watcher stopped
        # that way and started again lost each new worker at once and gave up. Freezing the cgroup and
        # signalling its pids is as safe against forks, and leaves the cgroup usable.
        self.cg.kill(use_cgroup_kill=False)

    def populated(self) -> bool:
        return self.cg.populated()

    async def wait_empty(self, timeout: float) -> bool:
        """Until no process is left (cgroup.events populated 0), at most ``timeout`` s; never blocks."""
        if self._manager is not None:
            return await self._manager.wait_empty(self, timeout)
        # No manager loop hook: the kernel wait runs in a thread, bounded by the same timeout.
        return await asyncio.to_thread(self.cg.wait_empty, timeout)


class CgroupManager:
    """Builds circusd's cgroup tree and one cgroup per watcher; optional: without it, no placement."""

    def __init__(self, tree: kcg.CgroupTree) -> None:
        self.tree = tree
        self._handles: dict[str, WatcherHandle] = {}
        self._emit: Emit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor: kcg.EventsMonitor | None = None
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._poll_wake = asyncio.Event()  # set when a pids limit or a pending limit event needs polling

    @classmethod
    def from_config(cls, cfg: Any, tree: kcg.CgroupTree | None = None) -> CgroupManager | None:
        """The manager of the tree `[circus] cgroup_root` asks for; `tree` when already built (prestart)."""
        try:
            if tree is None:
                tree = kcg.tree_for(getattr(cfg.circus, "cgroup_root", None))
                if tree is None:
                    for line in check_warnings(cfg):
                        log.warning("%s", line)
                    return None
        except kcg.CgroupError as exc:
            log.warning(
                "cgroups unavailable, workers run in circusd's own cgroup (no limits, no tree kill): %s "
                "(set [circus] cgroup_root to a writable cgroup, or run under systemd with Delegate=yes)",
                exc,
            )
            for line in limits_not_applied(cfg, "cgroups are unavailable"):
                log.warning("%s", line)
            return None
        log.info("cgroups: %r", tree)
        if tree.supervisor is not None:
            log.info("cgroups: delegated by systemd, circusd moved to %s", tree.supervisor)
        for ctrl, why in tree.v1_errors.items():
            log.info("cgroups: v1 %s not used: %s", ctrl, why)
        return cls(tree)

    # ------------------------------------------------------------------ lifecycle
    def setup(self, emit: Emit | None = None) -> None:
        """Hook the event files to the running loop (call from inside it); emit gets oom/limit events."""
        self._emit = emit
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: waits fall back to threads, no oom/limit events
            return
        self._monitor = kcg.EventsMonitor()
        self._loop.add_reader(self._monitor.fileno(), self._on_events)
        for handle in self._handles.values():
            self._watch(handle)
        self._poll_task = self._loop.create_task(self._poll(), name="cgroups:poll")

    def create(self, cfg: Any) -> WatcherHandle:
        """The watcher's cgroup with its configured limits. A limit the kernel refuses raises CgroupError
        and leaves nothing behind: no directory, no fd, no handle (dstats would list it as a watcher)."""
        old = self._handles.pop(cfg.name, None)
        if old is not None:
            if old.staged is cfg:  # made by stage_reload for this very section: already complete
                old.staged = None
                self._handles[cfg.name] = old
                return old
            self._unwatch(cfg.name)
            old.close()
        cg = self.tree.watcher(cfg.name)
        try:
            handle = WatcherHandle(cg, self)
        except OSError:
            self._discard(cg)
            raise
        self._handles[cfg.name] = handle
        try:
            self.apply(cfg)
        except BaseException:
            del self._handles[cfg.name]
            handle.close()
            self._discard(cg)
            raise
        self._watch(handle)
        return handle

    def _discard(self, cg: kcg.WatcherCgroup) -> None:
        """Remove a watcher's cgroup that nothing runs in (never spawned into, or emptied by remove)."""
        try:
            cg.remove()
        except kcg.CgroupError as exc:  # still populated: the exit's destroy tries again
            log.warning("watcher %s: cgroup not removed: %s", cg.name, exc)
            return
        self.tree.release(cg)

    def stage_reload(
        self, changed: Mapping[str, tuple[Any, Any]], added: Iterable[Any]
    ) -> Callable[[], None]:
        """The cgroup half of a reloadconfig, done before anything else of it changes; returns its undo.

        ``changed``: watcher -> (its running config, the file's new section): the new limits are written,
        and a limit the new section no longer has goes back to the kernel's default. ``added``: new
        sections, whose cgroups are made with their limits (create() then takes them as they are).
        A limit the kernel refuses undoes what was done and raises CommandError naming the watcher, so a
        refused reload changes nothing; the undo (running limits written back, new cgroups removed) is
        for a reload refused later, by a socket that cannot be bound.
        """
        undo: list[Callable[[], Any]] = []

        def rollback() -> None:
            for step in reversed(undo):
                try:
                    step()
                except (OSError, kcg.CgroupError) as exc:
                    log.warning("reloadconfig: cgroup limits not restored: %s", exc)

        name = ""
        try:
            for name, (old, new) in changed.items():
                before, after = kcg.CgroupLimits.of(old.cgroup), kcg.CgroupLimits.of(new.cgroup)
                if before != after and name in self._handles:
                    # Queued first: a write refused half-way still gets the ones before it undone.
                    undo.append(functools.partial(self.apply_limits, name, before.over(after)))
                    self.apply_limits(name, after.over(before))
            for cfg in added:
                name = cfg.name
                self.create(cfg)  # a refusal leaves nothing of this one
                self._handles[name].staged = cfg
                undo.append(functools.partial(self.remove, name))
        except kcg.CgroupError as exc:
            rollback()
            raise CommandError(f"reload refused, nothing changed: watcher {name}: {exc}") from exc
        return rollback

    def apply(self, cfg: Any) -> dict[str, str]:
        """Write every configured limit of ``cfg`` to its watcher's cgroup; returns limit -> backend."""
        return self.apply_limits(cfg.name, kcg.CgroupLimits.of(cfg.cgroup))

    def apply_limits(self, name: str, limits: kcg.CgroupLimits) -> dict[str, str]:
        """Write the limits that are not None; raises CgroupError when the kernel refuses a value."""
        handle = self._handles[name]
        report = {k: str(v) for k, v in handle.cg.apply_limits(limits).items()}
        if limits.pids_max is not None:
            handle.pids_limited = str(limits.pids_max) != "max"
            self._poll_wake.set()
        handle.backends.update(report)
        for limit, backend in report.items():
            if backend == "unsupported":
                log.warning("watcher %s: %s is not supported by this host's cgroups", name, limit)
        return report

    async def update_limits(
        self, watcher: Any, changes: Mapping[str, Any], texts: Mapping[str, str]
    ) -> dict[str, str]:
        """Live `set` of limits: write them, then record them in the watcher's config (raw text included).

        ``changes`` maps limit names (memory_max, ...) to parsed values, ``texts`` to what the user wrote.
        Runs under the watcher's lock so it queues behind other commands on that watcher; emits
        `watcher.<name>.updated`. Raises CgroupError when the kernel refuses a value.
        """
        async with watcher.lock:
            cfg = watcher.config
            wanted = kcg.CgroupLimits(**changes)
            handle = self._handles[watcher.name]
            backends = handle.cg.limit_backends(wanted)
            unsupported = [k for k, b in backends.items() if b == kcg.Backend.UNSUPPORTED]
            if unsupported:
                # Accepted, the value would show in `get` while nothing enforces it: refuse, change nothing.
                raise CommandError(
                    f"cannot set {', '.join(unsupported)}: this host's cgroups cannot apply it (no v2 "
                    f"controller enabled for the watcher's cgroup and no v1 equivalent)"
                )
            before = kcg.CgroupLimits(**{k: getattr(cfg.cgroup, k) for k in changes})
            try:
                report = self.apply_limits(watcher.name, wanted)
            except kcg.CgroupError:
                # One write refused after others went through: put those back, so a refused set
                # changes nothing (a limit never configured goes back to the kernel default).
                try:
                    self.apply_limits(watcher.name, before.over(wanted))
                except kcg.CgroupError as exc:
                    log.warning("watcher %s: limits not restored after a refused set: %s", watcher.name, exc)
                raise
            new = dataclasses.replace(cfg, cgroup=dataclasses.replace(cfg.cgroup, **changes))
            if hasattr(new, "raw"):
                new = dataclasses.replace(new, raw={**new.raw, **texts})
            watcher.config = new
        if self._emit is not None:
            self._emit(f"watcher.{watcher.name}.updated", {"options": sorted(changes), "time": time.time()})
        return report

    def for_watcher(self, name: str) -> WatcherHandle | None:
        return self._handles.get(name)

    def stats(self, name: str) -> kcg.CgroupStats | None:
        handle = self._handles.get(name)
        return None if handle is None else handle.cg.stats()

    def _forget(self, name: str) -> WatcherHandle | None:
        """Drop the watcher's handle: its events unwatched, its fds closed; its cgroup is the caller's."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            self._unwatch(name)
            handle.close()
        return handle

    def remove(self, name: str) -> None:
        handle = self._forget(name)
        if handle is None:
            return
        try:
            if handle.cg.populated():  # the watcher's stop already emptied it in the usual case
                handle.cg.kill()
                handle.cg.wait_empty(5.0)
        except kcg.CgroupError as exc:
            log.warning("watcher %s: cgroup not removed: %s", name, exc)  # the exit's destroy tries again
            return
        self._discard(handle.cg)

    def orphan(self, name: str) -> None:
        """`rm --nostop`: forget the watcher's handle but leave its processes running in their cgroup.

        The cgroup is set aside in the tree (cgroup2 cannot rename it): a new watcher of the same name
        gets a fresh one, so it never counts, signals or kills these workers; circusd's exit still does.
        """
        handle = self._forget(name)
        if handle is None:
            return
        try:
            populated = handle.cg.populated()
        except (OSError, kcg.CgroupError):
            populated = True
        if populated:
            self.tree.orphan(handle.cg)
        else:
            self._discard(handle.cg)

    def describe(self) -> dict[str, Any]:
        """Which backend serves what: the tree, each limit, and each stat group per watcher (for dstats)."""
        watchers: dict[str, Any] = {}
        for name, h in self._handles.items():
            try:
                stat_backends = {k: str(v) for k, v in h.cg.stats().backends.items()}
            except (OSError, kcg.CgroupError) as exc:
                stat_backends = {"error": str(exc)}
            watchers[name] = {
                "v2": h.cg.path,
                "v1": dict(h.cg.v1_paths),
                "limits": dict(h.backends),
                "stats": stat_backends,
            }
        return {
            "mode": str(self.tree.mode),
            "v2_root": self.tree.root,
            "v2_controllers": sorted(self.tree.host.v2_controllers),
            "supervisor": self.tree.supervisor,
            "v1_roots": dict(self.tree.v1_roots),
            "v1_unavailable": dict(self.tree.v1_errors),
            "limits": {name: h.backends for name, h in self._handles.items()},
            "watchers": watchers,
        }

    def cleanup(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            self._poll_task = None
        if self._monitor is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._monitor.fileno())
            self._monitor.close()
            self._monitor = None
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(False)
        self._waiters.clear()
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        try:
            self.tree.destroy()
        except kcg.CgroupError as exc:
            log.warning("cgroup tree not fully removed: %s", exc)

    # ------------------------------------------------------------------ emptiness
    async def wait_empty(self, handle: WatcherHandle, timeout: float) -> bool:
        name = handle.cg.name
        if handle.cg.events_path is None or self._monitor is None or self._handles.get(name) is not handle:
            if handle.cg.events_path is not None:
                return await asyncio.to_thread(handle.cg.wait_empty, timeout)
            deadline = time.monotonic() + timeout
            while handle.cg.pids():  # v1 only: no notification exists
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(V1_EMPTY_POLL)
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(fut)
        try:
            # cgroup.events is already watched: any change after this read wakes _on_events.
            if not handle.cg.populated():
                return True
            try:
                async with asyncio.timeout(timeout):  # not wait_for: 3.11's can lose a cancel
                    return await asyncio.shield(fut)
            except TimeoutError:
                return not handle.cg.populated()
        finally:
            waiters = self._waiters.get(name, [])
            if fut in waiters:
                waiters.remove(fut)

    # ------------------------------------------------------------------ kernel events
    def _watch(self, handle: WatcherHandle) -> None:
        name = handle.cg.name
        path = handle.cg.path
        pids_v2 = None if path is None else os.path.join(path, "pids.events")
        pids_v1 = handle.cg.v1_paths.get("pids")
        if pids_v2 is not None and os.path.exists(pids_v2):
            handle.pids_file, handle.pids_notified = pids_v2, True
        elif pids_v1 is not None and os.path.exists(os.path.join(pids_v1, "pids.events")):
            handle.pids_file = os.path.join(pids_v1, "pids.events")
        if handle.pids_file is not None:
            with contextlib.suppress(OSError):
                handle.counters["pids"] = parse_flat_keyed(kcg.read_file(handle.pids_file))
        mem = handle.cg.memory_events_path
        if self._monitor is None:
            if mem is not None:
                with contextlib.suppress(OSError):
                    handle.counters["memory"] = parse_flat_keyed(kcg.read_file(mem))
            return
        try:
            if handle.cg.events_path is not None:
                self._monitor.add((name, "cgroup"), handle.cg.events_path)
            if mem is not None:
                handle.counters["memory"] = parse_flat_keyed(self._monitor.add((name, "memory"), mem))
            if handle.pids_notified and handle.pids_file is not None:
                handle.counters["pids"] = parse_flat_keyed(
                    self._monitor.add((name, "pids"), handle.pids_file)
                )
        except OSError as exc:
            log.warning("watcher %s: cgroup events not watched: %s", name, exc)

    def _unwatch(self, name: str) -> None:
        if self._monitor is not None:
            for kind in ("cgroup", "memory", "pids"):
                self._monitor.discard((name, kind))
        for fut in self._waiters.pop(name, []):
            if not fut.done():
                fut.set_result(False)

    def _on_events(self) -> None:
        if self._monitor is None:
            return
        try:
            changed = self._monitor.poll()
        except OSError as exc:
            log.warning("cgroup events: %s", exc)
            return
        for key, text in changed:
            name, kind = cast(tuple[str, str], key)  # the (name, kind) keys _watch adds
            if kind == "cgroup":
                if not parse_flat_keyed(text).get("populated", 0):
                    for fut in self._waiters.get(name, []):
                        if not fut.done():
                            fut.set_result(True)
                continue
            handle = self._handles.get(name)
            if handle is not None:
                self._counters_changed(handle, kind, parse_flat_keyed(text), time.monotonic())

    def _counters_changed(
        self, handle: WatcherHandle, kind: str, now_vals: dict[str, int], now: float
    ) -> None:
        old = handle.counters.get(kind, {})
        handle.counters[kind] = now_vals
        for counter, (event, limit) in _COUNTERS[kind].items():
            delta = now_vals.get(counter, 0) - old.get(counter, 0)
            if delta <= 0:
                continue
            if event == "oom":
                # Every OOM kill is reported: it ends a worker and the watcher respawns it.
                self._send(
                    handle, "oom", {"oom_kill": now_vals.get(counter, 0), "count": delta, "limit": limit}
                )
                continue
            handle.pending[limit] = handle.pending.get(limit, 0) + delta
            handle.refused.pop(limit, None)
            self._poll_wake.set()
            self._flush_limit(handle, limit, now, f"{kind}.events {counter}", now_vals.get(counter, 0))

    def spawn_refused(self, handle: WatcherHandle, current: int) -> None:
        """A spawn refused by the v1 pids_max check (kernel.cgroup.Placement): a `limit` event."""
        handle.pending["pids_max"] = handle.pending.get("pids_max", 0) + 1
        handle.refused["pids_max"] = current
        self._poll_wake.set()
        self._flush_limit(handle, "pids_max", time.monotonic(), "pids.current", current)

    def _flush_limit(self, handle: WatcherHandle, limit: str, now: float, source: str, total: int) -> None:
        count = handle.pending.get(limit, 0)
        if (
            count <= 0
            or now - handle.last_limit_event.get(limit, -LIMIT_EVENT_INTERVAL) < LIMIT_EVENT_INTERVAL
        ):
            return
        handle.pending[limit] = 0
        handle.last_limit_event[limit] = now
        self._send(handle, "limit", {"limit": limit, "count": count, "total": total, "source": source})

    def _send(self, handle: WatcherHandle, event: str, payload: dict[str, Any]) -> None:
        log.warning("watcher %s: %s %s", handle.cg.name, event, payload)
        if self._emit is not None:
            payload.setdefault("time", time.time())
            self._emit(f"watcher.{handle.cg.name}.{event}", payload)

    def _needs_poll(self) -> bool:
        return any(
            (h.pids_limited and h.pids_file is not None and not h.pids_notified) or any(h.pending.values())
            for h in self._handles.values()
        )

    async def _poll(self) -> None:
        """Once a second: counters the kernel does not notify (v1 pids.events) and rate-limited leftovers.

        Only while there is something to look at: an idle circusd with no v1 pids limit never wakes up.
        """
        while True:
            if not self._needs_poll():
                self._poll_wake.clear()
                await self._poll_wake.wait()
            await asyncio.sleep(POLL_INTERVAL)
            now = time.monotonic()
            for handle in list(self._handles.values()):
                if handle.pids_file is not None and not handle.pids_notified and handle.pids_limited:
                    try:
                        vals = parse_flat_keyed(kcg.read_file(handle.pids_file))
                    except OSError:
                        continue
                    self._counters_changed(handle, "pids", vals, now)
                for limit in [k for k, n in handle.pending.items() if n > 0]:
                    kind = "pids" if limit == "pids_max" else "memory"
                    counter = "max" if limit != "memory_high" else "high"
                    total = handle.counters.get(kind, {}).get(counter, 0)
                    source = f"{kind}.events {counter}"
                    if limit in handle.refused:  # the last hit was a refused spawn (spawn_refused)
                        source, total = "pids.current", handle.refused[limit]
                    self._flush_limit(handle, limit, now, source, total)
