"""Samples circusd once a second through the read-only commands, keeps a short history, fans it out.

In-process and read-only: it never changes the arbiter; actions go through the control dispatch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands import COMMANDS
from circus_linux.web.snapshot import Histogram, ProcSample, Snapshot, SocketSample, WatcherSample

log = logging.getLogger(__name__)

TAIL_LINES = 200
QUEUE_DEPTH = 64


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def proc_samples(infos: Mapping[str, Any]) -> tuple[ProcSample, ...]:
    """`stats` per-process infos -> samples; a process that vanished mid-measure is skipped."""
    out = []
    for info in infos.values():
        if not isinstance(info, dict):
            continue  # "No such process (stopped?)"
        out.append(
            ProcSample(
                pid=int(info["pid"]),
                wid=_int(info.get("wid")),
                cpu=float(info.get("cpu") or 0.0),
                mem=float(info.get("mem") or 0.0),
                rss=int(info.get("rss") or 0),
                age=float(info.get("age") or 0.0),
            )
        )
    return tuple(sorted(out, key=lambda p: (p.wid is None, p.wid or 0, p.pid)))


def socket_samples(sockets: list[dict[str, Any]]) -> tuple[SocketSample, ...]:
    out = []
    for s in sockets:
        addr = s.get("path") or f"{s.get('host')}:{s.get('port')}"
        out.append(SocketSample(str(s.get("name")), _int(s.get("queued")), _int(s.get("backlog")), str(addr)))
    return tuple(out)


class Collector:
    """Owns the sampling task; `subscribe()` gives a queue of ("sample"|"output", dict) messages."""

    def __init__(self, arbiter: Any, interval: float = 1.0, history_seconds: float = 600.0) -> None:
        self.arbiter = arbiter
        self.interval = interval
        self.history: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=max(1, int(history_seconds / interval))
        )
        self.spawn: dict[str, Histogram] = {}
        self.tails: dict[str, collections.deque[dict[str, Any]]] = {}
        self.last: Snapshot | None = None
        self._subs: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ events from the runtime
    def listen(self, topic: str, payload: Mapping[str, Any]) -> None:
        """An arbiter listener: spawn latency and worker output; must stay cheap (called inline)."""
        parts = topic.split(".")
        if len(parts) < 3 or parts[0] != "watcher":
            return
        name, event = ".".join(parts[1:-1]), parts[-1]
        if event == "remove":
            # Its series and output tail go with it: kept, every add/rm cycle of a new name grew the
            # scrape and the memory without bound.
            self.spawn.pop(name, None)
            self.tails.pop(name, None)
        elif event == "spawn" and isinstance(payload.get("spawn_ms"), int | float):
            self.spawn.setdefault(name, Histogram()).observe(float(payload["spawn_ms"]) / 1000.0)
        elif event in ("stdout", "stderr"):
            text = payload.get("data", payload.get("line", ""))
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            entry = {
                "watcher": name,
                "stream": event,
                "pid": payload.get("pid", payload.get("process_pid")),
                "line": str(text).rstrip("\n"),
            }
            self.tails.setdefault(name, collections.deque(maxlen=TAIL_LINES)).append(entry)
            self._publish("output", entry)

    # ------------------------------------------------------------------ sampling
    async def sample(self) -> Snapshot:
        stats = await COMMANDS["stats"].execute(self.arbiter, {})
        infos = stats.get("infos", {}) if isinstance(stats, dict) else {}
        watchers = []
        for name, w in list(self.arbiter.watchers.items()):
            watchers.append(
                WatcherSample(
                    name=name,
                    status=w.status(),
                    numprocesses=int(w.numprocesses),
                    procs=proc_samples(infos.get(name, {})),
                    restarts=_int(getattr(w, "restarts", None)),
                    oom_kills=self._oom(name),
                    exec_errors=_int(getattr(w, "exec_errors", None)),
                )
            )
        sockets: tuple[SocketSample, ...] = ()
        if "listsockets" in COMMANDS:
            listed = await COMMANDS["listsockets"].execute(self.arbiter, {})
            if isinstance(listed, dict):
                sockets = socket_samples(listed.get("sockets", []))
        return Snapshot(time.time(), tuple(watchers), sockets)

    def _oom(self, name: str) -> int | None:
        cgroups = getattr(self.arbiter, "cgroups", None)
        if cgroups is None:
            return None
        try:
            st = cgroups.stats(name)
        except OSError:
            return None
        return None if st is None else _int(getattr(st, "oom_kill", None))

    def point(self, snap: Snapshot) -> dict[str, Any]:
        """One history point: the per-watcher series the dashboard charts."""
        return {
            "time": snap.time,
            "watchers": {
                w.name: {"cpu": round(w.cpu, 2), "rss": w.rss, "procs": len(w.procs), "restarts": w.restarts}
                for w in snap.watchers
            },
        }

    async def tick(self) -> Snapshot:
        snap = await self.sample()
        self.last = snap
        point = self.point(snap)
        self.history.append(point)
        self._publish("sample", {"snapshot": snap.to_json(), "point": point})
        return snap

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad sample must not end the dashboard
                log.exception("httpd: sampling failed")
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="httpd-collector")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ------------------------------------------------------------------ fan-out
    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_DEPTH)
        self._subs.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self._subs.discard(queue)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        for queue in self._subs:
            # A browser that stops reading loses messages, it never makes circusd buffer without bound.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((kind, data))
