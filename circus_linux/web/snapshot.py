"""One sample of circusd's state (watchers, processes, sockets) and the spawn histogram; pure data."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

# Spawn latency (spawn call to return) is sub-millisecond to tens of ms: buckets in seconds.
SPAWN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class ProcSample:
    pid: int
    wid: int | None
    cpu: float  # percent of one core
    mem: float  # percent of RAM
    rss: int  # bytes
    age: float  # seconds


@dataclass(frozen=True)
class WatcherSample:
    name: str
    status: str
    numprocesses: int  # desired
    procs: tuple[ProcSample, ...]
    restarts: int | None = None
    oom_kills: int | None = None
    exec_errors: int | None = None

    @property
    def cpu(self) -> float:
        return sum(p.cpu for p in self.procs)

    @property
    def rss(self) -> int:
        return sum(p.rss for p in self.procs)


@dataclass(frozen=True)
class SocketSample:
    name: str
    queued: int | None
    backlog: int | None
    address: str = ""


@dataclass(frozen=True)
class Snapshot:
    time: float
    watchers: tuple[WatcherSample, ...]
    sockets: tuple[SocketSample, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "watchers": [
                {**asdict(w), "cpu": round(w.cpu, 2), "rss": w.rss, "procs": [asdict(p) for p in w.procs]}
                for w in self.watchers
            ],
            "sockets": [asdict(s) for s in self.sockets],
        }


@dataclass
class Histogram:
    """Cumulative-bucket histogram as Prometheus exposes it; `counts[i]` counts values <= buckets[i]."""

    buckets: tuple[float, ...] = SPAWN_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        # Non-cumulative storage; render() accumulates. bisect_left: a value equal to a bound is in it.
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.buckets):
            self.counts[i] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append((bound, running))
        out.append((float("inf"), self.count))
        return out
