"""StatsdEmitter and FullStats: Circus events and stats sent to a statsd server over UDP; wire only.

StatsdEmitter options: host (localhost), port (8125), prefix (default `circus.<application_name>.watcher`,
application_name defaulting to `app`), sample_rate (1.0). Every event becomes a counter
`<prefix>.<watcher>.<event>`.
FullStats adds loop_rate (60 s): every period it asks `stats` and sends, per watcher (plugin watchers
skipped) Circus's gauges `<prefix>._stats.<watcher>.watchers_num` (its live processes), and when it has
any `.cpu_max` / `.cpu_sum` (%), `.mem_pct_max` / `.mem_pct_sum` (% of RAM), `.mem_max` / `.mem_sum`
(RSS bytes), or the counter `_stats.error` when `stats` fails; as Circus's, it counts no events (that is
StatsdEmitter's job: both running must not count them twice). Ours besides, under names Circus does not
use: `<prefix>.<watcher>.cpu` / `.memory` (sums, %) / `.processes`, `_stats.watchers_num`,
`_stats.processes_num`.
"""

from __future__ import annotations

import logging
import random
import socket
from typing import Any

from circus_linux.plugins.base import CircusPlugin, Frame, option

log = logging.getLogger("circus_linux.plugins.statsd")


class StatsdClient:
    """The statsd line protocol (`name:value|type[|@rate]`) over an unconnected UDP socket; never raises."""

    def __init__(self, host: str = "localhost", port: int = 8125, prefix: str = "", sample_rate: float = 1.0):
        self.address = (host, port)
        self.prefix = prefix.rstrip(".")
        self.sample_rate = sample_rate
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.sent = 0

    def _name(self, name: str) -> str:
        # statsd separates fields with ':' and '|': a watcher named plugin:x must not break the line.
        full = f"{self.prefix}.{name}" if self.prefix else name
        return full.replace(":", "_").replace("|", "_").replace(" ", "_")

    def send(self, name: str, value: float | int, kind: str, rate: float | None = None) -> None:
        rate = self.sample_rate if rate is None else rate
        if rate < 1.0 and random.random() > rate:
            return
        line = f"{self._name(name)}:{value}|{kind}" + (f"|@{rate}" if rate < 1.0 else "")
        try:
            self.socket.sendto(line.encode(), self.address)
            self.sent += 1
        except OSError as exc:  # no route, buffer full: stats are best effort
            log.debug("statsd: %s not sent: %s", line, exc)

    def increment(self, name: str, value: int = 1, rate: float | None = None) -> None:
        self.send(name, value, "c", rate)

    def decrement(self, name: str, value: int = 1, rate: float | None = None) -> None:
        self.send(name, -value, "c", rate)

    def gauge(self, name: str, value: float | int, rate: float | None = None) -> None:
        self.send(name, value, "g", rate)

    def timed(self, name: str, milliseconds: float, rate: float | None = None) -> None:
        self.send(name, round(milliseconds, 3), "ms", rate)

    def close(self) -> None:
        self.socket.close()


class StatsdEmitter(CircusPlugin):
    name = "statsd"
    default_app_name = "app"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = option(self.config, "application_name", self.default_app_name)
        prefix = option(self.config, "prefix", f"circus.{self.app}.watcher")
        self.statsd = StatsdClient(
            host=option(self.config, "host", "localhost"),
            port=option(self.config, "port", 8125, int),
            prefix=prefix,
            sample_rate=option(self.config, "sample_rate", 1.0, float),
        )

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        watcher, action, _msg = self.split_data(data)
        self.statsd.increment(f"{watcher}.{action}")

    def handle_stop(self) -> None:
        self.statsd.close()


class FullStats(StatsdEmitter):
    name = "full_stats"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loop_rate = option(self.config, "loop_rate", 60.0, float)

    def handle_init(self) -> None:
        self.loop.call_every(self.loop_rate, self.send_metrics)

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        """No event counters (Circus's FullStats is an observer): StatsdEmitter sends those."""

    def send_metrics(self) -> None:
        reply = self.call("stats")
        infos = reply.get("infos")
        if not isinstance(infos, dict):
            log.warning("full_stats: stats failed: %s", reply.get("reason"))
            self.statsd.increment("_stats.error")
            return
        total = watchers = 0
        for watcher, procs in infos.items():
            if watcher.startswith("plugin:"):  # Circus ignores plugins
                continue
            watchers += 1
            # An exited process is a string ("No such process (stopped?)"): not measured.
            live = [info for info in (procs or {}).values() if isinstance(info, dict)]
            cpus = [float(info.get("cpu") or 0.0) for info in live]
            mems = [float(info.get("mem") or 0.0) for info in live]
            rss = [int(info.get("rss") or 0) for info in live]
            total += len(live)
            # Circus's names, which users' dashboards are built on.
            self.statsd.gauge(f"_stats.{watcher}.watchers_num", len(live))
            if live:
                self.statsd.gauge(f"_stats.{watcher}.cpu_max", max(cpus))
                self.statsd.gauge(f"_stats.{watcher}.cpu_sum", round(sum(cpus), 3))
                self.statsd.gauge(f"_stats.{watcher}.mem_pct_max", max(mems))
                self.statsd.gauge(f"_stats.{watcher}.mem_pct_sum", round(sum(mems), 3))
                self.statsd.gauge(f"_stats.{watcher}.mem_max", max(rss))
                self.statsd.gauge(f"_stats.{watcher}.mem_sum", sum(rss))
            # Ours, under names Circus does not use.
            self.statsd.gauge(f"{watcher}.cpu", round(sum(cpus), 3))
            self.statsd.gauge(f"{watcher}.memory", round(sum(mems), 3))
            self.statsd.gauge(f"{watcher}.processes", len(live))
        self.statsd.gauge("_stats.watchers_num", watchers)
        self.statsd.gauge("_stats.processes_num", total)
