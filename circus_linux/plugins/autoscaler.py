"""Autoscaler: keep a watcher between min and max workers from its accept queue and CPU; wire only.

Every loop_rate seconds it reads the watcher's listening socket in `listsockets` (the `queued` field: how
many connections the kernel completed that no worker accepted yet) and, when asked to, the watcher's CPU
and its cgroup's CPU pressure in `stats`, then calls `incr`/`decr`.
Options:
  watcher (required), socket (the [socket:NAME] to watch; default: the watcher's first socket)
  min_workers (1), max_workers (4), step (1)
  queue_high (1: scale up when queued per worker is above it), queue_low (0: down when at or below it)
  cpu_high / cpu_low (average % of one core per worker; unset: CPU is not used)
  max_cpu_pressure (PSI `cgroup.cpu_pressure.some.avg10`, %: scale up when above it; unset: not used),
  min_cpu_pressure (the low-water mark: scale down only when at or below it; default max_cpu_pressure / 2)
  loop_rate (1 s), cooldown (5 s between two decisions)
A plugin cannot publish on circusd's PUB socket: the `incr`/`decr` bring the usual updated/spawn/kill
events, which carry no reason. The reason of every decision is logged and sent as the plugin's STATUS=
(`stats plugin:NAME` shows it as `notify_status`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from circus_linux.plugins.base import CircusPlugin, Frame, option

log = logging.getLogger("circus_linux.plugins.autoscaler")


@dataclass(frozen=True)
class Reading:
    workers: int
    queued: int | None  # None: no socket, or circusd does not report queues
    cpu: float | None  # average % per worker; None when not measured
    cpu_pressure: float | None = None  # the cgroup's PSI cpu some avg10 (%); None when not measured


@dataclass(frozen=True)
class Decision:
    delta: int  # +n, -n or 0
    reason: str


@dataclass(frozen=True)
class Policy:
    min_workers: int = 1
    max_workers: int = 4
    step: int = 1
    queue_high: float = 1.0
    queue_low: float = 0.0
    cpu_high: float | None = None
    cpu_low: float | None = None
    max_cpu_pressure: float | None = None
    min_cpu_pressure: float | None = None

    @property
    def pressure_low(self) -> float | None:
        if self.min_cpu_pressure is not None:
            return self.min_cpu_pressure
        return None if self.max_cpu_pressure is None else self.max_cpu_pressure / 2

    def decide(self, r: Reading) -> Decision:
        """Pure: one reading in, one decision out (cool-down is the caller's)."""
        n = r.workers
        if n < self.min_workers:
            return Decision(self.min_workers - n, f"below min_workers={self.min_workers}")
        if n > self.max_workers:
            return Decision(self.max_workers - n, f"above max_workers={self.max_workers}")
        per_worker = None if r.queued is None else r.queued / max(n, 1)
        hot = []
        if per_worker is not None and per_worker > self.queue_high:
            hot.append(f"queued={r.queued} ({per_worker:.1f}/worker > {self.queue_high:g})")
        if self.cpu_high is not None and r.cpu is not None and r.cpu > self.cpu_high:
            hot.append(f"cpu={r.cpu:.0f}% > {self.cpu_high:g}%")
        pressure = r.cpu_pressure
        if self.max_cpu_pressure is not None and pressure is not None and pressure > self.max_cpu_pressure:
            hot.append(f"cpu_pressure={pressure:g}% > {self.max_cpu_pressure:g}%")
        if hot:
            up = min(self.step, self.max_workers - n)
            return Decision(up, "; ".join(hot)) if up > 0 else Decision(0, "at max_workers")
        queue_idle = per_worker is None or per_worker <= self.queue_low
        cpu_idle = self.cpu_low is None or r.cpu is None or r.cpu <= self.cpu_low
        low = self.pressure_low
        pressure_idle = low is None or pressure is None or pressure <= low
        pressure_measured = low is not None and pressure is not None
        measured = per_worker is not None or self.cpu_low is not None or pressure_measured
        if queue_idle and cpu_idle and pressure_idle and measured:
            down = min(self.step, n - self.min_workers)
            if down > 0:
                why = f"idle: queued={r.queued}, cpu={r.cpu}"
                if low is not None:
                    why += f", cpu_pressure={pressure} <= {low:g}"
                return Decision(-down, why)
        return Decision(0, "steady")


def cpu_pressure(stats: dict[str, Any]) -> float | None:
    """`cgroup.cpu_pressure.some.avg10` of a `stats` reply for one watcher, or None when not served."""
    cg = stats.get("cgroup")
    psi = cg.get("cpu_pressure") if isinstance(cg, dict) else None
    some = psi.get("some") if isinstance(psi, dict) else None
    value = some.get("avg10") if isinstance(some, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Autoscaler(CircusPlugin):
    name = "autoscaler"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watcher = option(self.config, "watcher", None)
        if not self.watcher:
            raise ValueError("autoscaler needs watcher = NAME")
        self.socket = option(self.config, "socket", None)
        self.loop_rate = option(self.config, "loop_rate", 1.0, float)
        self.cooldown = option(self.config, "cooldown", 5.0, float)
        self.policy = Policy(
            min_workers=option(self.config, "min_workers", 1, int),
            max_workers=option(self.config, "max_workers", 4, int),
            step=max(option(self.config, "step", 1, int), 1),
            queue_high=option(self.config, "queue_high", 1.0, float),
            queue_low=option(self.config, "queue_low", 0.0, float),
            cpu_high=option(self.config, "cpu_high", None, float),
            cpu_low=option(self.config, "cpu_low", None, float),
            max_cpu_pressure=option(self.config, "max_cpu_pressure", None, float),
            min_cpu_pressure=option(self.config, "min_cpu_pressure", None, float),
        )
        self.last_change = float("-inf")
        self.decisions: list[Decision] = []
        self._warned_no_queue = False
        self._warned_no_socket = False
        self._warned_no_pressure = False

    def handle_init(self) -> None:
        self.loop.call_every(self.loop_rate, self.tick, first=0)

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        """Decisions are periodic; events are not needed."""

    def _socket_name(self) -> str | None:
        if self.socket:
            return str(self.socket)
        opts = self.call("options", name=self.watcher).get("options") or {}
        raw = opts.get("sockets")
        names = raw if isinstance(raw, list | tuple) else str(raw or "").replace(",", " ").split()
        if names:
            self.socket = str(names[0])
        elif not self._warned_no_socket:
            self._warned_no_socket = True
            log.warning(
                "autoscaler: %s uses no socket (none named in `sockets` or as $(circus.sockets.NAME) in its "
                "cmd/args): no accept-queue depth; set `socket =` in the plugin's section",
                self.watcher,
            )
        return self.socket

    def read(self) -> Reading | None:
        reply = self.call("numprocesses", name=self.watcher)
        if reply.get("status") != "ok":
            log.warning("autoscaler: %s: %s", self.watcher, reply.get("reason"))
            return None
        workers = int(reply.get("numprocesses", 0))
        queued: int | None = None
        name = self._socket_name()
        if name:
            for entry in self.call("listsockets").get("sockets") or []:
                if entry.get("name") == name:
                    if entry.get("queued") is None and not self._warned_no_queue:
                        self._warned_no_queue = True
                        log.warning("autoscaler: listsockets gives no accept-queue depth for %s", name)
                    queued = entry.get("queued")
        cpu: float | None = None
        pressure: float | None = None
        want_cpu = self.policy.cpu_high is not None or self.policy.cpu_low is not None
        if want_cpu or self.policy.max_cpu_pressure is not None:
            stats = self.call("stats", name=self.watcher)
            if want_cpu:
                info = stats.get("info") or {}
                cpus = [float(p.get("cpu") or 0.0) for p in info.values() if isinstance(p, dict)]
                cpu = sum(cpus) / len(cpus) if cpus else 0.0
            pressure = cpu_pressure(stats)
            if pressure is None and self.policy.max_cpu_pressure is not None and not self._warned_no_pressure:
                self._warned_no_pressure = True
                log.warning("autoscaler: stats gives no cgroup cpu_pressure for %s (no PSI?)", self.watcher)
        return Reading(workers, None if queued is None else int(queued), cpu, pressure)

    def tick(self) -> None:
        reading = self.read()
        if reading is None:
            return
        decision = self.policy.decide(reading)
        if decision.delta == 0:
            return
        now = time.monotonic()
        if now - self.last_change < self.cooldown:
            return
        self.last_change = now
        self.decisions.append(decision)
        command = "incr" if decision.delta > 0 else "decr"
        reply = self.call(command, name=self.watcher, nb=abs(decision.delta))
        outcome = reply.get("numprocesses", reply.get("reason"))
        why = decision.reason
        log.info("autoscaler: %s %s %+d -> %s (%s)", self.watcher, command, decision.delta, outcome, why)
        # The events of incr/decr carry no reason: STATUS= makes it visible in `stats plugin:NAME`.
        self.set_status(f"{self.watcher} {command} {decision.delta:+d} -> {outcome} ({why})")
