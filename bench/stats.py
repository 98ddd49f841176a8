"""What the stats stream costs: circusd's CPU (utime+stime from /proc) at N idle workers, stream off and on.

    .venv/bin/python bench/stats.py                       # 500 workers, 20 s windows, + Circus 0.19 if cached
    .venv/bin/python bench/stats.py --workers 100 --window 5 --no-circus

"off" = the stream is bound but nobody subscribes (XPUB tells circusd, which then skips the sampling);
"on" = one SUB subscribed to "stat." draining everything. The same measure is taken, when a Circus 0.19
venv is present (bench/peers.py builds it at CIRCUS_VENV: compare.py and the compat test do), for Circus's
circusd alone ("off") and circusd + circusd-stats with a subscriber ("on"); CPU of both processes is summed.
Run as root (circusd makes a cgroup root /circus-bench-stats-<pid>). Reads /proc only; never signals
circusd except the final SIGTERM; every leftover child is killed (the benchmark is a child subreaper).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import peers
import zmq

CIRCUS_VENV = peers.venv_path(peers.CIRCUS)
PROJECT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (fields 14 and 15, after the comm)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def call(ctx: zmq.Context[Any], endpoint: str, command: str, **props: Any) -> dict[str, Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"id": uuid.uuid4().hex, "command": command, "properties": props}).encode())
        if not sock.poll(10_000):
            raise TimeoutError(command)
        reply: dict[str, Any] = json.loads(sock.recv())
        return reply
    finally:
        sock.close()


class Drain(threading.Thread):
    """A SUB on the stats endpoint that counts messages (its own CPU is not circusd's)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"stat.")
        self.count = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            if self.sock.poll(200):
                self.sock.recv_multipart()
                self.count += 1
        self.sock.close()


def wait_workers(ctx: zmq.Context[Any], endpoint: str, name: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, zmq.ZMQError):
            reply = call(ctx, endpoint, "list", name=name)
            if len(reply.get("pids", [])) >= n:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{n} workers not up within {timeout}s")


def measure(pids: list[int], window: float) -> float:
    """CPU seconds per wall second of ``pids`` over ``window`` (100 % = one CPU)."""
    c0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
    time.sleep(window)  # the measurement window
    c1, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0)


def kill_leftovers() -> None:
    me = os.getpid()
    for _ in range(50):
        kids: list[int] = []
        for tid in os.listdir(f"/proc/{me}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{me}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        if not kids:
            return
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    kill_leftovers()


def ours(workers: int, window: float, tmp: Path) -> dict[str, float]:
    root = f"/circus-bench-stats-{os.getpid()}"
    ini = tmp / "ours.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp}/ctl.sock\npubsub_endpoint = ipc://{tmp}/pub.sock\n"
        f"stats_endpoint = ipc://{tmp}/stats.sock\ncgroup_root = {root}\n\n"
        f"[watcher:idle]\ncmd = /bin/sleep 100000\nnumprocesses = {workers}\n"
    )
    ctx: zmq.Context[Any] = zmq.Context()
    proc = subprocess.Popen(
        [str(PROJECT / ".venv/bin/python"), "-P", "-m", "circus_linux", str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "ours.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        wait_workers(ctx, f"ipc://{tmp}/ctl.sock", "idle", workers)
        time.sleep(2)  # let the start-up settle before the first window
        off = measure([proc.pid], window)
        drain = Drain(ctx, f"ipc://{tmp}/stats.sock")
        drain.start()
        time.sleep(2)
        n0 = drain.count
        on = measure([proc.pid], window)
        rate = (drain.count - n0) / window
        drain.running = False
        drain.join()
        return {"off": off, "on": on, "messages_per_s": rate}
    finally:
        stop(proc)
        ctx.destroy(0)


def circus(workers: int, window: float, tmp: Path) -> dict[str, float] | None:
    circusd = CIRCUS_VENV / "bin" / "circusd"
    if not circusd.exists():
        return None
    out: dict[str, float] = {}
    for statsd in (False, True):
        ini = tmp / f"circus-{statsd}.ini"
        ini.write_text(
            f"[circus]\nendpoint = ipc://{tmp}/c-ctl.sock\npubsub_endpoint = ipc://{tmp}/c-pub.sock\n"
            f"stats_endpoint = ipc://{tmp}/c-stats.sock\nstatsd = {str(statsd).lower()}\n\n"
            f"[watcher:idle]\ncmd = /bin/sleep 100000\nnumprocesses = {workers}\n"
        )
        ctx: zmq.Context[Any] = zmq.Context()
        proc = subprocess.Popen(
            [str(circusd), str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "circus.log", "ab"),  # noqa: SIM115
        )
        try:
            wait_workers(ctx, f"ipc://{tmp}/c-ctl.sock", "idle", workers)
            pids = [proc.pid]
            if statsd:
                deadline = time.monotonic() + 30
                while len(pids) == 1 and time.monotonic() < deadline:
                    # Circus runs circusd-stats as its own watcher: python -c "from circus import stats; ..."
                    for child in os.listdir("/proc"):
                        if child.isdigit():
                            with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
                                text = f.read()
                                if b"circusd-stats" in text or b"circus import stats" in text:
                                    pids.append(int(child))
                    time.sleep(0.2)
                if len(pids) == 1:
                    raise RuntimeError("Circus's circusd-stats process not found")
                drain = Drain(ctx, f"ipc://{tmp}/c-stats.sock")
                drain.start()
            time.sleep(2)
            n0 = drain.count if statsd else 0
            out["on" if statsd else "off"] = measure(pids, window)
            if statsd:
                out["messages_per_s"] = (drain.count - n0) / window
                drain.running = False
                drain.join()
        finally:
            stop(proc)
            ctx.destroy(0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=500)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--no-circus", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    try:
        results: dict[str, Any] = {"workers": args.workers, "window_s": args.window}
        results["circus_linux"] = ours(args.workers, args.window, tmp)
        if not args.no_circus:
            results["circus_0_19"] = circus(args.workers, args.window, tmp)
    finally:
        kill_leftovers()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.workers} idle workers, CPU % of one core over {args.window:.0f} s (utime+stime):")
    for name in ("circus_linux", "circus_0_19"):
        r = results.get(name)
        if r:
            print(
                f"  {name:13s} stream off {r['off']:6.2f} %   stream on {r['on']:6.2f} %   "
                f"({r['messages_per_s']:.0f} msg/s)"
            )
        elif name in results:
            print(f"  {name:13s} not measured (no venv at {CIRCUS_VENV})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
