"""Benchmark entry point: circusd against the posix_spawn+pidfd floor; prints medians, ranges and ratios.

Usage: .venv/bin/python bench/run.py [--workers 50,175,500] [--repeat 5] [--quick] [--json FILE]
       .venv/bin/python bench/run.py --peers [compare.py options]   (also Circus 0.19 and supervisord)
It owns every process and cgroup it creates and removes them all before it exits, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cleanup
import scenarios
from circus_target import Circusd, CircusdFailed, prepare_bytecode
from figures import cell, percentile
from floor import Floor

WORKER_ARGV = ["/bin/sleep", "100000"]
WORKER_COMM = "sleep"

FLOOR, CIRCUS = "floor", "circus"


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    digits: int
    goal: str = ""
    # goal check on (floor median, circus median) -> met?
    check: Callable[[float | None, float], bool] | None = None


def _ratio_ok(limit: float) -> Callable[[float | None, float], bool]:
    return lambda f, c: f is not None and f > 0 and c / f <= limit


METRICS = [
    Metric("cold_first", "cold start -> first worker running", "ms", 1),
    Metric("cold_running", "cold start -> N running", "ms", 1, "<= 1.5x floor", _ratio_ok(1.5)),
    Metric("cold_spawn", "cold start: first -> N running", "ms", 1),
    Metric("cold_ready", "cold start -> READY=1", "ms", 1),
    Metric("mass_kill", "mass kill -> N replaced", "ms", 1, "<= 1.5x floor", _ratio_ok(1.5)),
    Metric("single_median", "single kill -> replaced, median", "ms", 2, "< 10 ms", lambda f, c: c < 10.0),
    Metric("single_p90", "single kill -> replaced, p90", "ms", 2, "< 10 ms", lambda f, c: c < 10.0),
    Metric("idle_ticks", "idle CPU (utime+stime)", "%", 3, "<= 0.05 %", lambda f, c: c <= 0.05),
    Metric("idle_ns", "idle CPU (schedstat)", "%", 4, "<= 0.05 %", lambda f, c: c <= 0.05),
    Metric("rss", "RSS of the supervisor", "MiB", 1),
]


@dataclass
class Series:
    """Per-repeat values of every metric for one (N, target)."""

    values: dict[str, list[float]] = field(default_factory=dict)
    kills: list[float] = field(default_factory=list)  # every single-kill sample, all repeats
    error: str | None = None

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.values.setdefault(key, []).append(value)



def run_once(target: scenarios.Target, n: int, args: argparse.Namespace, series: Series) -> None:
    timeout = 60.0 + 0.2 * n
    pool = scenarios.Pool(target, WORKER_COMM)
    try:
        cs = scenarios.cold_start(target, pool, n, timeout)
        idle = scenarios.idle(target, args.idle)
        mk = scenarios.mass_kill(pool, n, timeout)
        kills = scenarios.single_kills(pool, args.kills, 10.0)
    finally:
        target.stop()
    series.add("cold_first", cs.first_s * 1e3)
    series.add("cold_running", cs.running_s * 1e3)
    series.add("cold_spawn", (cs.running_s - cs.first_s) * 1e3)
    series.add("cold_ready", None if cs.ready_s is None else cs.ready_s * 1e3)
    series.add("mass_kill", mk * 1e3)
    ms = [k * 1e3 for k in kills]
    series.kills.extend(ms)
    series.add("single_median", statistics.median(ms))
    series.add("single_p90", percentile(ms, 90))
    series.add("idle_ticks", idle.cpu_pct_ticks)
    series.add("idle_ns", idle.cpu_pct_ns)
    series.add("rss", idle.rss_mib)



def render(n: int, results: dict[str, Series], repeat: int) -> str:
    fl, ci = results[FLOOR], results[CIRCUS]
    head = [f"scenario (N={n}, {repeat} runs)", "unit", "floor", "circus-linux", "ratio", "goal", "met"]
    rows = [head]
    for m in METRICS:
        f_vals, c_vals = fl.values.get(m.key), ci.values.get(m.key)
        f_med = statistics.median(f_vals) if f_vals else None
        c_med = statistics.median(c_vals) if c_vals else None
        ratio = f"{c_med / f_med:.2f}x" if f_med and c_med is not None else "-"
        met = "-"
        if m.check is not None and c_med is not None:
            met = "yes" if m.check(f_med, c_med) else "NO"
        rows.append([m.title, m.unit, cell(f_vals, m.digits), cell(c_vals, m.digits), ratio, m.goal, met])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for label, s in ((FLOOR, fl), (CIRCUS, ci)):
        if s.kills:
            lines.append(
                f"{label}: all {len(s.kills)} single kills pooled: "
                f"median {statistics.median(s.kills):.2f} ms, "
                f"p90 {percentile(s.kills, 90):.2f} ms, max {max(s.kills):.2f} ms"
            )
        if s.error:
            lines.append(f"{label}: FAILED: {s.error}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", help="comma-separated pool sizes (default 500)")
    p.add_argument("--repeat", type=int, help="runs per pool size and target (default 5)")
    p.add_argument("--kills", type=int, help="single kills per run (default 20)")
    p.add_argument("--idle", type=float, help="idle CPU window in seconds (default 10)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run (< 60 s): 50 workers, 1 run, 5 kills, 2 s idle"
    )
    p.add_argument("--json", help="also write every raw figure to this file")
    args = p.parse_args(argv)
    # Explicit options win over both sets of defaults.
    defaults = ("50", 1, 5, 2.0) if args.quick else ("500", 5, 20, 10.0)
    for name, value in zip(("workers", "repeat", "kills", "idle"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = [int(x) for x in args.workers.split(",") if x.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1 or args.kills < 1 or args.idle <= 0:
        p.error("--workers, --repeat, --kills and --idle must be positive")
    return args


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every finally: block stops its supervisor and cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--peers" in argv:  # the comparison with Circus 0.19 and supervisord: bench/compare.py
        import compare

        return compare.main([a for a in argv if a != "--peers"], prog="bench/run.py --peers")
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    cleanup.become_subreaper()
    cgroup = f"{cleanup.PREFIX}{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="circus-bench-"))
    command = " ".join([".venv/bin/python", "bench/run.py", *map(shlex.quote, sys.argv[1:])])
    print(f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}  {command}")
    print(f"# {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}")
    print(f"# {prepare_bytecode()}")
    print(f"# workers: {shlex.join(WORKER_ARGV)}; cgroup root /{cgroup}; cells: median [min-max] of the runs")
    print("# load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    left_over = cleanup.sweep_cgroups(cgroup)  # stale roots of interrupted earlier runs
    raw: dict[str, dict[str, dict[str, object]]] = {}
    failed = False
    try:
        for n in args.sizes:
            results = {FLOOR: Series(), CIRCUS: Series()}
            for i in range(args.repeat):
                floor = Floor(WORKER_ARGV)
                circus = Circusd(WORKER_ARGV, tmp, cgroup)
                for label, target in ((FLOOR, floor), (CIRCUS, circus)):
                    s = results[label]
                    if s.error:
                        continue
                    t = time.monotonic()
                    try:
                        run_once(target, n, args, s)
                    except (scenarios.Timeout, CircusdFailed) as exc:
                        s.error = str(exc)
                        if isinstance(target, Circusd):
                            s.error += "\n" + target.log_tail()
                        failed = True
                    finally:
                        cleanup.kill_own_children()
                        left_over = cleanup.sweep_cgroups(cgroup)
                    took = time.monotonic() - t
                    print(f"#   N={n} run {i + 1}/{args.repeat} {label}: {took:.1f} s", flush=True)
            print()
            print(render(n, results, args.repeat))
            print(flush=True)
            raw[str(n)] = {
                k: {"values": v.values, "kills_ms": v.kills, "error": v.error} for k, v in results.items()
            }
    finally:
        cleanup.kill_own_children()
        left_over = cleanup.sweep_cgroups(cgroup)
        shutil.rmtree(tmp, ignore_errors=True)
    print("# load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if left_over:
        print(f"WARNING: cgroups not removed: {', '.join(left_over)}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "results": raw}, indent=1))
    return 1 if failed or left_over else 0


if __name__ == "__main__":
    raise SystemExit(main())
