"""Leftover removal for the benchmark: orphaned workers (we are their subreaper) and circus-bench-* cgroups.

It only ever kills processes that are provably ours: our own children, or members of a cgroup named
after this benchmark's pid (or after a benchmark pid that no longer exists). It never touches any other
cgroup, and never the v1 memory hierarchy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

import procfs

_PR_SET_CHILD_SUBREAPER = 36
PREFIX = "circus-bench-"
# cpu and cpuacct are often one hierarchy mounted twice (cpu,cpuacct); removing it once is enough.
CGROUP_MOUNTS = tuple(f"/sys/fs/cgroup/{h}" for h in ("unified", "pids", "cpu", "cpuacct"))


def become_subreaper() -> None:
    """Workers orphaned by a dying circusd are reparented to us, so we can kill and reap them exactly."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def kill_own_children(timeout: float = 10.0) -> int:
    """SIGKILL and reap every remaining child of this process; returns how many there were."""
    me = os.getpid()
    killed = 0
    for pid in procfs.children(me):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.001)
    return killed


def _stale(name: str) -> bool:
    """A circus-bench-<pid> cgroup whose benchmark process is gone (an interrupted earlier run)."""
    suffix = name[len(PREFIX) :].split("-")[0]
    return suffix.isdigit() and not os.path.exists(f"/proc/{suffix}")


def _kill_members(path: str) -> None:
    for dirpath, _dirs, files in os.walk(path):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as fh:
                pids = [int(x) for x in fh.read().split()]
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _rmdir_tree(path: str, timeout: float) -> bool:
    """rmdir bottom-up; EBUSY while killed members are still exiting, so retry until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        for dirpath, _dirs, _files in os.walk(path, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        if not busy:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def sweep_cgroups(own: str, timeout: float = 10.0) -> list[str]:
    """Remove the cgroup `own` and stale circus-bench-* cgroups; returns the paths left in place."""
    left: list[str] = []
    for mount in CGROUP_MOUNTS:
        try:
            names = os.listdir(mount)
        except FileNotFoundError:
            continue
        for name in names:
            if not name.startswith(PREFIX) or not (name == own or _stale(name)):
                continue
            path = os.path.join(mount, name)
            _kill_members(path)
            if not _rmdir_tree(path, timeout):
                left.append(path)
    return left
