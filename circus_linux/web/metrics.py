"""Prometheus text exposition (format 0.0.4) of a Snapshot and the spawn histograms; pure, no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from circus_linux.web.snapshot import Histogram, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, object]


def _escape_label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        rows = list(samples)
        # A family with no sample is still declared, so dashboards see the metric exists.
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, hists: Mapping[str, Histogram], label: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} histogram")
        for key, hist in sorted(hists.items()):
            for bound, n in hist.cumulative():
                le = "+Inf" if math.isinf(bound) else repr(bound)
                self.lines.append(f"{name}_bucket{_labels({label: key, 'le': le})} {n}")
            self.lines.append(f"{name}_sum{_labels({label: key})} {_number(hist.total)}")
            self.lines.append(f"{name}_count{_labels({label: key})} {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(snap: Snapshot, spawn: Mapping[str, Histogram]) -> str:
    """The whole /metrics body: names are documented in docs/METRICS.md."""
    w = _Writer()
    ws = snap.watchers
    w.family(
        "circus_watcher_active",
        "gauge",
        "1 when the watcher is active (running its pool), 0 otherwise.",
        (({"watcher": x.name}, 1.0 if x.status == "active" else 0.0) for x in ws),
    )
    w.family(
        "circus_watcher_desired_processes",
        "gauge",
        "numprocesses: the pool size the watcher aims for.",
        (({"watcher": x.name}, x.numprocesses) for x in ws),
    )
    w.family(
        "circus_watcher_processes",
        "gauge",
        "Live worker processes of the watcher.",
        (({"watcher": x.name}, len(x.procs)) for x in ws),
    )
    w.family(
        "circus_watcher_cpu_percent",
        "gauge",
        "Sum of the workers' CPU usage, percent of one core.",
        (({"watcher": x.name}, x.cpu) for x in ws),
    )
    w.family(
        "circus_watcher_memory_rss_bytes",
        "gauge",
        "Sum of the workers' resident set sizes.",
        (({"watcher": x.name}, x.rss) for x in ws),
    )
    w.family(
        "circus_watcher_restarts_total",
        "counter",
        "Workers respawned after an unexpected exit (plus restart commands) since circusd started.",
        (({"watcher": x.name}, x.restarts) for x in ws if x.restarts is not None),
    )
    w.family(
        "circus_watcher_exec_errors_total",
        "counter",
        "Spawns that failed before the worker's program ran (exec errors).",
        (({"watcher": x.name}, x.exec_errors) for x in ws if x.exec_errors is not None),
    )
    w.family(
        "circus_watcher_oom_kills_total",
        "counter",
        "Processes of the watcher's cgroup killed by the OOM killer (memory.events oom_kill).",
        (({"watcher": x.name}, x.oom_kills) for x in ws if x.oom_kills is not None),
    )
    procs = [(x.name, p) for x in ws for p in x.procs]
    w.family(
        "circus_process_cpu_percent",
        "gauge",
        "CPU usage of one worker, percent of one core.",
        (({"watcher": n, "wid": p.wid}, p.cpu) for n, p in procs),
    )
    w.family(
        "circus_process_memory_rss_bytes",
        "gauge",
        "Resident set size of one worker.",
        (({"watcher": n, "wid": p.wid}, p.rss) for n, p in procs),
    )
    w.family(
        "circus_process_age_seconds",
        "gauge",
        "Seconds since the worker was spawned.",
        (({"watcher": n, "wid": p.wid}, p.age) for n, p in procs),
    )
    w.family(
        "circus_process_pid",
        "gauge",
        "The pid of the worker holding this wid (changes on respawn).",
        (({"watcher": n, "wid": p.wid}, p.pid) for n, p in procs),
    )
    w.histogram(
        "circus_spawn_duration_seconds",
        "Time from the spawn call to its return (the worker's execve done), per watcher.",
        spawn,
        "watcher",
    )
    w.family(
        "circus_socket_queued_connections",
        "gauge",
        "Connections waiting in the listening socket's accept queue (sock_diag).",
        (({"socket": s.name}, s.queued) for s in snap.sockets if s.queued is not None),
    )
    w.family(
        "circus_socket_backlog",
        "gauge",
        "The listening socket's accept-queue limit.",
        (({"socket": s.name}, s.backlog) for s in snap.sockets if s.backlog is not None),
    )
    return w.text()
