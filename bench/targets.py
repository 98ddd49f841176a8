"""The four compared supervisors behind one interface: floor, circus-linux, Circus 0.19, supervisord 4.3.

Each target starts its supervisor as a child of the benchmark, writes its config into the run's temp dir,
and offers the tool's own control: `scale(n)` and `cli_rtt()` run the tool's command-line client
(circusctl / supervisorctl), `proto_rtt()` speaks its wire protocol in-process (ZeroMQ JSON for both
Circuses, XML-RPC over the unix socket for supervisord). It never measures: compare.py and scenarios.py
watch the workers through /proc.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shlex
import signal
import socket
import subprocess
import time
import uuid
import xmlrpc.client
from pathlib import Path
from typing import Any

import procfs
import zmq
from circus_target import REPO, Circusd
from floor import Floor

CLI_TIMEOUT = 120.0


class ControlFailed(RuntimeError):
    """A control command of a peer failed or timed out."""


def _run_cli(argv: list[str]) -> float:
    """Run one client command; returns its wall time in seconds; raises ControlFailed on failure."""
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=REPO, check=False)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise ControlFailed(f"{shlex.join(argv)} -> {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}")
    return took


def _zmq_call(endpoint: str, command: str, **props: Any) -> float:
    """One Circus-protocol request on a fresh DEALER (as a client would); seconds from connect to reply."""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        t0 = time.monotonic()
        sock.connect(endpoint)
        sock.send(json.dumps({"id": uuid.uuid4().hex, "command": command, "properties": props}).encode())
        if not sock.poll(30_000):
            raise ControlFailed(f"{command}: no reply from {endpoint}")
        reply = json.loads(sock.recv())
        took = time.monotonic() - t0
    finally:
        sock.close()
    if reply.get("status") != "ok":
        raise ControlFailed(f"{command}: {reply}")
    return took


# ----------------------------------------------------------------------------------------------- floor
class FloorTarget(Floor):
    """The floor; it has no control client, so the control rows are 'n/a' for it."""

    scale_replaces_all = False
    control_note = "no control channel"

    def extra_pids(self) -> list[int]:
        return []


# ---------------------------------------------------------------------------------------- circus-linux
class CircusLinux(Circusd):
    """circusd of this tree (bench/circus_target.py), with circusctl of this tree as its client."""

    scale_replaces_all = False
    control_note = ""

    def __init__(self, argv: list[str], tmp: Path, cgroup: str, watcher_extra: str = "") -> None:
        super().__init__(argv, tmp, cgroup, str(REPO / ".venv" / "bin" / "python"), watcher_extra)
        self.endpoint = f"ipc://{tmp}/endpoint.sock"
        self.ctl = [str(REPO / ".venv" / "bin" / "circusctl"), "--endpoint", self.endpoint]
        self._n = 0

    def start(self, n: int) -> None:
        self._n = n
        super().start(n)

    def scale(self, n: int) -> None:
        # circusctl incr/decr NAME NB: the Circus command set, answered once the order is taken
        verb, nb = ("incr", n - self._n) if n > self._n else ("decr", self._n - n)
        _run_cli([*self.ctl, verb, "bench", str(nb)])
        self._n = n

    def cli_rtt(self) -> float:
        return _run_cli([*self.ctl, "list", "bench"])

    def proto_rtt(self) -> float:
        return _zmq_call(self.endpoint, "list", name="bench")

    def extra_pids(self) -> list[int]:
        return []


# ------------------------------------------------------------------------------------------ Circus 0.19
CIRCUS_CONFIG = """\
[circus]
endpoint = ipc://{tmp}/c19-endpoint.sock
pubsub_endpoint = ipc://{tmp}/c19-pubsub.sock
# No stats_endpoint: Circus 0.19 turns statsd on (and runs circusd-stats as a child) whenever one is set.

[watcher:bench]
cmd = {cmd}
numprocesses = {n}
# Circus stops a watcher whose processes die more than twice within a second (flapping); a mass kill
# would trip it and the row would measure its retry_in pause, not a replacement.
check_flapping = false
{extra}"""


class CircusPeer:
    """Circus 0.19's circusd from its venv (bench/peers.py), driven by that venv's circusctl."""

    label = "Circus 0.19"
    scale_replaces_all = False
    control_note = ""

    def __init__(self, venv: Path, argv: list[str], tmp: Path, watcher_extra: str = "") -> None:
        self.venv = venv
        self.argv = argv
        self.tmp = tmp
        self.watcher_extra = watcher_extra
        self.endpoint = f"ipc://{tmp}/c19-endpoint.sock"
        self.ctl = [str(venv / "bin" / "circusctl"), "--endpoint", self.endpoint]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.t0 = 0.0
        self.log_path = tmp / "circus-0.19.log"
        self._n = 0
        self._helpers: list[int] = []
        self._helpers_at = -1e9

    def start(self, n: int) -> None:
        self._n = n
        conf = self.tmp / "circus-0.19.ini"
        conf.write_text(
            CIRCUS_CONFIG.format(tmp=self.tmp, cmd=shlex.join(self.argv), n=n, extra=self.watcher_extra)
        )
        self.t0, self.proc = _launch([str(self.venv / "bin" / "circusd"), str(conf)], self.tmp, self.log_path)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll_ready(self) -> None:
        """Circus has no readiness notification."""

    def scale(self, n: int) -> None:
        verb, nb = ("incr", n - self._n) if n > self._n else ("decr", self._n - n)
        _run_cli([*self.ctl, verb, "bench", str(nb)])
        self._n = n

    def cli_rtt(self) -> float:
        return _run_cli([*self.ctl, "list", "bench"])

    def proto_rtt(self) -> float:
        return _zmq_call(self.endpoint, "list", name="bench")

    def extra_pids(self) -> list[int]:
        """circusd-stats, when Circus runs it (not with this config, which sets no stats_endpoint).

        This sits in polling loops: the children's cmdlines are scanned at most once a second, and only
        in the first 15 s after the start (Circus starts circusd-stats with the arbiter)."""
        now = time.monotonic()
        if now - self._helpers_at < 1.0 or (now - self.t0 > 15.0 and self._helpers_at > self.t0 + 15.0):
            return self._helpers
        out = []
        for pid in _children(self.pid):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                # it runs as `python -c "from circus import stats; stats.main()" ...`
                if b"circus import stats" in cmdline or b"circusd-stats" in cmdline:
                    out.append(pid)
        self._helpers, self._helpers_at = out, time.monotonic()
        return out

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 60.0) -> None:
        _stop(self.proc, timeout)
        self.proc = None
        self.pid = None


# --------------------------------------------------------------------------------------- supervisord 4.3
SUPERVISOR_CONFIG = """\
[unix_http_server]
file = {tmp}/supervisor.sock

[supervisord]
nodaemon = true
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
childlogdir = {tmp}
# supervisord keeps 3 pipe ends per process and refuses to start below minfds
minfds = 4096

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{tmp}/supervisor.sock

[program:bench]
command = {cmd}
numprocs = {n}
process_name = %(program_name)s_%(process_num)04d
autorestart = true
startsecs = 1
{streams}
"""
NO_LOG = "stdout_logfile = NONE\nstderr_logfile = NONE"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.unix_path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.unix_path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self.unix_path)


class Supervisord:
    """supervisord 4.3 from its venv, in the foreground; supervisorctl of that venv as its client.

    supervisord has no scale command: `scale(n)` rewrites numprocs in the config and runs
    `supervisorctl update`, which (its documented behaviour for a changed group) stops the whole group,
    removes it and adds it again with the new count: every worker is replaced, not only the new ones.
    """

    label = "supervisord 4.3"
    scale_replaces_all = True
    control_note = ""

    def __init__(self, venv: Path, argv: list[str], tmp: Path, streams: str = NO_LOG) -> None:
        self.venv = venv
        self.argv = argv
        self.tmp = tmp
        self.streams = streams
        self.conf = tmp / "supervisord.conf"
        self.ctl = [str(venv / "bin" / "supervisorctl"), "-c", str(self.conf)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.t0 = 0.0
        self.log_path = tmp / "supervisord.out"

    def _write(self, n: int) -> None:
        self.conf.write_text(
            SUPERVISOR_CONFIG.format(tmp=self.tmp, cmd=shlex.join(self.argv), n=n, streams=self.streams)
        )

    def start(self, n: int) -> None:
        self._write(n)
        argv = [str(self.venv / "bin" / "supervisord"), "-c", str(self.conf)]
        self.t0, self.proc = _launch(argv, self.tmp, self.log_path)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll_ready(self) -> None:
        """supervisord has no readiness notification."""

    def scale(self, n: int) -> None:
        self._write(n)
        _run_cli([*self.ctl, "update"])

    def cli_rtt(self) -> float:
        return _run_cli([*self.ctl, "status"])

    def proto_rtt(self) -> float:
        t0 = time.monotonic()
        proxy = xmlrpc.client.ServerProxy(
            "http://localhost", transport=_UnixTransport(str(self.tmp / "supervisor.sock"))
        )
        try:
            proxy.supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error) as exc:
            raise ControlFailed(f"getAllProcessInfo: {exc}") from exc
        return time.monotonic() - t0

    def extra_pids(self) -> list[int]:
        return []

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.tmp / "supervisord.log", lines) + "\n" + _tail(self.log_path, lines)

    def stop(self, timeout: float = 60.0) -> None:
        _stop(self.proc, timeout)
        self.proc = None
        self.pid = None


# ------------------------------------------------------------------------------------------------ helpers
def _launch(argv: list[str], cwd: Path, log_path: Path) -> tuple[float, subprocess.Popen[bytes]]:
    """Start a peer supervisor, output appended to log_path; (monotonic time just before Popen, proc)."""
    with open(log_path, "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return t0, proc


def _children(pid: int | None) -> list[int]:
    return [] if pid is None else procfs.children(pid)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no {path.name})"


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; the workers it leaves are reaped by cleanup.py."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
