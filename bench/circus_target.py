"""A circusd subprocess under test: writes its ini, starts it, hears READY=1, stops it; never queries it.

Everything the benchmark measures about circusd comes from /proc and from the READY=1 datagram it sends to
a NOTIFY_SOCKET the benchmark binds; the control channel is configured (ipc:// endpoints in a temp dir)
but never used, so the figures do not depend on circusd's own answers.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

def prepare_bytecode() -> str:
    """Compile this tree's circus_linux to __pycache__ and let every child write its own bytecode.

    pip compiles the peers' venvs at install time; an editable checkout only gets its .pyc files from a
    first run, and not at all under PYTHONDONTWRITEBYTECODE=1 (set in some shells): circusd would then
    compile its edited modules at every cold start (~15 ms on this machine). Returns a header line.
    """
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    package = REPO / "circus_linux"
    ok = compileall.compile_dir(str(package), quiet=1)
    return f"bytecode: {package} compiled ({'ok' if ok else 'with errors'}), as pip install does"


CONFIG = """\
[circus]
endpoint = ipc://{tmp}/endpoint.sock
pubsub_endpoint = ipc://{tmp}/pubsub.sock
stats_endpoint = ipc://{tmp}/stats.sock
cgroup_root = /{cgroup}

[watcher:bench]
cmd = {cmd}
numprocesses = {n}
{extra}"""


class CircusdFailed(RuntimeError):
    """circusd exited while the benchmark was waiting on it."""


class Circusd:
    """Handle on one circusd run in `tmp`; `cgroup` is the name of its cgroup root (no leading slash)."""

    label = "circus-linux"

    def __init__(
        self, argv: list[str], tmp: Path, cgroup: str, python: str = sys.executable, watcher_extra: str = ""
    ) -> None:
        self.argv = argv
        self.watcher_extra = watcher_extra  # more lines for [watcher:bench], e.g. stdout_stream.*
        self.tmp = tmp
        self.cgroup = cgroup
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.t0 = 0.0
        self.ready_at: float | None = None
        self.log_path = tmp / "circusd.log"
        self._notify: socket.socket | None = None

    def start(self, n: int) -> None:
        conf = self.tmp / "bench.ini"
        conf.write_text(
            CONFIG.format(
                tmp=self.tmp, cgroup=self.cgroup, cmd=shlex.join(self.argv), n=n, extra=self.watcher_extra
            )
        )
        notify_path = self.tmp / "notify.sock"
        notify_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(str(notify_path))
        sock.setblocking(False)
        self._notify = sock
        self.ready_at = None
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
        env["NOTIFY_SOCKET"] = str(notify_path)
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child, closed right after)
        try:
            self.t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [self.python, "-P", "-m", "circus_linux", str(conf)],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll_ready(self) -> None:
        """Drain the notify socket; the first READY=1 sets `ready_at` (monotonic time it was seen)."""
        if self._notify is None:
            return
        while True:
            try:
                data = self._notify.recv(65536)
            except BlockingIOError:
                return
            if self.ready_at is None and b"READY=1" in data.split(b"\n"):
                self.ready_at = time.monotonic()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise CircusdFailed(f"circusd exited with {self.proc.returncode}; log:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; the notify socket stays bound until circusd is gone
        (it sends STOPPING=1 on its way out)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
            (self.tmp / "notify.sock").unlink(missing_ok=True)
        self.pid = None
