"""ResourceWatcher: restart a watcher whose workers use too much (or too little) CPU or memory; wire only.

Options (Circus's): watcher (the watcher to observe; `service` is the old name), loop_rate (60 s),
max_cpu / min_cpu (% of one core, per process), max_mem / min_mem (% of RAM, or bytes with a unit:
`100M`, `1G`, per process), health_threshold (75: the watcher's average CPU and memory %), max_count (3:
consecutive bad looks before `restart`). Measures come from the `stats` command (psutil per process);
`watcher_totals = true` compares the sums over the watcher (what its cgroup accounts) instead.
"""

from __future__ import annotations

import logging
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


class ResourceWatcher(CircusPlugin):
    name = "resource_watcher"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watcher = option(self.config, "watcher", None) or option(self.config, "service", None)
        if not self.watcher:
            raise ValueError("resource_watcher needs watcher = NAME")
        self.loop_rate = option(self.config, "loop_rate", 60.0, float)
        self.max_cpu = option(self.config, "max_cpu", None, float)
        self.min_cpu = option(self.config, "min_cpu", None, float)
        self.max_mem = parse_mem(self.config.get("max_mem"))
        self.min_mem = parse_mem(self.config.get("min_mem"))
        self.health_threshold = option(self.config, "health_threshold", 75.0, float)
        self.max_count = option(self.config, "max_count", 3, int)
        self.totals = option(self.config, "watcher_totals", False, bool)
        self.counts: dict[str, int] = {}

    def handle_init(self) -> None:
        self.loop.call_every(self.loop_rate, self.look_after)

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        """Only the periodic look matters."""

    def samples(self) -> list[Sample]:
        reply = self.call("stats", name=self.watcher)
        out: list[Sample] = []
        for info in (reply.get("info") or {}).values():
            if isinstance(info, dict):
                out.append(
                    Sample(
                        float(info.get("cpu") or 0), float(info.get("mem") or 0), int(info.get("rss") or 0)
                    )
                )
        if self.totals and out:
            return [Sample(sum(s.cpu for s in out), sum(s.mem for s in out), sum(s.rss for s in out))]
        return out

    @staticmethod
    def _mem_value(sample: Sample, limit: MemLimit) -> float:
        return sample.mem if limit.percent else float(sample.rss)

    def verdicts(self, samples: list[Sample]) -> dict[str, bool]:
        """Which rules are broken by this look (pure: the tests feed it samples)."""
        if not samples:
            return {}
        out = {
            "max_cpu": self.max_cpu is not None and max(s.cpu for s in samples) > self.max_cpu,
            "min_cpu": self.min_cpu is not None and min(s.cpu for s in samples) < self.min_cpu,
            "max_mem": self.max_mem is not None
            and max(self._mem_value(s, self.max_mem) for s in samples) > self.max_mem.value,
            "min_mem": self.min_mem is not None
            and min(self._mem_value(s, self.min_mem) for s in samples) < self.min_mem.value,
        }
        avg_cpu = sum(s.cpu for s in samples) / len(samples)
        avg_mem = sum(s.mem for s in samples) / len(samples)
        out["health"] = avg_cpu > self.health_threshold or avg_mem > self.health_threshold
        return out

    def look_after(self) -> None:
        for rule, broken in self.verdicts(self.samples()).items():
            self.counts[rule] = self.counts.get(rule, 0) + 1 if broken else 0
            if self.counts[rule] > self.max_count:
                log.info(
                    "resource_watcher: %s broke %s %d times: restarting it",
                    self.watcher,
                    rule,
                    self.counts[rule],
                )
                self.counts.clear()
                self.cast("restart", name=self.watcher)
                return
