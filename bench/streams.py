"""Benchmark: sustained MB/s of worker output through circusd into a FileStream, and circusd's CPU for it.

Usage: .venv/bin/python bench/streams.py [--workers 4] [--mb 64] [--line 100]
Each worker writes MB megabytes of LINE-byte numbered lines as fast as it can (large buffered writes);
the clock runs from the first byte in the file to the last one, and circusd's CPU is the utime+stime
delta of /proc/<circusd>/stat over the same span. The journald direct-vs-relayed comparison runs only
where journald's stdout socket exists; elsewhere it prints 'skipped: no journald'.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from circus_linux.streams.journal import journald_available

WORKER = """
import os, sys
line_len, total = int(sys.argv[1]), int(sys.argv[2])
wid = os.environ["CIRCUS_WID"]
out = sys.stdout.buffer
n = total // line_len
batch = []
for i in range(n):
    head = f"{wid} {i} ".encode()
    batch.append(head + b"x" * (line_len - len(head) - 1) + b"\\n")
    if len(batch) == 512:
        out.write(b"".join(batch)); batch = []
out.write(b"".join(batch)); out.flush()
import time
time.sleep(1000)
"""
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (proc(5) fields 14 and 15)


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
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="circus-bench-streams-"))
    try:
        modes = (("publish auto (no follower)", ""), ("publish = true", "stdout_stream.publish = true"))
        for label, extra in modes:
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
        if not journald_available():
            print("journald direct vs relayed: skipped: no journald")
        else:
            print("journald direct vs relayed: see t_journal_streams in tests/system/run-systemd-tests.sh")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
