"""The stats stream: an XPUB at `stats_endpoint` publishing Circus's `stat.*` topics about once a second.

Topics (two frames, topic and JSON, as circusd-stats sends them; circus-top reads them):
  stat.<watcher>.<pid>   one worker: Circus's per-process info (cpu %, mem %, mem_info1/2, ctime, ...)
                         plus numbers (rss, vms, cpu_user, cpu_system, cpu_seconds, age, wid)
  stat.<watcher>         the pool: pid [list], cpu (average %), mem (sum %), age (oldest), rss, status,
                         numprocesses, restarts (the watcher's restart count), and `cgroup` (cpu
                         usage/user/system usec, cpu_percent, memory current/peak, pids, oom/oom_kill,
                         PSI, and which backend served each group)
  stat.circus.<pid>      circusd itself (name "circusd"), and stat.circus, its aggregate
  stat.sockets.<fd>      one listening socket: name, address, queued (accept-queue depth), backlog
  stat.sockets           addresses [list], reads/queued (totals)
Work is done only for topics someone subscribed to: XPUB hands us the subscriptions, so with nobody
listening a tick costs one non-blocking recv. Never blocks the loop for long (yields every few processes)
and never waits on a slow subscriber (NOBLOCK send; a full queue drops and counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import zmq

from circus_linux.control.auth import IpcPermissions, ServerSecurity, bind_secured, rebind
from circus_linux.control.publisher import sync_context
from circus_linux.control.zmqwait import readable

if TYPE_CHECKING:
    from circus_linux.runtime.stats import StatsCollector

log = logging.getLogger(__name__)

# Processes sampled between two yields to the loop: ~2 ms of psutil work, so commands never wait long.
YIELD_EVERY = 32


class StatsStream:
    """Samples the runtime every ``interval`` s while someone subscribes, and publishes `stat.*`.

    ``process_interval`` (>= interval) is how often per-process topics are recomputed: psutil per worker
    is the whole cost, while the aggregates come from a few cgroup files per watcher.
    """

    def __init__(
        self,
        arbiter: Any,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        interval: float = 1.0,
        process_interval: float = 1.0,
        hwm: int = 10000,
        ipc_perms: IpcPermissions | None = None,
        security: ServerSecurity | None = None,
    ) -> None:
        self.arbiter = arbiter
        self.endpoint = endpoint
        self.interval = interval
        self.process_interval = max(process_interval, interval)
        self._context = sync_context(context)
        self._hwm = hwm
        self._ipc_perms = ipc_perms or IpcPermissions(mode=0o600)
        self._security = security  # CURVE: only authorized subscribers receive (and subscribe)
        self._socket: zmq.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._subs: set[bytes] = set()
        self._last_procs = 0.0
        self._collector: StatsCollector | None = None
        self.ticks = 0  # ticks that did work
        self.idle_ticks = 0  # ticks skipped: nobody subscribed
        self.sent = 0
        self.dropped = 0

    @property
    def collector(self) -> StatsCollector:
        # Built on the first sample: the stats code (psutil, the cgroup readers) is not imported by a
        # circusd that nobody ever subscribes to (~25 ms of cold start, ~1.5 MiB of RSS).
        if self._collector is None:
            from circus_linux.runtime.stats import collector_for

            self._collector = collector_for(self.arbiter)
        return self._collector

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind and start the sampling task (inside the running loop); raises zmq.ZMQError/OSError on bind."""
        sock = self._context.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        try:
            bind_secured(sock, self.endpoint, self._ipc_perms, self._security)
        except (zmq.ZMQError, OSError):
            sock.close()
            raise
        self._socket = sock
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stats-stream")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def drop_subscribers(self) -> None:
        """Close every subscriber's connection; each reconnects and authenticates again (auth.rebind).
        Their subscriptions come back with them. Should the address be taken meanwhile, the stream closes
        and says why."""
        if self._socket is None:
            return
        try:
            await rebind(self._socket, self._ipc_perms, self._security)
        except (zmq.ZMQError, OSError, TimeoutError) as exc:
            log.error("stats stream %s closed: cannot bind it again after dropping its subscribers: %s",
                      self.endpoint, exc)  # fmt: skip
            await self.close()

    # ------------------------------------------------------------------ subscriptions
    def _read_subscriptions(self) -> None:
        """Drain XPUB's subscription messages: 1 + prefix subscribes, 0 + prefix unsubscribes."""
        assert self._socket is not None
        while True:
            try:
                msg = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg:
                continue
            if msg[0] == 1:
                self._subs.add(msg[1:])
            elif msg[0] == 0:
                self._subs.discard(msg[1:])

    @property
    def subscriptions(self) -> frozenset[bytes]:
        return frozenset(self._subs)

    def wants(self, topic: str) -> bool:
        """True if a subscriber's prefix matches ``topic`` (zmq's own rule) or some topic under it."""
        t = topic.encode()
        return any(t.startswith(s) or s.startswith(t + b".") for s in self._subs)

    def _wants_exact(self, topic: str) -> bool:
        t = topic.encode()
        return any(t.startswith(s) for s in self._subs)

    # ------------------------------------------------------------------ publishing
    def _send(self, topic: str, body: dict[str, Any]) -> None:
        if self._socket is None or not self._wants_exact(topic):
            return
        body.setdefault("time", time.time())
        try:
            self._socket.send_multipart([topic.encode(), json.dumps(body, default=str).encode()], zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.tick()
            except Exception:  # a failing sample must not end the stream (nor die unseen in a task)
                log.exception("stats stream: tick failed")
            if not self._subs and self._socket is not None:
                # Nobody listens: sleep until a subscription arrives instead of waking every interval.
                await self._until_subscribed()
                next_at = loop.time()
                continue
            next_at += self.interval
            delay = next_at - loop.time()
            if delay < 0:  # a tick overran: skip the missed ones instead of bursting
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)

    async def _until_subscribed(self) -> None:
        """Wait for a message on the XPUB socket (a subscription), without polling."""
        assert self._socket is not None
        await readable(self._socket)
        self._read_subscriptions()

    async def tick(self) -> None:
        """One round: read subscriptions, then sample and publish only what someone wants."""
        if self._socket is None:
            return
        self._read_subscriptions()
        if not self._subs:
            self.idle_ticks += 1
            return
        self.ticks += 1
        now = time.monotonic()
        per_process = now - self._last_procs >= self.process_interval - 0.05
        if per_process:
            self._last_procs = now
        col = self.collector
        done = 0
        live: list[int] = []
        for watcher in list(self.arbiter.watchers.values()):
            name = watcher.name
            if not self.wants(f"stat.{name}"):
                continue
            infos: dict[int, dict[str, Any]] = {}
            kids = col.children_of(watcher) if per_process else {}
            # The children's psutil objects are kept too: pruned, the next sample's cpu_percent would be
            # a first call again, which psutil answers 0.0 (a child burning a CPU showed 0% here).
            live.extend(pid for pids in kids.values() for pid in pids)
            for p in watcher.processes():
                live.append(p.pid)
                if per_process:
                    info = col.process(
                        p.pid, p.started, p.wid, getattr(p, "cmdline", None), kids.get(p.pid, ())
                    )
                    done += 1
                    if done % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                else:
                    info = col.last(p.pid)
                if info is None:
                    continue
                infos[p.pid] = info
                if per_process:
                    self._send(f"stat.{name}.{p.pid}", dict(info, name=name))
            pool = col.aggregate(watcher, infos)
            pool["restarts"] = getattr(watcher, "restarts", None)  # circus-top's RESTARTS column
            self._send(f"stat.{name}", pool)
        if per_process:
            # Only the ticks that sample processes know every live one, the workers' children included:
            # pruned between, a child would be new at each sample, and psutil answers a first cpu_percent
            # with 0.0.
            col.prune([*live, os.getpid()])
        if self.wants("stat.circus"):
            me = col.circus()
            if me is not None:
                self._send(f"stat.circus.{me['pid']}", dict(me))
                self._send(
                    "stat.circus",
                    {
                        "name": "circus",
                        "pid": [me["pid"]],
                        "cpu": me["cpu"],
                        "mem": me["mem"],
                        "age": me["age"],
                    },
                )
        if self.wants("stat.sockets"):
            entries = col.socket_entries()
            per, total = await asyncio.to_thread(col.sockets, entries) if entries else ({}, {})
            for fd, body in per.items():
                self._send(f"stat.sockets.{fd}", body)
            if per:
                self._send("stat.sockets", total)
