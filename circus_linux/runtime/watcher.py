"""A watcher: a pool of N identical workers kept alive by reconciliation; never reaps, never parses config."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal as signals_mod
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from circus_linux.core.policy import BackoffPolicy, RestartBook, pick_to_stop, wids_to_spawn
from circus_linux.core.states import ProcessState, WatcherState, check_watcher
from circus_linux.errors import ReloadAbandoned, UnknownWatcher
from circus_linux.kernel import native
from circus_linux.runtime.hooks import run_hook
from circus_linux.runtime.process import Process
from circus_linux.runtime.spawnspec import build_spawn_spec

log = logging.getLogger("circus_linux.watcher")

# How many spawns one reconcile pass does before yielding to the loop, so that a 500-worker start never
# keeps control commands or reaping waiting for more than a few milliseconds.
SPAWN_BATCH = 16
# After a reconcile pass failed (a bug), the manager tries again this much later.
PASS_RETRY = 1.0
# After SIGKILL a child can only linger in uninterruptible sleep; we stop waiting after this long.
KILL_WAIT = 10.0


class CgroupHandle(Protocol):
    """What the watcher needs from its cgroup (kernel.cgroup provides it)."""

    def dir_fd(self) -> int | None: ...
    def v1_procs_fds(self) -> list[int]: ...
    def kill(self) -> None: ...
    def populated(self) -> bool: ...


@dataclass
class WatcherServices:
    """What the arbiter lends each watcher: the event sink and the shared registries."""

    emit: Callable[[str, dict[str, Any]], None]
    register: Callable[[Process], None]
    unregister: Callable[[Process], None]
    socket_fd: Callable[[str], int]  # [socket:NAME] -> fd number in circusd (and in the worker)
    all_sockets: Callable[[], list[str]]
    notify_socket: str | None = None  # per-worker readiness socket path
    cgroup: Callable[[str], CgroupHandle | None] = field(default=lambda name: None)
    streams: Any = None  # runtime.streams.StreamHub, when output is captured
    arbiter: Any = None  # handed to hooks as their `arbiter` argument (Circus signature)


class Watcher:
    """Desired state (numprocesses, started or not) in; spawns and graceful stops out.

    Commands change the desired state under the watcher's FIFO lock and wake the manager task, which
    compares desired with actual and applies the difference. Exits are fed in by the arbiter's reaper.
    """

    def __init__(self, cfg: Any, services: WatcherServices) -> None:
        self.config = cfg
        self.name: str = cfg.name
        self.numprocesses: int = cfg.numprocesses
        self.state = WatcherState.STOPPED
        self.svc = services
        self.procs: dict[int, Process] = {}
        self.lock = asyncio.Lock()  # asyncio.Lock wakes waiters in FIFO order
        self._reloading: asyncio.Task[None] | None = None  # a graceful reload holding the lock
        self.restarts = 0
        self.exec_errors = 0
        self._book = RestartBook(self._policy())
        self._wake = asyncio.Event()
        self._passes = 0
        self._in_pass = False
        self._pass_done = asyncio.Condition()
        self._manager: asyncio.Task[None] | None = None
        self._last_word: asyncio.Future[None] | None = None  # a cancelled manager's note to pass waiters
        self._tasks: set[asyncio.Task[Any]] = set()
        self._explicit_spawn = False  # respawn=false still spawns on start/incr
        # Set by a give-up, until the next start: the manager spawns nothing more and one stop is queued.
        self._gave_up = False
        self._starts = 0  # start generations: a give-up's queued stop only applies to its own start
        # Set by the arbiter's rm: commands that were queued on this watcher then fail as "not found"
        # instead of starting a watcher nobody can see any more (with a manager of its own).
        self.removed = False
        # Exits of workers adopted from runtime/prestart while the watcher was still stopped, as (wid,
        # lifetime, exit code): its first start counts them as failed starts (None: no adoption pending).
        self._prestart_exits: list[tuple[int, float, int]] | None = None
        self._stops_asked = 0  # stops, restarts and rms asked for (_abandon_reload), ever

    # ---------------------------------------------------------------- queries
    def _policy(self) -> BackoffPolicy:
        return BackoffPolicy(max_retry=self.config.max_retry)

    def status(self) -> str:
        return self.state.value

    def processes(self) -> list[Process]:
        return sorted((p for p in self.procs.values() if p.alive), key=lambda p: (p.started_mono, p.pid))

    def live_count(self) -> int:
        """len(live()) without sorting: for summaries computed often."""
        return sum(1 for p in self.procs.values() if p.alive and not p.expected_exit)

    def live(self) -> list[Process]:
        """Processes that count toward numprocesses: alive and not on their way out."""
        return [p for p in self.processes() if not p.expected_exit]

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        raw: Mapping[str, str] = getattr(self.config, "raw", {}) or {}
        opts.update(raw)
        for f in dataclasses.fields(self.config):
            if f.name in ("raw", "extra", "location", "env", "hooks"):
                continue
            value = getattr(self.config, f.name)
            if isinstance(value, str | int | float | bool) or value is None:
                opts[f.name] = value
        opts["numprocesses"] = self.numprocesses
        opts["env"] = dict(self.config.env)
        # The sockets the watcher gets: `sockets = a,b` and every $(circus.sockets.NAME) of its cmd/args,
        # in order (plugins such as the Autoscaler find the watcher's socket here).
        opts["sockets"] = list(self.config.sockets)
        for kind in ("stdout", "stderr"):  # Circus's names for the stream configs
            stream = getattr(self.config, f"{kind}_stream", None)
            opts[f"{kind}_stream_conf"] = None if stream is None else {"class": stream.cls, **stream.options}
        return opts

    def _emit(self, event: str, **payload: Any) -> None:
        payload.setdefault("time", time.time())
        self.svc.emit(f"watcher.{self.name}.{event}", payload)

    def _has_hook(self, hook_name: str) -> bool:
        return hook_name in (getattr(self.config, "hooks", None) or {})

    async def _hook(self, hook_name: str, **kwargs: Any) -> bool:
        """Run one Circus hook off the loop (runtime.hooks); True = go on (also when none is configured)."""
        if not self._has_hook(hook_name):
            return True
        return await run_hook(self.config.hooks, hook_name, self, self.svc.arbiter, self._emit, **kwargs)

    # ---------------------------------------------------------------- lifecycle
    def _set_state(self, new: WatcherState) -> None:
        if new is self.state:
            return
        check_watcher(self.state, new)
        self.state = new
        self.wake()  # a pass tells whoever waits on passes (wait_started) that the state moved

    def _managed(self) -> bool:
        """A manager task is there to run reconcile passes."""
        return self._manager is not None and not self._manager.done()

    def _ensure_manager(self) -> None:
        if not self._managed() and not self.removed:
            self._manager = asyncio.create_task(self._manage(), name=f"watcher:{self.name}")

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("watcher %s: background task failed", self.name, exc_info=task.exception())

    def wake(self) -> None:
        self._wake.set()

    @contextlib.asynccontextmanager
    async def _command(self) -> AsyncIterator[None]:
        """The watcher's FIFO lock, for a command: UnknownWatcher if the watcher was removed meanwhile."""
        async with self.lock:
            if self.removed:
                raise UnknownWatcher(self.name)
            yield

    async def _next_pass(self, timeout: float = 5.0, force: bool = True) -> None:
        """Wait until the manager has finished a reconcile pass begun after this call.

        force=False waits for the next pass without asking for one: for a caller that waits in a loop for
        the pool to change (an exit, a ready worker, a backoff timer, a state change each bring a pass),
        where forcing would spin the manager through a busy loop of passes for as long as it waits.
        """
        if not self._managed():
            return  # no pass will come
        # A pass already under way may have looked at the state before our change: wait for the next one.
        target = self._passes + (2 if self._in_pass and force else 1)
        if force:
            self.wake()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that lands as the pass
        # ends, and a stop cancelling a graceful reload (_abandon_reload) would go unheard.
        async with self._pass_done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._pass_done.wait_for(lambda: self._passes >= target or not self._managed())

    async def passed(self) -> None:
        """Until the manager's first reconcile pass is done (the first spawns are issued)."""
        async with self._pass_done:
            await self._pass_done.wait_for(lambda: self._passes > 0)

    async def start(self, wait: bool = True) -> None:
        async with self._command():
            began = await self._start_locked()
        await self._started(began, wait)

    async def _started(self, began: bool, wait: bool) -> None:
        """After a start was begun under the lock: with wait, until the pool is up, and after_start.

        Outside the lock: a give-up during the start must be able to take the lock and stop us, and the
        next command on this watcher must not queue behind the whole backoff of a pool that cannot start.
        """
        if began and self._has_hook("after_start"):
            if wait:
                await self._after_start()
            else:
                self._spawn_task(self._after_start())
            return
        if wait:
            await self.wait_started()

    async def _start_locked(self) -> bool:
        """Begin a start (False: already running, or a before_start hook refused); see _started()."""
        if self.state in (WatcherState.STARTING, WatcherState.ACTIVE):
            return False
        if self.state is WatcherState.STOPPING:
            await self._stop_locked()  # a stop cancelled half-way: finished before the start
        if not await self._hook("before_start"):
            log.warning("watcher %s: start aborted by its before_start hook", self.name)
            return False
        self._book = RestartBook(self._policy())
        self._gave_up = False
        self._starts += 1
        self._set_state(WatcherState.STARTING)
        self._explicit_spawn = True
        self._emit("start")
        self._count_prestart_exits()
        self._ensure_manager()  # _set_state() above woke it
        return True

    async def _after_start(self) -> None:
        """Circus: after_start returning False stops the watcher it just started."""
        await self.wait_started()
        if self.state is WatcherState.ACTIVE and not await self._hook("after_start"):
            log.warning("watcher %s: after_start hook said no: stopping", self.name)
            await self.stop()

    async def wait_started(self, timeout: float | None = None) -> bool:
        """Until every wanted worker is up (and ready), or the watcher gave up / was stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state is WatcherState.STARTING and not self._gave_up:
            if not self._managed():
                # Nobody is left to move the state (`rm --nostop` cancelled the manager): waiting on would
                # keep the command that started us waiting forever.
                return False
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            await self._next_pass(timeout=min(remaining or 1.0, 1.0), force=False)
        return self.state is WatcherState.ACTIVE

    async def stop(self) -> None:
        self._abandon_reload()
        async with self._command():
            await self._stop_locked()

    async def _stop_locked(self) -> None:
        if self.state is WatcherState.STOPPED:
            return
        if self.state is not WatcherState.STOPPING:
            await self._hook("before_stop")  # result ignored (Circus)
            self._set_state(WatcherState.STOPPING)
        # Else an earlier stop was cancelled half-way (its command was, e.g. by circusd's shutdown): stops
        # run under the lock, so none is running now, and this one finishes the job.
        await asyncio.gather(*(self._stop_process(p) for p in self.processes()))
        cg = self.svc.cgroup(self.name)
        if cg is not None and cg.populated():
            # stop_children only reaches direct children; the cgroup reaches the whole tree (double-forked
            # grandchildren included), so nothing of this watcher survives its stop.
            cg.kill()
            # Emptiness comes from cgroup.events (populated 0), awaited without blocking the loop.
            wait_empty = getattr(cg, "wait_empty", None)
            if wait_empty is not None and not await wait_empty(KILL_WAIT):
                log.error("watcher %s: processes survive cgroup.kill after %ss", self.name, KILL_WAIT)
        if self.svc.streams is not None and not await self.svc.streams.drain(self.name):
            log.warning("watcher %s: output not fully drained at stop (deadline passed)", self.name)
        self._set_state(WatcherState.STOPPED)
        self._emit("stop")
        await self._hook("after_stop")

    async def restart(self) -> None:
        self._abandon_reload()
        async with self._command():
            await self._stop_locked()
            began = await self._start_locked()
        self.restarts += 1
        await self._started(began, wait=True)

    async def freeze(self) -> None:
        """Upgrade: no more reconciliation and no background work; the workers are left alone."""
        if self._manager is not None:
            self._manager.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._manager
            self._manager = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def thaw(self) -> None:
        """The upgrade's exec failed: carry on. The freeze cancelled the background work, so what it was
        doing is asked again: the stop of each worker on its way out, the stop a give-up queued."""
        if self.state is not WatcherState.STOPPED:
            self._ensure_manager()
            self.wake()
        for p in self.processes():
            if p.expected_exit and self.state is not WatcherState.STOPPING:
                self._spawn_task(self._stop_process(p))
        if self._gave_up and self.state is not WatcherState.STOPPED:
            self._spawn_task(self._stop_given_up(self._starts))

    def adopt(self, handed: Any) -> None:
        """Upgrade: take the previous image's workers (same pids, their pidfds) instead of spawning."""
        now_mono = time.monotonic()
        for item in handed.processes:
            proc = Process(native.Child(item.pid, item.pidfd), item.wid, list(item.cmdline), self.name)
            proc.started = item.started
            proc.started_mono = now_mono - item.age
            if self.config.max_age:
                variance = random.uniform(0, self.config.max_age_variance or 0)
                proc.age_deadline = proc.started_mono + self.config.max_age + variance
            if item.state == "running" and getattr(self.config, "notify", False):
                # Still waiting for READY=1 at the exec: its ready_timeout runs on from its own start, or
                # a worker that never gets ready would keep the watcher starting for good.
                proc.ready_deadline = proc.started_mono + float(self.config.ready_timeout)
            if item.state in ("ready", "stopping"):
                proc.set_state(ProcessState.READY)
            if item.state == "stopping":
                proc.expected_exit = True
                proc.set_state(ProcessState.STOPPING)
            self.procs[proc.pid] = proc
            self.svc.register(proc)
        self.numprocesses = handed.numprocesses
        if handed.state in ("active", "starting"):
            self.state = WatcherState.ACTIVE if handed.state == "active" else WatcherState.STARTING
            self._ensure_manager()
            self.wake()
        for proc in self.processes():
            if proc.state is ProcessState.STOPPING:
                self._spawn_task(self._stop_process(proc))

    def remove(self) -> None:
        """The arbiter's rm is done with it: after close(), or at once with --nostop (the workers are left
        running, unsupervised). No manager any more; commands still queued on it fail as not found."""
        if self._manager is not None:
            self._manager.cancel()
        self.removed = True

    async def close(self) -> None:
        """Stop and release everything (rm, or arbiter shutdown)."""
        await self.stop()
        await self.freeze()  # then no manager and no background task is left

    # ---------------------------------------------------------------- scaling
    async def incr(self, nb: int = 1) -> int:
        return await self.set_numprocesses(self.numprocesses + nb)

    async def decr(self, nb: int = 1) -> int:
        return await self.set_numprocesses(max(self.numprocesses - nb, 0))

    async def set_numprocesses(self, n: int) -> int:
        if n < 0:
            raise ValueError("numprocesses must be >= 0")
        if self.config.singleton and n > 1:
            raise ValueError("singleton watcher: numprocesses cannot exceed 1")
        async with self._command():
            self.numprocesses = n
            self._explicit_spawn = True
            if self.state in (WatcherState.STARTING, WatcherState.ACTIVE):
                await self._next_pass()
        return self.numprocesses

    # ---------------------------------------------------------------- reload
    async def reload(self, graceful: bool = True, sequential: bool = False) -> None:
        stops = self._stops_asked
        async with self._command():
            if self.state is WatcherState.STOPPED:
                began = await self._start_locked()
            elif not graceful and not self.config.send_hup:
                await self._stop_locked()
                began = await self._start_locked()
            else:
                if self._stops_asked != stops:
                    # A stop (restart, rm, circusd's shutdown) came while this reload waited for the lock:
                    # it would only hold that stop up, waiting for a new pool the stop then kills.
                    raise ReloadAbandoned(f"watcher {self.name}: reload abandoned, a stop came meanwhile")
                await self._graceful_reload(sequential)
                return
        await self._started(began, wait=True)  # as start(): the pool comes up outside the lock
        if not graceful and not self.config.send_hup:
            self._emit("reload")

    async def _graceful_reload(self, sequential: bool) -> None:
        """_reload_locked, as a task a stop may cancel (_abandon_reload).

        A graceful reload holds the lock until the new pool is ready: up to ready_timeout (30 s by
        default) for workers that never say READY=1, more when sequential. A stop, a restart, an `rm` or
        circusd's own shutdown must not queue behind that: they cancel the reload, which raises
        ReloadAbandoned to its caller and leaves the lock to them. The workers it had spawned or was
        stopping are the stop's to stop, with all the others.
        """
        task = asyncio.create_task(self._reload_locked(sequential), name=f"reload {self.name}")
        self._reloading = task
        try:
            # asyncio.wait, not `await task`: only the task is cancelled by a stop, and a cancel of this
            # command itself must reach the task too.
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            self._reloading = None
        if task.cancelled():
            raise ReloadAbandoned(f"watcher {self.name}: reload abandoned, the watcher was stopped meanwhile")
        task.result()

    def _abandon_reload(self) -> None:
        self._stops_asked += 1  # a graceful reload still queued on the lock gives up when it gets there
        if self._reloading is not None and not self._reloading.done():
            log.info("watcher %s: a stop comes: the graceful reload under way is abandoned", self.name)
            self._reloading.cancel()

    async def _reload_locked(self, sequential: bool) -> None:
        """send_hup, or the graceful roll: new workers first, the old ones stopped once the new are ready."""
        if self.config.send_hup:
            for p in self.processes():
                p.send_signal(signals_mod.SIGHUP)
            self._emit("reload")
            return
        old = self.live()
        if sequential:
            for p in old:
                p.expected_exit = True
                self._explicit_spawn = True  # respawn = false too: the reload asks for the successor
                await self._next_pass()
                await self._wait_ready_pool()
                if self.config.warmup_delay:
                    await asyncio.sleep(self.config.warmup_delay)
                await self._stop_process(p)
        else:
            # Start N new, then stop the old: the old ones leave the live count first, so one reconcile
            # pass spawns the whole new pool; they are signalled only once the new pool is up.
            for p in old:
                p.expected_exit = True
            self._explicit_spawn = True  # respawn = false too: the reload asks for a new pool
            await self._next_pass()
            await self._wait_ready_pool()
            await asyncio.gather(*(self._stop_process(p) for p in old))
        self._emit("reload")

    async def _wait_ready_pool(self, timeout: float | None = None) -> None:
        limit = timeout if timeout is not None else float(getattr(self.config, "ready_timeout", 30) or 30)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            live = self.live()
            if len(live) >= self.numprocesses and all(p.state is ProcessState.READY for p in live):
                return
            if self.state not in (WatcherState.STARTING, WatcherState.ACTIVE) or self._gave_up:
                return
            if not self._managed():
                # Nobody spawns any more (`rm --nostop` cancelled the manager): waiting on until
                # ready_timeout would hold the watcher's lock, and every command queued on it, for nothing.
                return
            await self._next_pass(timeout=min(1.0, deadline - time.monotonic()), force=False)

    # ---------------------------------------------------------------- signals
    async def signal(
        self, signum: int, pid: int | None = None, children: bool = False, recursive: bool = False
    ) -> list[int]:
        targets = [self._get(pid)] if pid is not None else self.processes()
        sent: list[int] = []
        for p in targets:
            allowed = await self._signal_allowed(p.pid, signum)
            if allowed and not children and p.send_signal(signum):
                sent.append(p.pid)
            # Circus (Watcher.send_signal) calls after_signal whether or not before_signal let it go.
            await self._hook("after_signal", pid=p.pid, signum=signum)
            if allowed and (children or recursive):
                sent.extend(_signal_tree(p.pid, signum, recursive))
        self._emit("signal", signum=signum, pids=sent)
        return sent

    async def signal_child(self, pid: int, childpid: int, signum: int) -> bool:
        """Signal one descendant of worker pid (pidfd-pinned); False if it is not under that worker."""
        self._get(pid)
        if not signal_descendant(pid, childpid, signum):
            return False
        self._emit("signal", signum=signum, pids=[childpid])
        return True

    async def kill(
        self, pid: int | None = None, signum: int | None = None, graceful_timeout: float | None = None
    ) -> None:
        """signum (stop_signal if None), then SIGKILL after graceful_timeout (the watcher's if None)."""
        targets = [self._get(pid)] if pid is not None else self.processes()
        await asyncio.gather(
            *(self._stop_process(p, sig=signum, graceful_timeout=graceful_timeout) for p in targets)
        )
        self.wake()

    async def _signal_allowed(self, pid: int, signum: int) -> bool:
        """before_signal may veto a signal, except SIGKILL which always goes (Circus)."""
        if signum == signals_mod.SIGKILL or not self._has_hook("before_signal"):
            return True
        return await self._hook("before_signal", pid=pid, signum=signum)

    def _get(self, pid: int) -> Process:
        proc = self.procs.get(pid)
        if proc is None or not proc.alive:
            raise LookupError(f"process {pid} not found in watcher {self.name}")
        return proc

    async def _stop_process(
        self, p: Process, sig: int | None = None, graceful_timeout: float | None = None
    ) -> None:
        """stop_signal, then SIGKILL after graceful_timeout; the exit itself comes in through the reaper."""
        if not p.alive:
            return
        p.expected_exit = True
        if p.state in (ProcessState.RUNNING, ProcessState.READY):
            p.set_state(ProcessState.STOPPING)
        signum = self.config.stop_signal if sig is None else sig
        timeout = self.config.graceful_timeout if graceful_timeout is None else graceful_timeout
        self._emit("kill", process_pid=p.pid, wid=p.wid)
        # The tree is taken BEFORE the worker is signalled: once it dies, its children are re-parented
        # to us and /proc no longer says whose they were. Holding their pidfds makes the later signals
        # safe against pid reuse.
        tree = _open_tree(p.pid) if self.config.stop_children else []
        try:
            if await self._signal_allowed(p.pid, signum):
                p.send_signal(signum)
            await self._hook("after_signal", pid=p.pid, signum=signum)  # vetoed or not, as in Circus
            _signal_fds(tree, signum)
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(p.exited)
                return
            except TimeoutError:
                log.warning(
                    "watcher %s: pid %d outlived graceful_timeout=%ss, SIGKILL", self.name, p.pid, timeout
                )
            if self.config.stop_children:
                tree.extend(_open_tree(p.pid))  # children forked since
            _signal_fds(tree, signals_mod.SIGKILL)
            p.send_signal(signals_mod.SIGKILL)
            try:
                async with asyncio.timeout(KILL_WAIT):
                    await asyncio.shield(p.exited)
            except TimeoutError:
                log.error("watcher %s: pid %d survives SIGKILL (uninterruptible?)", self.name, p.pid)
        finally:
            for _pid, fd in tree:
                os.close(fd)

    # ---------------------------------------------------------------- options
    def set_stream_options(self, streamed: Mapping[str, Any]) -> list[str]:
        """`stdout_stream.*`/`stderr_stream.*` changes, applied now (a new sink at once): ValueError, with
        nothing changed, when the stream cannot be made. Returns the keys that need new workers (fd 1/2
        changes kind), for set_options(also_reload=...)."""
        if not streamed or self.svc.streams is None:
            return []
        self.config, respawn = self.svc.streams.reconfigure(self.config, streamed)
        return list(streamed) if respawn else []

    async def set_options(self, changes: Mapping[str, Any], also_reload: Sequence[str] = ()) -> list[str]:
        """Apply option changes parsed by the caller (control/commands/set.parse_options: typed values,
        `rlimit_<name>` and `hooks.<name>` keys); returns the keys that needed a graceful reload.
        `also_reload`: stream keys set_stream_options applied already that need new workers."""
        changes = dict(changes)
        n = changes.pop("numprocesses", None)
        needs_reload: list[str] = list(also_reload)
        stream_keys = [k for k in changes if k.startswith(("stdout_stream.", "stderr_stream."))]
        needs_reload += self.set_stream_options({k: changes.pop(k) for k in stream_keys})
        stream_keys += list(also_reload)
        if changes:
            fields = {f.name for f in dataclasses.fields(self.config)}
            direct = {k: v for k, v in changes.items() if k in fields}
            rlimits = {k[len("rlimit_"):]: v for k, v in changes.items() if k.startswith("rlimit_")}
            hooks = {k[len("hooks."):]: v for k, v in changes.items() if k.startswith("hooks.")}
            if rlimits:
                direct["rlimits"] = {**self.config.rlimits, **rlimits}
            if hooks:
                direct["hooks"] = {**self.config.hooks, **hooks}
            extra = {
                k: v for k, v in changes.items()
                if k not in fields and not k.startswith(("rlimit_", "hooks."))
            }
            cfg = dataclasses.replace(self.config, **direct)
            if extra and hasattr(cfg, "extra"):
                cfg = dataclasses.replace(cfg, extra={**cfg.extra, **extra})
            if hasattr(cfg, "raw"):
                cfg = dataclasses.replace(cfg, raw={**cfg.raw, **{k: str(v) for k, v in changes.items()}})
            self.config = cfg
            self._book.policy = self._policy()
            needs_reload += [k for k in direct if k in SPAWN_KEYS]
        if n is not None:
            await self.set_numprocesses(int(n))
        updated = {*changes, *stream_keys, *(["numprocesses"] if n is not None else [])}
        self._emit("updated", options=sorted(updated))
        if needs_reload and self.state is not WatcherState.STOPPED:
            await self.reload(graceful=True)
        return needs_reload

    # ---------------------------------------------------------------- the manager
    async def _manage(self) -> None:
        try:
            while True:
                self._wake.clear()
                self._in_pass = True
                try:
                    timeout = await self._reconcile()
                except Exception:
                    # A bug in one pass must not leave the pool without a manager for good (nothing would
                    # respawn, and freeze/close would re-raise it): logged, and the pass is tried again.
                    log.exception("watcher %s: reconcile pass failed; again in %ss", self.name, PASS_RETRY)
                    timeout = PASS_RETRY
                finally:
                    self._in_pass = False
                async with self._pass_done:
                    self._passes += 1
                    self._pass_done.notify_all()
                if self._wake.is_set():
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # not wait_for: see _next_pass
                        await self._wake.wait()
        finally:
            # Cancelled (rm --nostop, freeze): no pass will come, so tell whoever waits for one now
            # rather than at its timeout, holding the watcher's lock meanwhile.
            self._last_word = asyncio.ensure_future(self._notify_pass_waiters())

    async def _notify_pass_waiters(self) -> None:
        async with self._pass_done:
            self._pass_done.notify_all()

    async def _reconcile(self) -> float | None:
        """One pass: compare desired with actual and fix the difference. Returns when to look again."""
        if self.state not in (WatcherState.STARTING, WatcherState.ACTIVE) or self._gave_up:
            # After a give-up the watcher only waits for its stop: the lock may be held for a while (a
            # reload waiting on its pool), and spawning on meanwhile would fail, give up and queue a
            # stop again on every pass, without end.
            return None
        now = time.monotonic()
        wake_at: list[float] = []
        failed_spawn = False
        live = self.live()

        # Recycle workers past max_age: take them out of the live count; the pass below spawns successors.
        for p in live:
            if p.age_deadline is not None and p.age_deadline <= now:
                p.expected_exit = True
                self._spawn_task(self._stop_process(p))
        live = self.live()

        # Taken now, not cleared at the end: an incr/start/reload asking for spawns while this pass yields
        # (warmup_delay, hooks, every SPAWN_BATCH spawns) has its own pass next, with respawn = false too.
        explicit, self._explicit_spawn = self._explicit_spawn, False
        if len(live) > self.numprocesses:
            for pid in pick_to_stop([(p.pid, p.started_mono) for p in live], len(live) - self.numprocesses):
                proc = self.procs[pid]
                proc.expected_exit = True
                self._spawn_task(self._stop_process(proc))
        elif len(live) < self.numprocesses and (self.config.respawn or explicit):
            wids, retry_at = wids_to_spawn(self.numprocesses, [p.wid for p in live], self._book, now)
            if retry_at is not None:
                wake_at.append(retry_at)
            for i, wid in enumerate(wids):
                if self.state not in (WatcherState.STARTING, WatcherState.ACTIVE) or self._gave_up:
                    break
                if self._has_hook("before_spawn"):
                    # Awaited per spawn, in a thread: the cost (see docs/PLUGINS.md) is paid only when the
                    # hook is configured.
                    if not await self._hook("before_spawn"):
                        self._abort_start("before_spawn")
                        break
                    if self.state not in (WatcherState.STARTING, WatcherState.ACTIVE):
                        break
                spawned = self._spawn(wid)
                if spawned is None:
                    failed_spawn = True
                if spawned is not None and self._has_hook("after_spawn"):
                    self._spawn_task(self._after_spawn(spawned.pid))
                if self.config.warmup_delay and i + 1 < len(wids):
                    await asyncio.sleep(self.config.warmup_delay)
                elif (i + 1) % SPAWN_BATCH == 0:
                    await asyncio.sleep(0)
        if failed_spawn:
            # A failed spawn (EMFILE, EAGAIN, a missing binary) leaves no child whose exit would wake us:
            # without a wake-up of our own the slot stayed empty until some unrelated command came.
            due, again = wids_to_spawn(self.numprocesses, [p.wid for p in self.live()], self._book,
                                       time.monotonic())
            if due:
                wake_at.append(time.monotonic())
            elif again is not None:
                wake_at.append(again)

        live = self.live()
        for p in live:
            if p.state is ProcessState.RUNNING and p.ready_deadline is not None:
                wake_at.append(p.ready_deadline)
            if p.age_deadline is not None:
                wake_at.append(p.age_deadline)
        all_up = len(live) >= self.numprocesses and all(p.state is ProcessState.READY for p in live)
        if self.state is WatcherState.STARTING and all_up:
            self._set_state(WatcherState.ACTIVE)
        self._check_ready_deadlines(now)
        if not wake_at:
            return None
        return max(min(wake_at) - time.monotonic(), 0.0)

    def _check_ready_deadlines(self, now: float) -> None:
        for p in self.live():
            deadline = p.ready_deadline
            if p.state is ProcessState.RUNNING and deadline is not None and deadline <= now:
                log.warning(
                    "watcher %s: pid %d not ready after %ss", self.name, p.pid, self.config.ready_timeout
                )
                p.ready_failed = True
                self._spawn_task(self._stop_process(p, sig=signals_mod.SIGKILL, graceful_timeout=0))

    def _spawn(self, wid: int) -> Process | None:
        t0 = time.monotonic()  # spawn_ms: spec building + the clone/exec round trip, for the histogram
        capture = None  # runtime.streams.Capture: stdout/stderr pipes when output is captured
        try:
            if self.svc.streams is not None:
                capture = self.svc.streams.prepare(self.config, wid)
            stdio = capture.stdio if capture is not None else None
            spec, argv = build_spawn_spec(self.config, wid, self.svc, stdio=stdio)
            child = native.spawn(spec)
        except (native.SpawnError, OSError, ValueError) as exc:
            if capture is not None:
                capture.abort()
            self.exec_errors += 1
            stage = getattr(exc, "stage", "prepare")
            err = getattr(exc, "errno", None)
            log.error("watcher %s: spawn of wid %d failed: %s", self.name, wid, exc)
            self._emit("exec_error", wid=wid, stage=stage, errno=err, error=str(exc))
            verdict = self._book.on_exit(wid, 0.0, time.monotonic(), exec_failed=True)
            if verdict.give_up:
                self._give_up(f"spawn failed {self.config.max_retry + 1} times in a row: {exc}")
            return None
        if capture is not None:
            capture.attach(child.pid, wid)  # closes circusd's write ends: EOF comes when the worker's go
        proc = Process(child, wid, argv, self.name)
        self._track(proc, round((time.monotonic() - t0) * 1000.0, 3))
        return proc

    def _track(self, proc: Process, spawn_ms: float) -> None:
        """A worker just spawned (by _spawn, or by runtime/prestart before the loop) joins the pool."""
        if self.config.max_age:
            proc.age_deadline = (
                proc.started_mono + self.config.max_age + random.uniform(0, self.config.max_age_variance or 0)
            )
        if getattr(self.config, "notify", False):
            proc.ready_deadline = proc.started_mono + float(self.config.ready_timeout)
        else:
            proc.set_state(ProcessState.READY)
        self.procs[proc.pid] = proc
        self.svc.register(proc)
        self._emit("spawn", process_pid=proc.pid, wid=proc.wid, spawn_ms=spawn_ms)

    def adopt_prestarted(self, workers: Iterable[Any]) -> None:
        """Workers runtime/prestart spawned for this (still stopped) watcher before the event loop existed.

        They join the pool as if _spawn had just made them; the watcher's start then finds it complete.
        """
        for w in workers:
            proc = Process(native.Child(w.pid, w.pidfd), w.wid, list(w.argv), self.name)
            proc.started = w.started
            proc.started_mono = w.started_mono
            self._track(proc, w.spawn_ms)
        self._prestart_exits = []

    def _count_prestart_exits(self) -> None:
        """The start that follows an adoption counts the adopted workers that already died (the arbiter
        reaps them before any watcher starts) as its own failed starts: prestarting is this start's first
        attempt, not an extra one outside `max_retry`."""
        exits, self._prestart_exits = self._prestart_exits, None
        for wid, lifetime, exit_code in exits or ():
            if self._count_exit(wid, lifetime, exit_code):
                return

    def _abort_start(self, hook_name: str) -> None:
        """Circus: a spawn hook returning False stops the watcher and aborts its start."""
        log.warning("watcher %s: %s hook said no: stopping the watcher", self.name, hook_name)
        self._spawn_task(self.stop())

    async def _after_spawn(self, pid: int) -> None:
        refused = not await self._hook("after_spawn", pid=pid)
        if refused and self.state in (WatcherState.STARTING, WatcherState.ACTIVE):
            self._abort_start("after_spawn")

    async def _reap_hooks(self, pid: int, exit_code: int, expected: bool) -> None:
        # The kernel has already reaped the child (pidfd/waitid): both hooks run right after, in order.
        now = time.time()
        await self._hook("before_reap", process_pid=pid, time=now)
        # process_status as in Circus: None when we stopped it, DEAD_OR_ZOMBIE (1) when it died by itself.
        status = None if expected else 1
        await self._hook("after_reap", process_pid=pid, time=now, exit_code=exit_code, process_status=status)

    def on_ready(self, pid: int, fields: Mapping[str, str]) -> None:
        """A worker's notify message (READY=1, STATUS=...), attributed by the kernel-checked sender pid."""
        proc = self.procs.get(pid)
        if proc is None or not proc.alive:
            return
        if "STATUS" in fields:
            proc.status_text = fields["STATUS"]
        if fields.get("READY") == "1" and proc.state is ProcessState.RUNNING:
            proc.set_state(ProcessState.READY)
            self._emit("ready", process_pid=pid, wid=proc.wid)
            self.wake()

    def on_exit(self, proc: Process, status: native.ExitStatus) -> None:
        """Called by the arbiter's reaper once the child is reaped."""
        self.procs.pop(proc.pid, None)
        self.svc.unregister(proc)
        if self.svc.streams is not None:
            self.svc.streams.process_exited(self.name, proc.pid)  # its pipes drain, bounded
        self._emit("reap", process_pid=proc.pid, exit_code=status.exit_code, wid=proc.wid)
        if self._has_hook("before_reap") or self._has_hook("after_reap"):
            self._spawn_task(self._reap_hooks(proc.pid, status.exit_code, proc.expected_exit))
        if proc.expected_exit and not proc.ready_failed:
            self.wake()
            return
        lifetime = 0.0 if proc.ready_failed else time.monotonic() - proc.started_mono
        if self.state not in (WatcherState.STARTING, WatcherState.ACTIVE):
            if self._prestart_exits is not None and self.state is WatcherState.STOPPED:
                self._prestart_exits.append((proc.wid, lifetime, status.exit_code))
            return
        if not self._count_exit(proc.wid, lifetime, status.exit_code):
            self.wake()

    def _count_exit(self, wid: int, lifetime: float, exit_code: int) -> bool:
        """An unexpected exit during a start or a run goes into the restart book; True if it gave up."""
        self.restarts += 1
        verdict = self._book.on_exit(wid, lifetime, time.monotonic())
        if verdict.give_up:
            self._give_up(
                f"worker wid {wid} failed to start {self.config.max_retry + 1} times in a row "
                f"(last exit code {exit_code})"
            )
        return verdict.give_up

    def _give_up(self, reason: str) -> None:
        if self._gave_up:
            return  # its stop is already queued
        log.error("watcher %s: giving up: %s", self.name, reason)
        self._gave_up = True
        self.wake()  # the pass it brings lets a start waiting on the pool see the give-up at once
        self._emit("giveup", reason=reason)
        self._spawn_task(self._stop_given_up(self._starts))

    async def _stop_given_up(self, start: int) -> None:
        """The stop a give-up queued; void if the watcher was started again (restart) while it waited."""
        async with self.lock:
            if self._gave_up and self._starts == start and not self.removed:
                await self._stop_locked()


# Options whose change only shows in newly spawned workers: `set` rolls the pool gracefully for them.
SPAWN_KEYS = frozenset(
    {
        "cmd",
        "args",
        "env",
        "working_dir",
        "shell",
        "shell_args",
        "executable",
        "uid",
        "gid",
        "copy_env",
        "copy_path",
        "rlimits",
        "sockets",
        "use_sockets",
        "stdin_socket",
        "close_child_stdin",
        "close_child_stdout",
        "close_child_stderr",
        "virtualenv",
        "notify",
    }
)


def _open_tree(pid: int, recursive: bool = True) -> list[tuple[int, int]]:
    """(pid, pidfd) of the children (with recursive, all descendants) of pid, parents first.

    A child of a live process cannot be recycled before its parent reaps it, so a pidfd opened right
    after reading /proc pins that very process; signals then go through the pidfd, never the bare pid.
    """
    found: list[tuple[int, int]] = []
    for child in _children(pid):
        try:
            fd = os.pidfd_open(child)
        except OSError:  # ProcessLookupError included: it is gone already
            continue
        found.append((child, fd))
        if recursive:
            found.extend(_open_tree(child, recursive))
    return found


def _signal_fds(tree: list[tuple[int, int]], sig: int) -> list[int]:
    sent: list[int] = []
    for pid, fd in tree:
        try:
            native.pidfd_send_signal(fd, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def _signal_tree(pid: int, sig: int, recursive: bool) -> list[int]:
    """Signal the children (with recursive, all descendants) of pid: the whole tree is taken first."""
    tree = _open_tree(pid, recursive)
    try:
        return _signal_fds(tree, sig)
    finally:
        for _pid, fd in tree:
            os.close(fd)



def signal_descendant(pid: int, childpid: int, sig: int) -> bool:
    """Signal one descendant of pid through a pidfd; False if childpid is not (or no longer) under pid.

    The same pinning as _open_tree: the descendant is found in /proc and opened by pidfd while its parent
    is alive, so the signal reaches that process or nobody, never a stranger given its recycled pid.
    """
    tree = _open_tree(pid, recursive=True)
    try:
        return any(_signal_fds([(p, fd)], sig) for p, fd in tree if p == childpid)
    finally:
        for _pid, fd in tree:
            os.close(fd)

def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return kids
