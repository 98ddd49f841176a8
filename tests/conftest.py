"""Shared fixtures: a real circusd subprocess on private ipc:// endpoints and a private cgroup root."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run the long fault/load tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get("CIRCUS_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: run with --run-slow (or CIRCUS_RUN_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.005, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy, against a deadline; fail the test otherwise.

    The default deadline is generous on purpose: it only matters when something is wrong, and a loaded
    2-core CI machine must not turn a slow-but-correct run into a failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Circusd:
    """A running circusd and a raw DEALER to talk to it (tests of the client use the client itself)."""

    proc: subprocess.Popen[bytes]
    path: Path
    endpoint: str
    pubsub_endpoint: str
    stats_endpoint: str
    log: Path
    ctx: zmq.Context[Any] = field(default_factory=zmq.Context)

    def call(self, command: str, timeout: float = 10.0, **props: Any) -> dict[str, Any]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            msg = {"id": uuid.uuid4().hex, "command": command, "properties": props}
            sock.send(json.dumps(msg).encode())
            if not sock.poll(int(timeout * 1000)):
                raise TimeoutError(f"no reply to {command} within {timeout}s")
            reply: dict[str, Any] = json.loads(sock.recv())
            return reply
        finally:
            sock.close()

    def pids(self, watcher: str) -> list[int]:
        reply = self.call("list", name=watcher)
        assert reply["status"] == "ok", reply
        return [int(p) for p in reply["pids"]]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ctx.destroy(linger=0)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def fill_datagram_queue(address: str) -> int:
    """Fill an AF_UNIX datagram receiver's queue (max_dgram_qlen datagrams) from a connected probe, until
    the kernel says it is full; how many it took."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        probe.setblocking(False)
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while sent < 100_000:
                probe.send(b"X-FILL=1")
                sent += 1
        return sent


@pytest.fixture
def write_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What each os.write/os.writev call of the test wrote, in order (the calls still go to the fds)."""
    calls: list[bytes] = []
    real_writev, real_write = os.writev, os.write

    def writev(fd: int, bufs: list[bytes | memoryview]) -> int:
        n = real_writev(fd, bufs)
        calls.append(b"".join(bytes(b) for b in bufs)[:n])
        return n

    def write(fd: int, buf: bytes | memoryview) -> int:
        n = real_write(fd, buf)
        calls.append(bytes(buf)[:n])
        return n

    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(os, "write", write)
    return calls


def circusd_argv(*args: str) -> list[str]:
    # -P: never import circus_linux from the current directory (the Debian-venv run tests the installed copy).
    return [sys.executable, "-P", "-m", "circus_linux", *args]


def _cleanup_cgroup(name: str) -> None:
    """Kill and remove what a crashed circusd may have left under our private cgroup root."""
    for base in (
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
    ):
        root = Path(base) / name
        if not root.is_dir():
            continue
        for sub in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
            if sub.is_dir():
                kill = sub / "cgroup.kill"
                if kill.exists():
                    kill.write_text("1")
                for pid in (
                    (sub / "cgroup.procs").read_text().split() if (sub / "cgroup.procs").exists() else []
                ):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        for sub in sorted([*root.rglob("*"), root], key=lambda p: -len(p.parts)):
            while sub.is_dir():
                try:
                    sub.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)


@pytest.fixture
def cgroup_root() -> Iterator[str]:
    name = f"circus-test-{uuid.uuid4().hex[:10]}"
    yield f"/{name}"
    _cleanup_cgroup(name)


@pytest.fixture
def circusd(tmp_path: Path, cgroup_root: str) -> Iterator[Callable[..., Circusd]]:
    """Factory: circusd(sections_ini, **circus_options) starts a real circusd and waits until it answers."""
    started: list[Circusd] = []

    def start(
        sections: str = "", wait: bool = True, env: dict[str, str] | None = None, **circus: Any
    ) -> Circusd:
        n = len(started)
        opts = {
            "endpoint": f"ipc://{tmp_path}/ctl{n}.sock",
            "pubsub_endpoint": f"ipc://{tmp_path}/pub{n}.sock",
            "stats_endpoint": f"ipc://{tmp_path}/stats{n}.sock",
            "cgroup_root": cgroup_root,
        }
        opts.update({k: str(v) for k, v in circus.items()})
        text = "[circus]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()) + "\n" + sections
        path = tmp_path / f"circus{n}.ini"
        path.write_text(text)
        log = tmp_path / f"circusd{n}.log"
        proc = subprocess.Popen(
            circusd_argv(str(path)),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
        )
        daemon = Circusd(proc, path, opts["endpoint"], opts["pubsub_endpoint"], opts["stats_endpoint"], log)
        started.append(daemon)
        if wait:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"circusd exited with {proc.returncode}:\n{daemon.log_text()}")
                try:
                    if daemon.call("numwatchers", timeout=0.5).get("status") == "ok":
                        break
                except TimeoutError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"circusd did not answer within 30s:\n{daemon.log_text()}")
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
