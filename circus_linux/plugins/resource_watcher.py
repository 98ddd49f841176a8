"""ResourceWatcher: restart a watcher that uses too much (or too little) CPU or memory; wire only.

Options (Circus's): watcher (the watcher to observe; `service` is the old name), loop_rate (60 s),
max_cpu (90) / min_cpu (% of one CPU; a look breaks min_cpu at or below it, `<=` as in Circus), max_mem
(90) / min_mem (% of RAM, or bytes with a unit: `100M`, `1G`), health_threshold (75: Circus's score,
(the highest worker CPU + the highest worker mem %) / 2), max_count (3: a rule broken on more than
max_count consecutive looks means `restart`). 0 turns max_cpu, max_mem or health_threshold off.
Ours: cgroup (true), watcher_totals (false).

Which figure each rule compares, per look (the `stats` reply for the watcher):
- CPU: the watcher's cgroup as a whole, `cgroup.cpu_usage_usec` differenced over the time since the
  previous look (workers and their children, every cycle counted); without that figure, each worker's
  psutil `cpu` as in Circus (or their sum with `watcher_totals = true`).
- memory: the cgroup's `memory_current` (page cache included); without it (no memory controller, as on a
  hybrid host whose v2 tree has none), each worker's RSS / mem % as in Circus (or their sums).
- health_threshold: always from the workers' figures, as in Circus.
- max_cpu and max_mem left at Circus's defaults (90, 90 %) are compared as in Circus, with each worker's
  figures: a pool-wide figure against a default meant for one worker would restart any busy pool. A
  value written in the section uses the cgroup's whole-watcher figure.
`cgroup = false` keeps Circus's per-process figures everywhere.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from circus_linux.plugins.base import CircusPlugin, Frame, option

log = logging.getLogger("circus_linux.plugins.resource_watcher")

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class MemLimit:
    value: float
    percent: bool  # else bytes of RSS


def parse_mem(value: Any) -> MemLimit | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().upper().removesuffix("B")
    if text.endswith("%"):
        return MemLimit(float(text[:-1]), True)
    if text and text[-1] in _UNITS:
        return MemLimit(float(text[:-1]) * _UNITS[text[-1]], False)
    return MemLimit(float(text), True)  # Circus: a bare number is a percentage


@dataclass(frozen=True)
class Sample:
    cpu: float  # %
    mem: float  # %
    rss: int  # bytes


@dataclass(frozen=True)
class CpuMark:
    """The cgroup CPU counter at one look: the next look's percentage is the difference."""

    at: float  # monotonic seconds
    usage_usec: int


@dataclass(frozen=True)
class Look:
    """What one look measured: the figures the rules compare (one per worker, or one for the watcher).

    An empty ``cpu`` means CPU was not measured this time (the first cgroup look has no baseline yet).
    """

    cpu: tuple[float, ...]
    mem: tuple[float, ...]  # % of RAM
    mem_bytes: tuple[float, ...]
    health: tuple[Sample, ...]  # per worker, for Circus's health score
    cpu_source: str = "process"  # "cgroup" or "process"
    mem_source: str = "process"

    @classmethod
    def from_samples(cls, samples: list[Sample]) -> Look:
        return cls(
            tuple(s.cpu for s in samples),
            tuple(s.mem for s in samples),
            tuple(float(s.rss) for s in samples),
            tuple(samples),
        )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def process_samples(reply: dict[str, Any]) -> list[Sample]:
    """Circus's per-process figures from a `stats` reply (exited processes are strings: skipped)."""
    out = []
    for info in (reply.get("info") or {}).values():
        if isinstance(info, dict):
            cpu, mem, rss = (_num(info.get(k)) or 0.0 for k in ("cpu", "mem", "rss"))
            out.append(Sample(cpu, mem, int(rss)))
    return out


def look_from_reply(
    reply: dict[str, Any],
    prev: CpuMark | None,
    now: float,
    total_mem: int,
    *,
    use_cgroup: bool = True,
    totals: bool = False,
) -> tuple[Look, CpuMark | None]:
    """Pure: a `stats` reply (and the previous CPU mark) in, the look and the next CPU mark out."""
    samples = process_samples(reply)
    per = [Sample(sum(s.cpu for s in samples), sum(s.mem for s in samples), sum(s.rss for s in samples))]
    base = Look.from_samples(per if totals and samples else samples)
    cpu, cpu_source = base.cpu, "process"
    mem, mem_bytes, mem_source = base.mem, base.mem_bytes, "process"
    mark: CpuMark | None = None
    cg = reply.get("cgroup") if use_cgroup else None
    if isinstance(cg, dict):
        usage = _num(cg.get("cpu_usage_usec"))
        if usage is not None:
            cpu_source, cpu = "cgroup", ()
            mark = CpuMark(now, int(usage))
            # A counter that went back means a new cgroup (the watcher was re-created): new baseline.
            if prev is not None and now > prev.at and usage >= prev.usage_usec:
                cpu = (round(100.0 * (usage - prev.usage_usec) / ((now - prev.at) * 1e6), 2),)
        current = _num(cg.get("memory_current"))
        if current is not None and total_mem > 0:
            mem_source = "cgroup"
            mem, mem_bytes = (round(100.0 * current / total_mem, 2),), (current,)
    look = Look(cpu, mem, mem_bytes, tuple(samples), cpu_source, mem_source)
    return look, mark


def _total_mem() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


class ResourceWatcher(CircusPlugin):
    name = "resource_watcher"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watcher = option(self.config, "watcher", None) or option(self.config, "service", None)
        if not self.watcher:
            raise ValueError("resource_watcher needs watcher = NAME")
        self.loop_rate = option(self.config, "loop_rate", 60.0, float)
        # Circus's defaults (max_cpu 90, max_mem 90 %), kept apart: they are compared per worker.
        self.default_max_cpu = "max_cpu" not in self.config
        self.default_max_mem = "max_mem" not in self.config
        self.max_cpu = option(self.config, "max_cpu", 90.0, float)
        self.min_cpu = option(self.config, "min_cpu", None, float)
        self.max_mem = parse_mem(self.config.get("max_mem", "90"))
        self.min_mem = parse_mem(self.config.get("min_mem"))
        self.health_threshold = option(self.config, "health_threshold", 75.0, float)
        self.max_count = option(self.config, "max_count", 3, int)
        self.totals = option(self.config, "watcher_totals", False, bool)
        self.use_cgroup = option(self.config, "cgroup", True, bool)
        self.counts: dict[str, int] = {}
        self.total_mem = _total_mem()
        self._mark: CpuMark | None = None
        self.last_look: Look | None = None

    def handle_init(self) -> None:
        self.loop.call_every(self.loop_rate, self.look_after)

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        """Only the periodic look matters."""

    def samples(self) -> list[Sample]:
        """Circus's per-process samples of the watcher (one `stats` call)."""
        return process_samples(self.call("stats", name=self.watcher))

    @staticmethod
    def _mem_values(look: Look, limit: MemLimit) -> tuple[float, ...]:
        return look.mem if limit.percent else look.mem_bytes

    def verdicts(self, look: Look | list[Sample]) -> dict[str, bool]:
        """Which rules this look breaks (pure); an unmeasured figure breaks nothing."""
        if isinstance(look, list):
            look = Look.from_samples(look)
        if not look.cpu and not look.mem and not look.health:
            return {}
        workers = Look.from_samples(list(look.health))  # Circus's figures: each worker's own
        max_cpu_values = workers.cpu if self.default_max_cpu else look.cpu
        out = {
            # Circus: `if self.max_cpu and max > max_cpu` (0 is off), `min <= min_cpu`.
            "max_cpu": bool(self.max_cpu) and bool(max_cpu_values) and max(max_cpu_values) > self.max_cpu,
            "min_cpu": self.min_cpu is not None and bool(look.cpu) and min(look.cpu) <= self.min_cpu,
        }
        max_mem_look = workers if self.default_max_mem else look
        for rule, limit, pick, source in (
            ("max_mem", self.max_mem, max, max_mem_look),
            ("min_mem", self.min_mem, min, look),
        ):
            values = self._mem_values(source, limit) if limit is not None else ()
            if limit is None or not values or (rule == "max_mem" and not limit.value):
                out[rule] = False
            elif rule == "max_mem":
                out[rule] = pick(values) > limit.value
            else:
                out[rule] = pick(values) < limit.value
        # Circus's health score: (the highest worker CPU + the highest worker mem %) / 2.
        out["health"] = (
            bool(self.health_threshold)
            and bool(look.health)
            and (max(workers.cpu) + max(workers.mem)) / 2.0 > self.health_threshold
        )
        return out

    def look(self) -> Look:
        reply = self.call("stats", name=self.watcher)
        now = time.monotonic()
        look, mark = look_from_reply(
            reply, self._mark, now, self.total_mem, use_cgroup=self.use_cgroup, totals=self.totals
        )
        self._mark = mark
        self.last_look = look
        return look

    def look_after(self) -> None:
        look = self.look()
        for rule, broken in self.verdicts(look).items():
            self.counts[rule] = self.counts.get(rule, 0) + 1 if broken else 0
            if self.counts[rule] > self.max_count:
                log.info(
                    "resource_watcher: %s broke %s %d times (cpu %s%% from %s, mem %s%% from %s): restarting",
                    self.watcher,
                    rule,
                    self.counts[rule],
                    list(look.cpu),
                    look.cpu_source,
                    list(look.mem),
                    look.mem_source,
                )
                self.counts.clear()
                self._mark = None  # the restart's own CPU must not count against the new workers
                self.cast("restart", name=self.watcher)
                return
