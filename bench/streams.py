"""Benchmark: sustained throughput of worker output via circusd to a FileStream or journald, and its CPU.

Usage: .venv/bin/python bench/streams.py [--workers 4] [--mb 64] [--line 100] [--journal-lines 50000]
                                         [--only file|journald] [--repeat 1]
                                         [--journal-modes relayed,direct]
FileStream rows: each worker writes MB/WORKERS megabytes of LINE-byte numbered lines as fast as it can
(large buffered writes); the clock runs from the first byte in the file to the last one, and circusd's CPU
is the utime+stime delta of /proc/<circusd>/stat over the same span.
journald rows (only where journald's stdout socket exists; elsewhere 'skipped: no journald'): relayed
(`stdout_stream.class = journal`: circusd reads the pipe and sends one native-protocol entry per line) and
direct (`journal-direct`: the worker's fd 1 is a journald stream socket). Each worker waits for a go file,
then writes JOURNAL_LINES lines; what journald stored is read back with journalctl (count, bytes, receive
timestamps), and the CPU of circusd and of systemd-journald is their utime+stime delta from the go to the
point where both have gone idle. journald's rate limiting drops lines: run it with RateLimitBurst=0 (see
bench/journald-in-nspawn.sh, which does this inside a throw-away container). Must not touch the host's
journald configuration itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from circus_linux.streams.journal import journald_available

# Both workers write `n` numbered lines ("<wid> <i> xxx...", line_len bytes each) in 512-line batches.
EMIT_LINES = """
out = sys.stdout.buffer
batch = []
for i in range(n):
    head = f"{wid} {i} ".encode()
    batch.append(head + b"x" * (line_len - len(head) - 1) + b"\\n")
    if len(batch) == 512:
        out.write(b"".join(batch)); batch = []
out.write(b"".join(batch)); out.flush()
"""

WORKER = """
import os, sys
line_len, total = int(sys.argv[1]), int(sys.argv[2])
wid = os.environ["CIRCUS_WID"]
n = total // line_len
""" + EMIT_LINES + """
import time
time.sleep(1000)
"""
TICK = os.sysconf("SC_CLK_TCK")

# The journald worker: announces itself, waits for the go file (so that circusd's start-up and the spawns
# are outside the measured window), writes its lines in 512-line batches, then leaves a done file.
JOURNAL_WORKER = """
import os, sys, time
line_len, n, tmp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
wid = os.environ["CIRCUS_WID"]
open(f"{tmp}/ready.{wid}", "w").close()
while not os.path.exists(f"{tmp}/go"):
    time.sleep(0.005)
""" + EMIT_LINES + """
open(f"{tmp}/done.{wid}", "w").close()
time.sleep(1000)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (proc(5) fields 14 and 15)


def cpu_or_zero(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def journald_pid() -> int | None:
    """systemd-journald's pid in this pid namespace, from /proc/*/comm."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "systemd-journal":  # comm is 15 chars
                    return int(entry)
            except OSError:
                continue
    return None


def wait_idle(pids: list[int | None], deadline: float, window: float = 0.5) -> None:
    """Return once none of `pids` gained CPU time over `window` seconds (they have finished the work)."""
    last = [cpu_or_zero(p) for p in pids]
    while time.monotonic() < deadline:
        time.sleep(window)
        now = [cpu_or_zero(p) for p in pids]
        if now == last:
            return
        last = now
    raise RuntimeError("circusd/journald did not go idle")


def read_journal(identifier: str) -> tuple[int, int, int, float, float, set[str]]:
    """(entries, distinct worker/line keys, bytes incl. one newline each, first and last receive time, units).

    Times are __REALTIME_TIMESTAMP (journald's receive time, CLOCK_REALTIME) in seconds; units are the
    _SYSTEMD_UNIT values journald gave the lines ("-" for none).
    """
    proc = subprocess.Popen(
        ["journalctl", "-q", "-t", identifier, "-o", "json", "--output-fields=MESSAGE,_SYSTEMD_UNIT"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    count = size = 0
    keys: set[tuple[str, str]] = set()
    units: set[str] = set()
    first = last = 0.0
    for raw in proc.stdout:
        entry = json.loads(raw)
        msg = entry.get("MESSAGE")
        text = msg if isinstance(msg, str) else bytes(msg or []).decode(errors="replace")
        ts = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        first = ts if count == 0 else min(first, ts)
        last = max(last, ts)
        count += 1
        size += len(text.encode()) + 1
        units.add(str(entry.get("_SYSTEMD_UNIT", "-")))
        parts = text.split(" ", 2)
        if len(parts) == 3:
            keys.add((parts[0], parts[1]))
    proc.wait(60)
    return count, len(keys), size, first, last, units


def cgroup_root_line() -> str:
    """`cgroup_root = ...` for the journald rows: inside the systemd unit we run in, if any.

    The nspawn runner runs us in a unit with Delegate=yes; a root in its subtree makes journald attribute
    the workers' lines to that unit (its rate limit, its metadata), as under circus.service in production.
    Set explicitly because the first circusd moves every process of the unit, this one included, to its
    supervisor cgroup. Elsewhere a private root, as for the FileStream rows.
    """
    for row in Path("/proc/self/cgroup").read_text().splitlines():
        if row.startswith("0::"):
            parts = row[3:].strip().split("/")
            units = [i for i, part in enumerate(parts) if part.endswith(".service")]
            if units:
                return f"cgroup_root = {'/'.join(parts[: units[0] + 1])}/circus-bench-{os.getpid()}\n"
    return f"cgroup_root = /circus-bench-streams-{os.getpid()}\n"


def journal_run(workers: int, lines: int, line: int, direct: bool, tmp: Path) -> dict[str, float]:
    """One journald row: start circusd, release the workers, wait for idle, read the journal back.

    Prints the row and returns its figures (lines/s, MB/s, CPU seconds, lines stored and expected).
    """
    for f in tmp.iterdir():
        f.unlink()
    (tmp / "w.py").write_text(JOURNAL_WORKER)
    # A fresh identifier per run: journalctl -t then sees only this run's lines.
    name = f"{'jdirect' if direct else 'jrelay'}{os.getpid()}x{int(time.time() * 1000) % 100000}"
    cls = "journal-direct" if direct else "journal"
    ini = tmp / "bench.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp}/c.sock\npubsub_endpoint = ipc://{tmp}/p.sock\n"
        f"stats_endpoint = ipc://{tmp}/s.sock\n{cgroup_root_line()}\n"
        f"[watcher:{name}]\ncmd = {sys.executable} {tmp}/w.py {line} {lines} {tmp}\n"
        f"numprocesses = {workers}\nstdout_stream.class = {cls}\n"
    )
    jpid = journald_pid()
    with (tmp / "circusd.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "circus_linux", str(ini)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp.glob("ready.*"))) < workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("workers did not start: " + (tmp / "circusd.log").read_text()[-2000:])
            time.sleep(0.01)
        wait_idle([proc.pid, jpid], deadline)  # circusd's start-up work is over
        c0, j0 = cpu_or_zero(proc.pid), cpu_or_zero(jpid)
        go = time.time()  # CLOCK_REALTIME, the clock of journald's __REALTIME_TIMESTAMP
        (tmp / "go").touch()
        deadline = time.monotonic() + 600
        while len(list(tmp.glob("done.*"))) < workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("workers did not finish writing")
            time.sleep(0.01)
        wait_idle([proc.pid, jpid], deadline)
        c_cpu, j_cpu = cpu_or_zero(proc.pid) - c0, cpu_or_zero(jpid) - j0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    expected = workers * lines
    count, distinct, size, first, last, units = read_journal(name)
    lost = f"{expected - count} LOST" if count < expected else "none lost"
    label = "direct (journal-direct)" if direct else "relayed (class = journal)"
    if count == 0:
        # e.g. journald's rate limit still closed from the previous row: it counts per unit (and priority),
        # not per process, so both modes share it
        print(f"journald, {label}: 0 of {expected} lines stored; journald CPU {j_cpu:.2f} s [{name}]")
        return {"klines/s": 0.0, "MB/s": 0.0, "circusd CPU s": c_cpu, "journald CPU s": j_cpu,
                "stored": 0, "expected": expected}
    span = last - go
    print(
        f"journald, {label}: {count} of {expected} lines stored ({lost}, {distinct} distinct), "
        f"{size / 1e6:.1f} MB from {workers} workers; go -> last line in journald {span:.2f} s "
        f"(first line after {first - go:.3f} s) = {count / span / 1e3:.0f}k lines/s, "
        f"{size / span / 1e6:.1f} MB/s; "
        f"circusd CPU {c_cpu:.2f} s ({1e6 * c_cpu / max(count, 1):.2f} us/line), "
        f"journald CPU {j_cpu:.2f} s ({1e6 * j_cpu / max(count, 1):.2f} us/line) "
        f"[identifier {name}, unit {','.join(sorted(units))}]",
        flush=True,
    )
    return {
        "klines/s": count / span / 1e3,
        "MB/s": size / span / 1e6,
        "circusd CPU s": c_cpu,
        "journald CPU s": j_cpu,
        "stored": count,
        "expected": expected,
    }


def summarize(label: str, runs: list[dict[str, float]]) -> None:
    """One line per figure: median [min-max] over the runs."""
    print(f"journald, {label}, {len(runs)} runs, median [min-max]:")
    for key in ("klines/s", "MB/s", "circusd CPU s", "journald CPU s", "stored"):
        vals = sorted(r[key] for r in runs)
        fmt = "{:.0f}" if key == "stored" else "{:.2f}"
        cell = f"{fmt.format(statistics.median(vals))} [{fmt.format(vals[0])}-{fmt.format(vals[-1])}]"
        print(f"  {key:<15} {cell}")


def run(workers: int, mb: int, line: int, stream: str, tmp: Path) -> tuple[float, float, int]:
    per_worker = mb * 1024 * 1024 // workers // line * line
    (tmp / "w.py").write_text(WORKER)
    out = tmp / "out.log"
    out.unlink(missing_ok=True)
    ini = tmp / "bench.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp}/c.sock\npubsub_endpoint = ipc://{tmp}/p.sock\n"
        f"stats_endpoint = ipc://{tmp}/s.sock\ncgroup_root = /circus-bench-streams-{os.getpid()}\n\n"
        f"[watcher:b]\ncmd = {sys.executable} {tmp}/w.py {line} {per_worker}\nnumprocesses = {workers}\n"
        f"{stream}\n"
    )
    proc = subprocess.Popen([sys.executable, "-P", "-m", "circus_linux", str(ini)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.stat().st_size > 0):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("no output")
            time.sleep(0.001)
        t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
        total = per_worker * workers
        while out.stat().st_size < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {out.stat().st_size} of {total} bytes")
            time.sleep(0.002)
        return time.monotonic() - t0, cpu_seconds(proc.pid) - c0, total
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--mb", type=int, default=64, help="total megabytes over all workers")
    ap.add_argument("--line", type=int, default=100, help="bytes per line")
    ap.add_argument("--journal-lines", type=int, default=50_000, help="lines per worker, journald rows")
    ap.add_argument("--only", choices=("file", "journald"), help="run only the FileStream or journald rows")
    ap.add_argument("--repeat", type=int, default=1, help="journald rows: runs of each mode, alternated")
    ap.add_argument(
        "--journal-modes", default="relayed,direct", help="journald rows to run, in order: relayed,direct"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="circus-bench-streams-"))
    try:
        modes = (("publish auto (no follower)", ""), ("publish = true", "stdout_stream.publish = true"))
        for label, extra in modes if args.only != "journald" else ():
            stream = f"stdout_stream.class = FileStream\nstdout_stream.filename = {tmp}/out.log\n{extra}"
            secs, cpu, total = run(args.workers, args.mb, args.line, stream, tmp)
            mbs = total / secs / 1e6
            lines = total / args.line
            print(
                f"FileStream, {label}: {total / 1e6:.1f} MB ({lines:.0f} lines of {args.line} B) from "
                f"{args.workers} workers in {secs:.2f} s = {mbs:.1f} MB/s, "
                f"{lines / secs / 1e3:.0f}k lines/s; "
                f"circusd CPU {cpu:.2f} s ({100 * cpu / secs:.0f}% of one core, "
                f"{1e6 * cpu / lines:.2f} us/line)"
            )
        if args.only == "file":
            pass
        elif not journald_available():
            print("journald direct vs relayed: skipped: no journald")
        else:
            results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            order = [{"relayed": False, "direct": True}[m.strip()] for m in args.journal_modes.split(",")]
            for _ in range(args.repeat):
                for direct in order:
                    results[direct].append(
                        journal_run(args.workers, args.journal_lines, args.line, direct, tmp)
                    )
            if args.repeat > 1:
                labels = {False: "relayed (class = journal)", True: "direct (journal-direct)"}
                for direct, label in labels.items():
                    if results[direct]:
                        summarize(label, results[direct])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
