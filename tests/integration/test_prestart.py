"""Workers spawned before circusd's event loop exists (runtime/prestart.py) and adopted by the arbiter.

Real circusd processes; what the workers are is read from /proc (parent, cgroup, CIRCUS_WID).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import circusd_argv, wait_for

from circus_linux.kernel import native


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _wid(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in env if e.startswith(b"CIRCUS_WID=")).split(b"=", 1)[1])


def _children(pid: int) -> list[int]:
    return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _cgroups(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_prestarted_workers_are_supervised_like_any_other(circusd: Any, cgroup_root: str) -> None:
    d = circusd(
        "[watcher:early]\ncmd = /bin/sleep 1000\nnumprocesses = 3\npriority = 2\n"
        # warmup_delay needs the event loop: this watcher ends the prestart and is spawned by the arbiter.
        "[watcher:late]\ncmd = /bin/sleep 1000\nnumprocesses = 2\npriority = 1\nwarmup_delay = 0.01\n"
    )
    wait_for(lambda: len(d.pids("late")) == 2, what="the late watcher's 2 workers")
    log = d.log_text()
    assert "prestart: 3 workers spawned before the event loop (early 3)" in log, log
    assert "it ended at watcher late: it has a warmup_delay" in log, log
    pids = d.pids("early")
    assert len(pids) == 3
    for pid in pids:
        assert _ppid(pid) == d.proc.pid
        assert f"{cgroup_root}/early\n" in _cgroups(pid), _cgroups(pid)
    assert sorted(_wid(p) for p in pids) == [1, 2, 3]

    # A prestarted worker that dies is replaced under the same wid, as any worker would be.
    victim = pids[0]
    wid = _wid(victim)
    os.kill(victim, signal.SIGKILL)
    new = wait_for(lambda: [p for p in d.pids("early") if p not in pids], what="a replacement")
    assert _wid(new[0]) == wid
    # Stop and start: the watcher owns them.
    assert d.call("stop", name="early", waiting=True)["status"] == "ok"
    assert d.pids("early") == []
    assert set(_children(d.proc.pid)).isdisjoint([*pids, new[0]])  # stopped and reaped
    assert d.call("start", name="early", waiting=True)["status"] == "ok"
    assert len(d.pids("early")) == 3


def test_prestart_can_be_switched_off(circusd: Any) -> None:
    d = circusd("[watcher:w]\ncmd = /bin/sleep 1000\nnumprocesses = 2\n", env={"CIRCUS_LINUX_PRESTART": "0"})
    wait_for(lambda: len(d.pids("w")) == 2, what="2 workers")
    assert "prestart:" not in d.log_text()


def test_workers_that_exit_at_once_are_reaped_and_replaced(circusd: Any, tmp_path: Path) -> None:
    # Each wid's first worker exits at once (most likely before the arbiter exists); its replacement
    # stays. Whether the exit is seen by the arbiter's first reap or later, the pool must end up whole.
    flags = tmp_path / "flags"
    flags.mkdir()
    cmd = f"test -e {flags}/$(circus.wid) || {{ touch {flags}/$(circus.wid); exit 3; }}; exec sleep 1000"
    d = circusd(f"[watcher:w]\ncmd = {cmd}\nshell = true\nnumprocesses = 4\n")
    assert "prestart: 4 workers" in d.log_text()
    wait_for(lambda: len(d.pids("w")) == 4, what="4 workers")
    wait_for(lambda: sorted(os.listdir(flags)) == ["1", "2", "3", "4"], what="every wid's first run")

    def settled() -> bool:
        pids = d.pids("w")
        comms = [Path(f"/proc/{p}/comm").read_text().strip() for p in pids]
        return len(pids) == 4 and comms == ["sleep"] * 4

    wait_for(settled, what="4 sleeping replacements")
    # No zombie is left among circusd's children: every early exit was reaped.
    kids = _children(d.proc.pid)
    states = [Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0] for k in kids]
    assert "Z" not in states and len(kids) == 4


PRESTART_ONLY = """
import os, sys
from circus_linux.cli import circusd
from circus_linux.config import load
from circus_linux.runtime import signals
from circus_linux.runtime.prestart import prestart
cfg = load(sys.argv[1])
signals.block()
pre = prestart(cfg, {})
# circusd's path up to its first spawns leaves these for later (tests/integration/test_lean_start.py and
# bench/ show what they cost).
for later in ("asyncio", "logging", "circus_linux.config.changes"):
    assert later not in sys.modules, f"the prestart path imported {later}"
assert pre is not None and pre.count() == 2, pre
for w in pre.workers["w"]:
    os.kill(w.pid, 9)
    os.waitpid(w.pid, 0)
print("ok", sorted(w.wid for w in pre.workers["w"]))
"""


def test_prestart_spawns_without_importing_asyncio_or_logging(tmp_path: Path, cgroup_root: str) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text(
        f"[circus]\ncgroup_root = {cgroup_root}\n[watcher:w]\ncmd = /bin/sleep 1000\nnumprocesses = 2\n"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", PRESTART_ONLY, str(ini)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok [1, 2]"


def _alive_with_argv(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in argv and state != "Z":
                out.append(int(entry))
    return out


def test_workers_are_killed_when_circusd_fails_before_adopting_them(tmp_path: Path) -> None:
    # The socket of the second watcher cannot be bound, so the arbiter's setup fails after the first
    # watcher's workers were prestarted: circusd must not exit leaving them unsupervised. No cgroups,
    # so no cgroup kill at shutdown can hide a leak.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    marker = f"1000.{os.getpid()}{port}"  # a sleep argument nobody else uses
    ini = tmp_path / "c.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp_path}/c.sock\npubsub_endpoint = ipc://{tmp_path}/p.sock\n"
        "cgroup_root = no\n"
        f"[watcher:early]\ncmd = /bin/sleep {marker}\nnumprocesses = 3\npriority = 2\n"
        f"[socket:web]\nhost = 127.0.0.1\nport = {port}\n"
        "[watcher:web]\ncmd = /bin/sleep 1000\nuse_sockets = true\n"
    )
    try:
        out = subprocess.run(circusd_argv(str(ini)), capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert out.returncode != 0
    assert "cannot bind" in out.stderr, out.stderr
    assert _alive_with_argv(marker) == []


@pytest.mark.parametrize("where", ["command line", "config"])
def test_a_log_output_that_cannot_be_opened_is_reported_before_any_spawn(
    tmp_path: Path, where: str
) -> None:
    # The log output is opened before the prestart (logging is set up after it): a log file circusd
    # cannot open is a config error (exit 1, naming the key or option), and no worker was spawned.
    marker = f"1000.{os.getpid()}{len(where)}"
    bad = tmp_path / "missing-dir" / "circusd.log"
    ini = tmp_path / "c.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp_path}/c.sock\npubsub_endpoint = ipc://{tmp_path}/p.sock\n"
        "cgroup_root = no\n"
        + (f"logoutput = {bad}\n" if where == "config" else "")
        + f"[watcher:early]\ncmd = /bin/sleep {marker}\nnumprocesses = 3\n"
    )
    opts = ["--log-output", str(bad)] if where == "command line" else []
    out = subprocess.run(circusd_argv(*opts, str(ini)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    named = "command line --log-output" if where == "command line" else f"{ini} [circus] logoutput"
    assert f"{named}: cannot open {bad}: No such file or directory" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert _alive_with_argv(marker) == []


def test_a_bug_in_the_middle_of_a_pool_leaves_no_worker_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception prestart does not expect (here: building wid 3's spec) propagates, and the workers
    # it had already spawned (wids 1 and 2) are killed and reaped, their pidfds closed.
    from circus_linux.config import loads
    from circus_linux.runtime import prestart as mod

    real, real_spawn = mod.build_spawn_spec, native.spawn
    spawned: list[int] = []

    def build(wcfg: Any, wid: int, svc: Any) -> Any:
        if wid == 3:
            raise RuntimeError("boom")
        return real(wcfg, wid, svc)

    def spawn(spec: Any) -> Any:
        child = real_spawn(spec)
        spawned.append(child.pid)
        return child

    monkeypatch.setattr(mod, "build_spawn_spec", build)
    monkeypatch.setattr(mod.native, "spawn", spawn)
    cfg = loads("[circus]\ncgroup_root = no\n[watcher:w]\ncmd = /bin/sleep 1000\nnumprocesses = 4\n")
    with pytest.raises(RuntimeError, match="boom"):
        mod.prestart(cfg, {})
    assert len(spawned) == 2
    for pid in spawned:
        with pytest.raises(ChildProcessError):  # already reaped by discard()
            os.waitpid(pid, os.WNOHANG)


def test_a_prestarted_worker_that_dies_counts_against_max_retry(circusd: Any, tmp_path: Path) -> None:
    # max_retry = 0: the first failed start gives up. The prestarted worker is that first start, even when
    # it died before its watcher existed (the arbiter reaps it before starting any watcher).
    runs = tmp_path / "runs"
    d = circusd(
        f"[watcher:w]\ncmd = echo run >> {runs}; exit 3\nshell = true\nnumprocesses = 1\nmax_retry = 0\n"
    )
    assert "prestart: 1 workers" in d.log_text()
    wait_for(lambda: "giving up" in d.log_text(), what="the give-up")
    wait_for(lambda: d.call("status", name="w").get("status") == "stopped", what="the watcher stopped")
    assert runs.read_text().splitlines() == ["run"], d.log_text()
    assert "(last exit code 3)" in d.log_text()


def _start_seconds(pid: int) -> float:
    """When pid started, in seconds since boot (/proc/PID/stat starttime, in clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")


def test_circus_warmup_delay_never_applied(circusd: Any) -> None:
    # Circus's Arbiter._start_watchers sleeps [circus] warmup_delay after each watcher's start; only the
    # first watcher can be prestarted then.
    d = circusd(
        "[watcher:first]\ncmd = /bin/sleep 1000\npriority = 2\n"
        "[watcher:second]\ncmd = /bin/sleep 1000\npriority = 1\n",
        warmup_delay=0.6,
    )
    second = wait_for(lambda: d.pids("second"), what="the second watcher's worker")
    first = d.pids("first")
    assert _start_seconds(second[0]) - _start_seconds(first[0]) >= 0.55
    log = d.log_text()
    assert "prestart: 1 workers spawned before the event loop (first 1)" in log, log
    assert "[circus] warmup_delay = 0.6: watcher first starts first" in log, log
