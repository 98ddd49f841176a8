"""A stand-in arbiter with the runtime API and real asyncio semantics, for protocol/dispatch tests only.

Workers are real `sleep` children (so `stats` and `signal` act on real pids); each watcher serialises its
commands with its own lock, like the runtime; `gate` lets a test hold a command in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal as _signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zmq

from circus_linux.control.publisher import Publisher
from circus_linux.control.server import Server
from circus_linux.errors import CommandError, UnknownWatcher


@dataclass
class FakeProcess:
    popen: subprocess.Popen[bytes]
    wid: int
    started: float = field(default_factory=time.time)
    state: str = "running"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self, sig: int = _signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        self.popen.wait()


class FakeWatcher:
    def __init__(self, name: str, numprocesses: int = 1, emit: Callable[..., None] | None = None) -> None:
        self.name = name
        self.numprocesses = numprocesses
        self.config = SimpleNamespace(name=name, priority=0)  # what `start` orders by (core/order.py)
        self._state = "stopped"
        self._lock = asyncio.Lock()
        self._procs: list[FakeProcess] = []
        self._emit = emit or (lambda topic, payload: None)
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()  # set when a gated command is holding the lock
        self.extra: dict[str, Any] = {"flapping.max_retry": "3", "graceful_timeout": 30.0}
        self.signals: list[tuple[int, int | None, bool, bool]] = []
        self.kills: list[tuple[int | None, int, float | None]] = []

    def status(self) -> str:
        return self._state

    def processes(self) -> list[FakeProcess]:
        return list(self._procs)

    def _reconcile(self) -> None:
        while len(self._procs) < self.numprocesses:
            used = {p.wid for p in self._procs}
            wid = min(set(range(1, 2 * self.numprocesses + 2)) - used)
            proc = FakeProcess(subprocess.Popen(["sleep", "600"]), wid)
            self._procs.append(proc)
            self._emit(f"watcher.{self.name}.spawn", {"process_pid": proc.pid})
        while len(self._procs) > self.numprocesses:
            self._procs.pop(0).kill()

    async def _gated(self) -> None:
        self.entered.set()
        await self.gate.wait()

    async def start(self) -> None:
        async with self._lock:
            self._state = "starting"
            await self._gated()
            self._reconcile()
            self._state = "active"
            self._emit(f"watcher.{self.name}.start", {})

    async def stop(self) -> None:
        async with self._lock:
            self._state = "stopping"
            await self._gated()
            for proc in self._procs:
                proc.kill()
            self._procs.clear()
            self._state = "stopped"
            self._emit(f"watcher.{self.name}.stop", {})

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def reload(self, graceful: bool = True, sequential: bool = False) -> None:
        async with self._lock:
            await self._gated()
            for proc in self._procs:
                proc.kill()
            self._procs.clear()
            self._reconcile()

    async def set_numprocesses(self, n: int) -> int:
        async with self._lock:
            self.numprocesses = max(0, n)
            if self._state == "active":
                self._reconcile()
            return self.numprocesses

    async def incr(self, nb: int = 1) -> int:
        return await self.set_numprocesses(self.numprocesses + nb)

    async def decr(self, nb: int = 1) -> int:
        return await self.set_numprocesses(self.numprocesses - nb)

    def options(self) -> dict[str, Any]:
        return {"numprocesses": self.numprocesses, "cmd": "sleep 600", **self.extra}

    def set_stream_options(self, streamed: dict[str, Any]) -> list[str]:
        self.extra.update(streamed)
        return []

    async def set_options(self, opts: dict[str, Any]) -> None:
        if "numprocesses" in opts:
            await self.set_numprocesses(opts["numprocesses"])
        self.extra.update({k: v for k, v in opts.items() if k != "numprocesses"})

    async def signal(
        self, signum: int, pid: int | None = None, children: bool = False, recursive: bool = False
    ) -> None:
        self.signals.append((signum, pid, children, recursive))

    async def kill(
        self, pid: int | None = None, signum: int = _signal.SIGKILL, graceful_timeout: float | None = None
    ) -> None:
        self.kills.append((pid, signum, graceful_timeout))

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
        self._procs.clear()


class FakeArbiter:
    def __init__(self, emit: Callable[..., None] | None = None) -> None:
        self._emit = emit or (lambda topic, payload: None)
        self.watchers: dict[str, FakeWatcher] = {}
        self.config = SimpleNamespace(circus=SimpleNamespace(endpoint="ipc://x", pubsub_endpoint="ipc://y"))
        self.sockets = {"web": SimpleNamespace(fd=7, name="web", host="127.0.0.1", port=8080, backlog=2048)}
        self.quitting = asyncio.Event()
        self.reloaded = 0

    def add(self, name: str, numprocesses: int = 1) -> FakeWatcher:
        self.watchers[name] = FakeWatcher(name, numprocesses, self._emit)
        return self.watchers[name]

    def refuse_taken(self, name: str) -> None:
        if name in self.watchers:
            raise CommandError(f"watcher {name} already exists")

    def get_watcher(self, name: str) -> FakeWatcher:
        try:
            return self.watchers[name]
        except KeyError:
            raise UnknownWatcher(name) from None

    async def add_watcher(self, cfg: Any, start: bool = False) -> FakeWatcher:
        watcher = self.add(cfg.name, cfg.numprocesses)
        watcher.config = cfg  # type: ignore[attr-defined]
        if start:
            await watcher.start()
        return watcher

    async def rm_watcher(self, name: str, stop: bool = True) -> None:
        watcher = self.get_watcher(name)
        if stop:
            await watcher.stop()
        del self.watchers[name]

    async def reload_config(self) -> dict[str, Any]:
        self.reloaded += 1
        return {}

    async def reload(self, graceful: bool = True, sequential: bool = False) -> None:
        for watcher in self.watchers.values():
            await watcher.reload(graceful, sequential)

    async def quit(self) -> None:
        self.quitting.set()

    def dstats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "children": sum(len(w.processes()) for w in self.watchers.values())}

    def close(self) -> None:
        for watcher in self.watchers.values():
            watcher.close()


class ControlThread:
    """An event loop in a thread running FakeArbiter + Server + Publisher; tests talk to it over zmq."""

    def __init__(self, tmp_path: Path, **server_kwargs: Any) -> None:
        self.endpoint = f"ipc://{tmp_path}/ctl.sock"
        self.pubsub = f"ipc://{tmp_path}/pub.sock"
        self.loop = asyncio.new_event_loop()
        self.context = zmq.Context()
        self.publisher = Publisher(self.pubsub, self.context)
        self.arbiter: FakeArbiter
        self.server: Server
        self._server_kwargs = server_kwargs
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._setup())
        self._ready.set()
        self.loop.run_forever()

    async def _setup(self) -> None:
        self.publisher.start()
        self.arbiter = FakeArbiter(self.publisher.emit)
        self.server = Server(self.arbiter, self.endpoint, self.context, **self._server_kwargs)
        await self.server.start()

    def start(self) -> ControlThread:
        self._thread.start()
        assert self._ready.wait(10), "control thread did not start"
        return self

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the loop thread and return its result (coroutines are awaited)."""

        async def wrapper() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout=30)

    def stop(self) -> None:
        async def teardown() -> None:
            await self.server.close()
            self.publisher.close()
            for watcher in self.arbiter.watchers.values():
                watcher.gate.set()
            self.arbiter.close()

        self.call_soon(teardown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self.context.destroy(linger=0)


@contextmanager
def running_control(
    tmp_path: Path, watchers: dict[str, int] | None = None, start: bool = True, **server_kwargs: Any
) -> Iterator[ControlThread]:
    ctl = ControlThread(tmp_path, **server_kwargs).start()
    try:
        for name, n in (watchers or {}).items():
            w = ctl.call_soon(ctl.arbiter.add, name, n)
            if start:
                ctl.call_soon(w.start)
        yield ctl
    finally:
        ctl.stop()
