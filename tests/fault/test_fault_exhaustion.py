"""Resource exhaustion (pids limit, fd limit, full disk): circusd keeps serving and reports the condition."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault.fault_probe import wait_for


def test_pids_limit_hit_is_reported_and_circusd_keeps_serving(circusd: Any, wire: Any, events: Any) -> None:
    if not (Path("/sys/fs/cgroup/pids").is_dir() or Path("/sys/fs/cgroup/cgroup.controllers").exists()):
        pytest.skip("no pids cgroup controller on this machine")
    # The worker wants 3 pids (sh + 2 sleeps): under pids_max = 2 its second fork fails, and the worker
    # itself (whose spawn came first) stays up. With 2 workers under 3 pids, whether the second worker's
    # clone or its sh's forks hit the limit would depend on how fast the first sh forks.
    d = circusd(
        "[watcher:capped]\ncmd = sh -c 'sleep 1000 & sleep 1000 & wait'\nnumprocesses = 1\n"
        "pids_max = 2\nmax_retry = -1\ngraceful_timeout = 2\n"
    )
    w = wire(d)
    ev = events(d, "watcher.capped.")
    hit = ev.wait(".limit", timeout=15)
    assert hit["limit"] == "pids_max", hit
    assert w.call("list")["status"] == "ok" and d.proc.poll() is None
    assert w.call("status", name="capped")["status"] == "active"
    assert d.proc.poll() is None


def test_fd_limit_hit_keeps_serving_and_reports(circusd: Any, wire: Any, events: Any) -> None:
    d = circusd("[watcher:many]\ncmd = sleep 1000\nnumprocesses = 1\nmax_retry = -1\n")
    w = wire(d)  # connected before the limit: a new connection might not get an fd any more
    ev = events(d, "watcher.many.")
    wait_for(lambda: len(w.pids("many")) == 1, what="many up")
    used = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    # Room for 10 more fds: each worker costs circusd its pidfd (plus the spawn pipe while it runs).
    limit = used + 10
    soft, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (limit, hard))  # lowering the soft limit only
    assert w.call("incr", name="many", nb=40)["status"] == "ok"
    failure = ev.wait(".exec_error", timeout=15)
    assert failure["errno"] == errno.EMFILE, failure
    wait_for(lambda: "Too many open files" in d.log_text(), what="the log line")
    assert w.call("list", name="many")["status"] == "ok" and d.proc.poll() is None
    assert len(os.listdir(f"/proc/{d.proc.pid}/fd")) <= limit
    # Given fds back, circusd fills the pool without being restarted.
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: len(w.pids("many")) == 41, timeout=30, what="the pool filled once fds came back")


@pytest.fixture
def tiny_tmpfs() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    path = Path(tempfile.mkdtemp(prefix="circus-test-", dir="/var/tmp"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def test_disk_full_under_a_file_stream_keeps_serving(
    circusd: Any, wire: Any, tiny_tmpfs: Path
) -> None:
    out = tiny_tmpfs / "out.log"
    d = circusd(
        "[watcher:chatty]\n"
        "cmd = sh -c 'while :; do echo 0123456789012345678901234567890123456789; done'\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n"
        "graceful_timeout = 2\n"
    )
    w = wire(d)
    try:
        reply = w.call("list", name="chatty")
        if reply["status"] != "ok":
            pytest.skip(f"FileStream not supported yet: {reply}")
        wait_for(lambda: "No space left on device" in d.log_text(), timeout=20, what="the disk-full log line")
        assert "stream" in d.log_text() and "write failed" in d.log_text()
        stats = w.call("logs", name="chatty", lines=1)
        assert stats["status"] == "ok", stats
        assert w.call("list")["status"] == "ok" and d.proc.poll() is None
        assert len(w.pids("chatty")) == 1  # the worker is not punished for circusd's full disk
        # Writes that failed part-way left no line cut or glued to the next: stopped (the file stays put),
        # every line of the file is whole.
        assert w.call("stop", name="chatty", waiting=True)["status"] == "ok"
        data = out.read_bytes()
        assert data.endswith(b"\n") and set(data.splitlines()) == {b"0123456789" * 4}
        assert w.call("start", name="chatty", waiting=True)["status"] == "ok"
        # Free space again: writing resumes (the emptied file gets content again; it may well fill the
        # tmpfs up to the very same size as before, so "bigger than before" would prove nothing).
        out.write_bytes(b"")
        wait_for(lambda: out.stat().st_size > 0, timeout=20, what="writes to resume")
    finally:
        d.stop()  # the open log file would keep the mount busy
