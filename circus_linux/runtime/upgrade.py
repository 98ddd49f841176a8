"""In-place upgrade: hand workers, pidfds and sockets to a re-executed circusd with the same PID.

execve(2) keeps the PID, the children (they stay ours to reap), every fd without FD_CLOEXEC, the signal
mask and pending signals (a worker that dies during the exec is still reported by the next signalfd).
So the old arbiter freezes (no reconciliation, no stop), writes its state to a memfd, clears CLOEXEC on
the pidfds and listening sockets, and execs the same command line; the new one adopts all of it instead of
spawning. Neither systemd (MAINPID unchanged) nor clients of the listening sockets see anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

STATE_ENV = "CIRCUS_LINUX_UPGRADE_FD"
VERSION = 1


@dataclass(frozen=True)
class AdoptedProcess:
    pid: int
    pidfd: int
    wid: int
    started: float  # wall clock, as `stats` shows it
    age: float  # seconds it had lived at the exec
    cmdline: list[str]
    state: str
    pipes: dict[str, int] = field(default_factory=dict)  # captured stdout/stderr read ends, by kind


@dataclass(frozen=True)
class AdoptedWatcher:
    name: str
    numprocesses: int
    state: str
    processes: list[AdoptedProcess]


@dataclass(frozen=True)
class UpgradeState:
    watchers: dict[str, AdoptedWatcher]
    sockets: dict[str, int]
    notify_fd: int | None = None  # the workers' NOTIFY_SOCKET server: its name lives in their environment

    def fds(self) -> list[int]:
        out = list(self.sockets.values())
        if self.notify_fd is not None:
            out.append(self.notify_fd)
        for w in self.watchers.values():
            out.extend(p.pidfd for p in w.processes)
            for p in w.processes:
                out.extend(p.pipes.values())
        return out


def snapshot(arbiter: Any, pipes: dict[int, dict[str, int]] | None = None) -> UpgradeState:
    """What the next circusd needs; the arbiter must be frozen (no manager tasks running)."""
    pipes = pipes or {}
    watchers: dict[str, AdoptedWatcher] = {}
    for name, watcher in arbiter.watchers.items():
        procs = [
            AdoptedProcess(
                pid=p.pid,
                pidfd=p.pidfd,
                wid=p.wid,
                started=p.started,
                age=p.age(),
                cmdline=list(p.cmdline),
                state=p.state.value,
                pipes=dict(pipes.get(p.pid, {})),
            )
            for p in watcher.processes()
            if p.pidfd is not None
        ]
        watchers[name] = AdoptedWatcher(name, watcher.numprocesses, watcher.state.value, procs)
    sockets = {name: arbiter.sockets.fd(name) for name in arbiter.sockets.names()}
    server = getattr(arbiter, "_notify_server", None)
    return UpgradeState(watchers, sockets, server.fileno() if server is not None else None)


def encode(state: UpgradeState) -> bytes:
    doc = {
        "version": VERSION,
        "time": time.time(),
        "sockets": state.sockets,
        "notify_fd": state.notify_fd,
        "watchers": {
            name: {
                "numprocesses": w.numprocesses,
                "state": w.state,
                "processes": [p.__dict__ for p in w.processes],
            }
            for name, w in state.watchers.items()
        },
    }
    return json.dumps(doc).encode()


def decode(data: bytes) -> UpgradeState:
    doc = json.loads(data)
    if doc.get("version") != VERSION:
        raise ValueError(f"upgrade state version {doc.get('version')!r}, expected {VERSION}")
    watchers = {
        name: AdoptedWatcher(
            name,
            int(w["numprocesses"]),
            str(w["state"]),
            [AdoptedProcess(**p) for p in w["processes"]],
        )
        for name, w in doc["watchers"].items()
    }
    notify_fd = doc.get("notify_fd")
    sockets = {k: int(v) for k, v in doc["sockets"].items()}
    return UpgradeState(watchers, sockets, None if notify_fd is None else int(notify_fd))


def exec_upgrade(state: UpgradeState, argv: list[str] | None = None) -> None:
    """Never returns on success. The state travels in a memfd whose number is in $CIRCUS_LINUX_UPGRADE_FD."""
    fd = os.memfd_create("circus-upgrade-state", 0)  # no MFD_CLOEXEC: the next image reads it
    try:
        os.write(fd, encode(state))
        for kept in state.fds():
            os.set_inheritable(kept, True)
        os.environ[STATE_ENV] = str(fd)
        args = list(argv if argv is not None else sys.orig_argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *args[1:]])
    except BaseException:
        # The exec failed and this image carries on: nothing of the handover may leak into the workers it
        # spawns next (copy_env would pass the variable on; the handed fds would be inherited).
        os.environ.pop(STATE_ENV, None)
        for kept in state.fds():
            with contextlib.suppress(OSError):
                os.set_inheritable(kept, False)
        os.close(fd)
        raise


def take_state(environ: dict[str, str] | None = None) -> UpgradeState | None:
    """In the new image: read and close the state memfd, re-mark every handed fd CLOEXEC."""
    env = os.environ if environ is None else environ
    raw = env.pop(STATE_ENV, None)
    if raw is None:
        return None
    fd = int(raw)
    try:
        data = os.pread(fd, 64 * 1024 * 1024, 0)
    finally:
        os.close(fd)
    state = decode(data)
    for kept in state.fds():
        os.set_inheritable(kept, False)
    return state
