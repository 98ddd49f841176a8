"""The arbiter: owns watchers, sockets, the reaper and the signalfd; talks to systemd; never imports zmq."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from circus_linux import config as configmod
from circus_linux.core.order import start_key
from circus_linux.errors import CircusError, CommandError, ConfigError, ReloadAbandoned, UnknownWatcher
from circus_linux.kernel import native
from circus_linux.kernel.notify import Notifier, NotifyServer, watchdog_usec
from circus_linux.kernel.sockets import listen_fds
from circus_linux.runtime import stream_reader
from circus_linux.runtime import tasks as tasks_mod
from circus_linux.runtime.plugins import (
    apply_plugin_changes,
    plugin_watchers,
    start_plugin_watchers,
    watcher_name,
)
from circus_linux.runtime.process import Process
from circus_linux.runtime.sdnotify import SafeNotifier
from circus_linux.runtime.signals import SignalReader
from circus_linux.runtime.sockets import SocketRegistry
from circus_linux.runtime.streams import StreamHub
from circus_linux.runtime.watcher import Watcher, WatcherServices

if TYPE_CHECKING:
    from circus_linux.runtime import upgrade as handover

log = logging.getLogger("circus_linux.arbiter")

Emit = Callable[[str, dict[str, Any]], None]


def _ordered(watchers: list[Watcher], reverse: bool = False) -> list[Watcher]:
    """Circus order (core/order.py): the bigger `priority` first, ties by name, when starting; stopping walks
    the list backwards."""
    out = sorted(watchers, key=lambda w: start_key(w.config))
    return out[::-1] if reverse else out


class Arbiter:
    def __init__(
        self,
        config: Any,
        emit: Emit | None = None,
        notifier: Notifier | None = None,
        cgroups: Any = None,
        prestarted: Any = None,
    ) -> None:
        self.config = config
        self._prestarted = prestarted  # runtime.prestart.Prestarted: workers spawned before the loop
        self._emit_cb = emit
        # NOTIFY_SOCKET stays in our environment: spawnspec strips it from every worker that is not a notify
        # one, and an in-place upgrade (execve) must find it again to keep talking to systemd.
        self.notifier = notifier or SafeNotifier.from_environ()
        self.cgroups = cgroups  # runtime.cgroups.CgroupManager or None
        self.watchers: dict[str, Watcher] = {}
        self.sockets = SocketRegistry(self.notifier)
        self._children: dict[int, Process] = {}
        self._owners: dict[int, Watcher] = {}
        self._stop_requested = asyncio.Event()
        self._exit_code = 0
        self._signals: SignalReader | None = None
        self._notify_server: NotifyServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()  # of _tasks: the status and watchdog loops
        self._loaded: dict[str, Any] = {}  # watcher name -> the config it was made or last reloaded from
        self._reload_lock = asyncio.Lock()
        self.started = time.time()
        self.ready = False
        self._shut_down = False
        self.upgrade_requested = False
        self._status_dirty = asyncio.Event()
        self.reaped_orphans = 0
        self.listeners: list[Emit] = []
        self.streams = StreamHub(self.emit)  # captured stdout/stderr: sinks, tail ring, line events

    # ------------------------------------------------------------------ events
    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        payload.setdefault("time", time.time())
        self._status_dirty.set()
        if self._emit_cb is not None:
            try:
                self._emit_cb(topic, payload)
            except Exception:  # a broken subscriber must not break the runtime
                log.exception("event sink failed for %s", topic)
        for listener in list(self.listeners):
            try:
                listener(topic, payload)
            except Exception:
                log.exception("event listener failed for %s", topic)

    # ------------------------------------------------------------------ lifecycle
    async def setup(self) -> None:
        """Everything that must exist before the first watcher starts."""
        loop = asyncio.get_running_loop()
        native.set_child_subreaper()
        native.tune_malloc(stream_reader.MALLOC_MMAP_THRESHOLD, stream_reader.MALLOC_TRIM_THRESHOLD)
        self._signals = SignalReader(self)
        inherited = listen_fds(unset=True)
        handed = _take_upgrade_state()
        if handed is not None:
            # We are the new image of an in-place upgrade: the previous one's sockets come first.
            inherited.update({name: [fd] for name, fd in handed.sockets.items()})
        names = frozenset(handed.sockets) if handed is not None else frozenset()
        for warning in self.sockets.setup(self.config.sockets, inherited, names):
            log.warning("%s", warning)
        if handed is not None and handed.notify_fd is not None:
            # The workers' NOTIFY_SOCKET names the previous image's server: the same socket goes on.
            self._ensure_notify_server(loop, fd=handed.notify_fd)
        if any(w.notify for w in self.config.watchers):
            self._ensure_notify_server(loop)
        if self.cgroups is not None:
            self.cgroups.setup(self.emit)  # oom/limit events leave through emit
        for cfg in self.config.watchers:
            self._make_watcher(cfg)
        # [plugin:NAME] sections run as singleton watchers `plugin:NAME` (runtime.plugins), started first.
        for cfg in plugin_watchers(self.config):
            self._make_watcher(cfg)
        if handed is not None:
            self._adopt(handed)
        if self._prestarted is not None:
            self._adopt_prestarted(self._prestarted)
            self._prestarted = None

    def _adopt_prestarted(self, pre: Any) -> None:
        """Take the workers runtime/prestart spawned before the loop; their watchers start as usual after."""
        if not pre.workers:
            log.debug("prestart: no worker spawned before the event loop; it ended at %s", pre.ended)
            return
        counts = ", ".join(f"{name} {len(ws)}" for name, ws in pre.workers.items())
        log.info("prestart: %d workers spawned before the event loop (%s); it ended at %s",
                 pre.count(), counts, pre.ended)
        for name, workers in pre.workers.items():
            self.watchers[name].adopt_prestarted(workers)
        pre.workers.clear()  # ours now: circusd's last-resort Prestarted.discard() must not touch them
        self._reap_all()  # whatever died before the signalfd existed

    def _adopt(self, handed: handover.UpgradeState) -> None:
        """Take over the previous image's workers; those of watchers gone from the config are stopped."""
        adopted = 0
        for name, state in handed.watchers.items():
            watcher = self.watchers.get(name)
            if watcher is None:
                log.warning("upgrade: watcher %s is not in the config any more: stopping its workers", name)
                for proc in state.processes:
                    with contextlib.suppress(ProcessLookupError):
                        native.pidfd_send_signal(proc.pidfd, signal.SIGTERM)
                    os.close(proc.pidfd)
                    for fd in proc.pipes.values():  # their output has no sink any more
                        os.close(fd)
                continue
            watcher.adopt(state)
            adopted += len(state.processes)
            for proc in state.processes:
                for kind, fd in proc.pipes.items():
                    self.streams.adopt(watcher.config, kind, fd, proc.pid, proc.wid)
        log.info("upgrade: adopted %d workers", adopted)
        self._reap_all()  # whatever died while we were exec'ing

    def _ensure_notify_server(
        self, loop: asyncio.AbstractEventLoop | None = None, fd: int | None = None
    ) -> str:
        """The workers' notify server, made on first use; `fd`: the one the previous image handed over."""
        if self._notify_server is None:
            # Abstract namespace: no file to place, clean up or chmod for workers of other uids; senders
            # are told apart by their kernel-given pid, never by who could reach the name.
            self._notify_server = NotifyServer(fd=fd) if fd is not None else NotifyServer(abstract=True)
            (loop or asyncio.get_running_loop()).add_reader(self._notify_server.fileno(), self._on_notify)
        return self._notify_server.address

    def _services(self) -> WatcherServices:
        return WatcherServices(
            emit=self.emit,
            register=self._register,
            unregister=self._unregister,
            socket_fd=self.sockets.fd,
            all_sockets=self.sockets.names,
            notify_socket=self._notify_server.address if self._notify_server else None,
            cgroup=(self.cgroups.for_watcher if self.cgroups is not None else (lambda name: None)),
            arbiter=self,
            streams=self.streams,
        )

    def _make_watcher(self, cfg: Any) -> Watcher:
        # Never replace a watcher: the old one's workers would run on unsupervised. [plugin:X] runs as the
        # watcher plugin:X, so a [watcher:plugin:X] would collide with it (the config refuses that too).
        self.refuse_taken(cfg.name)
        if cfg.notify:
            self._ensure_notify_server()
        if self.cgroups is not None:
            self.cgroups.create(cfg)
        watcher = Watcher(cfg, self._services())
        self.watchers[cfg.name] = watcher
        self._loaded[cfg.name] = cfg
        return watcher

    async def start(self, announce: bool = True) -> None:
        """Start every autostart watcher in priority order, `[circus] warmup_delay` apart, then (announce)
        tell systemd we are ready.

        With announce=False the caller calls announce() itself, once what else it serves is up too (circusd
        binds its control channel meanwhile: READY=1 means circusctl works)."""
        plugins = await start_plugin_watchers(self.watchers.values())
        delay = self.config.circus.warmup_delay
        started = False
        for watcher in _ordered(list(self.watchers.values())):
            if watcher.config.autostart and watcher not in plugins:
                if started and delay:
                    # Circus's [circus] warmup_delay: a pause between two watchers' starts (not after the
                    # last one: READY=1 would only come later). The start is cancelled at shutdown.
                    await asyncio.sleep(delay)
                await watcher.start(wait=True)
                started = True
        if announce:
            self.announce()

    def announce(self) -> None:
        """The start is complete: `arbiter.ready`, READY=1 to systemd, the status and watchdog loops."""
        self.ready = True
        self.emit("arbiter.ready", {"watchers": list(self.watchers)})
        self.notifier.notify("READY=1", STATUS=self.status_line(), MAINPID=os.getpid())
        self._start_loops()

    def _start_loops(self) -> None:
        """The status loop, and the watchdog's when systemd asked for one (WATCHDOG_USEC)."""
        self._own(self._status_loop(), loop=True)
        interval = watchdog_usec()
        if interval:
            self._own(self._watchdog_loop(interval / 2_000_000), loop=True)

    async def run(self) -> int:
        """The whole life of circusd: setup, start, serve until asked to stop, stop in reverse priority."""
        try:
            await self.setup()
            await self.start()
            return await self.run_until_stopped()
        finally:
            await self.shutdown()

    async def run_until_stopped(self) -> int:
        await self._stop_requested.wait()
        return self._exit_code

    def check_upgrade(self) -> None:
        """ConfigError if the configuration file does not load: the new image loads it before it takes the
        workers over, and one that cannot would end with every worker left running unsupervised."""
        try:
            configmod.load(self.config.path)
        except ConfigError as exc:
            log.error("in-place upgrade refused, the configuration file does not load:\n%s", exc)
            raise

    async def upgrade(self) -> None:
        """Re-execute circusd in place (same PID), keeping workers and sockets; see runtime/upgrade.py."""
        log.info("in-place upgrade requested")
        self.check_upgrade()
        self.upgrade_requested = True
        self.emit("arbiter.upgrading", {})
        self.notifier.notify("RELOADING=1", MONOTONIC_USEC=time.monotonic_ns() // 1000)
        self.request_stop(0)

    async def freeze(self) -> handover.UpgradeState:
        """Stop every manager and background task without touching a worker; reversible with thaw()."""
        from circus_linux.runtime import upgrade as handover

        for watcher in self.watchers.values():
            await watcher.freeze()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        pipes = await self.streams.freeze()
        return handover.snapshot(self, pipes)

    def thaw(self) -> None:
        """The exec failed: carry on as before."""
        self.upgrade_requested = False
        self._stop_requested.clear()
        for watcher in self.watchers.values():
            watcher.thaw()
        self.streams.thaw()
        self._start_loops()  # the freeze cancelled them: without the watchdog's pings systemd would kill us
        self.notifier.notify("READY=1", STATUS=self.status_line())

    def handle_usr2(self) -> None:
        log.info("SIGUSR2: in-place upgrade")
        self._own(self._upgrade_unless_refused())

    async def _upgrade_unless_refused(self) -> None:
        with contextlib.suppress(ConfigError):  # logged by check_upgrade; circusd carries on as it was
            await self.upgrade()

    def request_stop(self, code: int = 0) -> None:
        self._exit_code = code
        self._stop_requested.set()

    async def shutdown(self) -> None:
        """Stop every watcher in reverse priority and release everything; safe to call twice."""
        if self._shut_down:
            return
        self._shut_down = True
        self.notifier.notify("STOPPING=1", STATUS="stopping")
        self.emit("arbiter.stopping", {})
        # Work of the arbiter's own (a SIGHUP reload, an upgrade) ends first: carried on, a reload would
        # add and start watchers while they are being closed. The status and watchdog loops go on.
        work = [t for t in self._tasks if t not in self._loops]
        for task in work:
            task.cancel()
        if work:
            await asyncio.gather(*work, return_exceptions=True)
        for watcher in _ordered(list(self.watchers.values()), reverse=True):
            try:
                await watcher.close()
            except Exception:  # a bug in one watcher's stop must not leave the others' workers running
                log.exception("watcher %s: close failed", watcher.name)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reap_all()
        await self.streams.close()  # every pipe read to its end (bounded), every sink flushed
        loop = asyncio.get_running_loop()
        if self._notify_server is not None:
            loop.remove_reader(self._notify_server.fileno())
            self._notify_server.close()
            self._notify_server = None
        if self._signals is not None:
            self._signals.close()
            self._signals = None
        if self.cgroups is not None:
            self.cgroups.cleanup()
        self.sockets.close()

    def _own(self, coro: Any, loop: bool = False) -> asyncio.Task[Any]:
        """A task of the arbiter's; `loop`: one of the status/watchdog loops, which run until the end."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if loop:
            self._loops.add(task)
            task.add_done_callback(self._loops.discard)
        return task

    # ------------------------------------------------------------------ systemd
    def status_line(self) -> str:
        running = sum(w.live_count() for w in self.watchers.values())
        wanted = sum(w.numprocesses for w in self.watchers.values() if w.state.value != "stopped")
        active = sum(1 for w in self.watchers.values() if w.state.value == "active")
        return f"{active}/{len(self.watchers)} watchers active, {running}/{wanted} workers"

    async def _status_loop(self) -> None:
        # Driven by events, not a timer: an idle circusd with 500 workers must not wake up to recount
        # them every second. Bursts (a mass respawn) are coalesced to one STATUS= per half second.
        last = ""
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            line = self.status_line()
            if line != last:
                self.notifier.notify_or_drop(STATUS=line)
                last = line
            await asyncio.sleep(0.5)

    async def _watchdog_loop(self, period: float) -> None:
        # Sent from the event loop itself: if the loop wedges, the pings stop and systemd restarts us.
        while True:
            self.notifier.notify_or_drop("WATCHDOG=1")
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ children
    def _register(self, proc: Process) -> None:
        self._children[proc.pid] = proc

    def _unregister(self, proc: Process) -> None:
        self._children.pop(proc.pid, None)

    def handle_chld(self) -> None:
        self._reap_all()

    def _reap_all(self) -> None:
        """Reap every exited child: ours through their pidfd, orphans re-parented to us by pid.

        SIGCHLD coalesces, so one signal may stand for many exits: peek (WNOWAIT) until nothing is left.
        """
        while True:
            pids = native.exited_pids()
            if not pids:
                return
            for pid in pids:
                proc = self._children.get(pid)
                if proc is None:
                    native.reap_pid(pid)
                    self.reaped_orphans += 1
                    continue
                status = proc.reap()
                if status is None:  # cannot happen after WNOWAIT said it exited; never spin on it
                    native.reap_pid(pid)
                    continue
                owner = self.watchers.get(proc.watcher)
                if owner is not None and owner.procs.get(pid) is proc:
                    owner.on_exit(proc, status)
                else:
                    self._children.pop(pid, None)

    def _on_notify(self) -> None:
        assert self._notify_server is not None
        for msg in self._notify_server.recv():
            proc = self._children.get(msg.pid)
            if proc is None:
                continue
            watcher = self.watchers.get(proc.watcher)
            if watcher is not None:
                watcher.on_ready(msg.pid, msg.fields)

    # ------------------------------------------------------------------ signals
    def handle_term(self) -> None:
        log.info("SIGTERM: stopping every watcher")
        self.request_stop(0)

    def handle_int(self) -> None:
        log.info("SIGINT: stopping every watcher")
        self.request_stop(0)

    def handle_quit(self) -> None:
        log.info("SIGQUIT: stopping every watcher")
        self.request_stop(0)

    def handle_hup(self) -> None:
        log.info("SIGHUP: graceful reload of every watcher")
        self._own(self._reload_with_notify())

    async def _reload_with_notify(self) -> None:
        self.notifier.notify("RELOADING=1", MONOTONIC_USEC=time.monotonic_ns() // 1000)
        try:
            await self.reload_config()
        except CircusError as exc:  # a broken file, a socket that cannot be bound: nothing was changed
            log.error("reload refused, the running set is untouched:\n%s", exc)
        try:
            await self.reload(graceful=True)
        except ReloadAbandoned as exc:  # a stop came meanwhile (circusd's shutdown, say): it decides now
            log.info("%s", exc)
            if self._shut_down:
                return
        self.notifier.notify("READY=1", STATUS=self.status_line())

    # ------------------------------------------------------------------ runtime API (control layer)
    def get_watcher(self, name: str) -> Watcher:
        try:
            return self.watchers[name]
        except KeyError:
            raise UnknownWatcher(name) from None

    def refuse_taken(self, name: str) -> None:
        """CommandError (errno 5) when a watcher called `name` exists, saying so for a plugin's."""
        if name not in self.watchers:
            return
        if name in self._plugin_watcher_names():
            raise CommandError(f"watcher {name} already exists: it runs [{name}]")
        raise CommandError(f"watcher {name} already exists")

    def _plugin_watcher_names(self) -> set[str]:
        """The watchers made from [plugin:*] sections (a [watcher:plugin:Y] section is not one of them)."""
        return {watcher_name(p.name) for p in self.config.plugins}

    async def add_watcher(self, cfg: Any, start: bool = False) -> Watcher:
        watcher = self._make_watcher(cfg)
        self.emit(f"watcher.{cfg.name}.add", {"name": cfg.name})
        if start:
            await watcher.start(wait=True)
        return watcher

    async def rm_watcher(self, name: str, stop: bool = True) -> None:
        watcher = self.get_watcher(name)
        if stop:
            await watcher.close()
        # nostop: forget the workers without killing them (Circus semantics); they stay our children and
        # are still reaped, just no longer supervised. Either way, commands still queued on the watcher
        # fail as "not found" (Watcher._command).
        watcher.remove()
        self.watchers.pop(name, None)
        self._loaded.pop(name, None)
        if self.cgroups is not None and stop:
            self.cgroups.remove(name)
        elif self.cgroups is not None:
            self.cgroups.orphan(name)  # a new watcher of this name must not count or kill these workers
        if stop:
            await self.streams.remove(name)
        self.emit(f"watcher.{name}.remove", {"name": name})

    async def reload(self, graceful: bool = True, sequential: bool = False) -> None:
        """Reload every watcher at once; all of them are over before this returns or raises (a watcher's
        ReloadAbandoned only if nothing worse happened elsewhere)."""
        results = await asyncio.gather(
            *(
                w.reload(graceful=graceful, sequential=sequential)
                for w in _ordered(list(self.watchers.values()))
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        errors.sort(key=lambda e: isinstance(e, ReloadAbandoned))
        if errors:
            raise errors[0]

    async def reload_config(self) -> dict[str, Any]:
        """Re-read the file and apply the difference, in priority order. A broken file changes nothing."""
        # Before anything else, and whether the rest succeeds or not (a broken file, a reload already under
        # way holding the lock): the control layer re-reads the authorized keys on this event, so a
        # removed key is refused from now on, not once the watchers have been reloaded.
        self.emit("arbiter.reload_requested", {"path": self.config.path})
        async with self._reload_lock:
            new = configmod.load(self.config.path)
            # Against the watchers running now, as Circus does: one removed by `rm` comes back if the file
            # has it, one made by `add` goes unless the file has it (then its section decides). Each is
            # compared with the config it was made or last reloaded from, so `set` changes stay until the
            # file's section changes.
            plugins = self._plugin_watcher_names()
            running = tuple(self._loaded[n] for n in self.watchers if n not in plugins)
            plan = configmod.diff(dataclasses.replace(self.config, watchers=running), new)
            for name in plan.added:  # [watcher:plugin:X] while [plugin:X]'s watcher runs: refuse it all
                self.refuse_taken(name)
            self.emit("arbiter.reloading", {"path": self.config.path})
            by_name = {w.name: w for w in new.watchers}
            # First: a limit the kernel refuses, or a socket that cannot be bound, refuses the whole reload.
            undo = self._stage_cgroups(plan, by_name)
            try:
                self._bind_new_sockets(new)
            except BaseException:
                undo()
                raise
            for name in plan.removed:
                await self.rm_watcher(name)
            for name in plan.changed:
                watcher = self.watchers[name]
                watcher.config = self._loaded[name] = by_name[name]
                watcher.numprocesses = by_name[name].numprocesses
                try:
                    await watcher.reload(graceful=True)
                except ReloadAbandoned as exc:  # stopped meanwhile: its new config stays, the plan goes on
                    log.info("%s", exc)
            for name, (_old, new_n) in plan.scaled.items():
                self._loaded[name] = by_name[name]
                await self.watchers[name].set_numprocesses(new_n)
            added = [self._make_watcher(by_name[n]) for n in plan.added]
            for watcher in _ordered(added):
                self.emit(f"watcher.{watcher.name}.add", {"name": watcher.name})
                if watcher.config.autostart:
                    await watcher.start(wait=True)
            await apply_plugin_changes(self, plan, new)
            # A changed or removed [socket:*] section is not applied live (its listener stays as it is, the
            # workers keep their fd): the config keeps the running section, so each reloadconfig says so.
            unapplied = {*plan.sockets_changed, *plan.sockets_removed}
            old_socks = {s.name: s for s in self.config.sockets}
            running_socks = tuple(old_socks[s.name] if s.name in unapplied else s for s in new.sockets)
            running_socks += tuple(old_socks[n] for n in plan.sockets_removed)
            self.config = dataclasses.replace(new, sockets=running_socks)
            not_applied = [*plan.circus_changed, *(f"socket:{n}" for n in sorted(unapplied))]
            report = {
                "added": list(plan.added),
                "removed": list(plan.removed),
                "scaled": {k: list(v) for k, v in plan.scaled.items()},
                "changed": list(plan.changed),
                "not_applied": not_applied,
            }
            if not_applied:
                log.warning(
                    "%s changed: not applied live, restart circusd to apply",
                    ", ".join(f"[{n}]" if n.startswith("socket:") else f"[circus] {n}" for n in not_applied),
                )
            self.emit("arbiter.config_reloaded", dict(report))
            return report

    def _stage_cgroups(self, plan: Any, by_name: dict[str, Any]) -> Callable[[], None]:
        """The new limits of changed watchers and the cgroups of added ones (runtime/cgroups.py)."""
        if self.cgroups is None:
            return lambda: None
        changed = {n: (self.watchers[n].config, by_name[n]) for n in plan.changed}
        return self.cgroups.stage_reload(changed, [by_name[n] for n in plan.added])

    def _bind_new_sockets(self, new: Any) -> None:
        """Bind the sections of `new` not bound yet; if one fails, unbind the others and raise."""
        bound: list[str] = []
        try:
            for sec in new.sockets:
                if sec.name not in self.sockets.names():
                    self.sockets.add(sec, {})
                    bound.append(sec.name)
        except BaseException:
            for name in bound:
                self.sockets.remove(name)
            raise

    async def quit(self) -> None:
        self.request_stop(0)

    def dstats(self) -> dict[str, Any]:
        import psutil  # only `dstats` needs it: a circusd never asked saves its import (~10 ms, ~1 MiB)

        me = psutil.Process()
        with me.oneshot():
            cpu = me.cpu_times()
            info: dict[str, Any] = {
                "pid": me.pid,
                "rss": me.memory_info().rss,
                "cpu_user": cpu.user,
                "cpu_system": cpu.system,
                "num_fds": me.num_fds(),
                "age": time.time() - self.started,
                "children": len(self._children),
                "reaped_orphans": self.reaped_orphans,
                "clone3": native.HAS_CLONE3,
            }
        if self.cgroups is not None:
            info["cgroups"] = self.cgroups.describe()
        info["tasks"] = tasks_mod.census()
        return info

    def globaloptions(self) -> dict[str, Any]:
        circus = self.config.circus
        out: dict[str, Any] = dict(getattr(circus, "raw", {}) or {})
        for key in ("endpoint", "pubsub_endpoint", "stats_endpoint", "check_delay", "umask", "loglevel"):
            out[key] = getattr(circus, key, None)
        return out


def _take_upgrade_state() -> handover.UpgradeState | None:
    """The state handed over by the previous image of an in-place upgrade, if this start is one."""
    # The handover code (and its dataclasses, ~3 ms to build) is only imported by a start that has one.
    if "CIRCUS_LINUX_UPGRADE_FD" not in os.environ:  # upgrade.STATE_ENV; test_upgrade pins the name
        return None
    from circus_linux.runtime import upgrade as handover

    return handover.take_state()
