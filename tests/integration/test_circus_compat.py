"""Circus 0.19's own circusctl drives our circusd unchanged (the wire compatibility promise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

# The peers' throw-away venvs are bench/peers.py's (pinned, cached in /var/cache/circus-linux-bench): the
# benchmark and this test share one builder and one Circus 0.19 venv.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import peers

SECTIONS = """
[watcher:web]
cmd = sleep 600
numprocesses = 2
flapping.max_retry = 3
"""


def circus_venv() -> Path:
    """Circus 0.19's venv, built once and cached; skipped (reason given) when pip cannot get it."""
    try:
        return peers.ensure(peers.CIRCUS, sys.stderr)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot build Circus 0.19's venv (package index unreachable?): {str(exc)[-500:]}")


@pytest.fixture(scope="module")
def circus_ctl() -> Path:
    venv = circus_venv()
    probe = subprocess.run([str(venv / "bin" / "circusctl"), "--help"], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    return venv / "bin" / "circusctl"


def test_circus_circusctl_drives_circusd(circusd: Any, circus_ctl: Path) -> None:
    d = circusd(SECTIONS)

    def ctl(*args: str) -> str:
        proc = subprocess.run(
            [str(circus_ctl), "--endpoint", d.endpoint, "--timeout", "20", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "CIRCUSCTL_ENDPOINT"},
        )
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout.strip()

    assert ctl("list") == "web"
    assert ctl("status") == "web: active"
    assert ctl("status", "web") == "active"
    assert ctl("numprocesses", "web") == "2"
    assert ctl("incr", "web", "2") == "4"
    wait_for(lambda: len(ctl("list", "web").split(",")) == 4, what="incr to take effect")
    assert ctl("decr", "web") == "3"
    wait_for(lambda: len(ctl("list", "web").split(",")) == 3, what="decr to take effect")
    options = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in ctl("options", "web").splitlines())
    )
    assert options["numprocesses"] == "3" and options["flapping.max_retry"] == "3"
    assert ctl("get", "web", "numprocesses") == "numprocesses: 3"
    assert ctl("set", "web", "numprocesses", "1") == "ok"
    wait_for(lambda: ctl("numprocesses", "web") == "1" and "," not in ctl("list", "web"), what="set")
    pid = ctl("list", "web")
    stats = ctl("stats", "web").splitlines()
    assert stats[0] == "web:" and stats[1].startswith(f"{pid}: {pid}  sleep 600 root 0 ")
    assert ctl("stop", "web") == "ok"
    wait_for(lambda: ctl("status", "web") == "stopped", what="stop")
    assert ctl("start", "web") == "ok"
    wait_for(lambda: ctl("status", "web") == "active", what="start")
    assert ctl("quit") == "ok"
    assert d.proc.wait(30) == 0


def test_circus_circusctl_on_a_singleton_and_an_error(circusd: Any, circus_ctl: Path) -> None:
    d = circusd("[watcher:one]\ncmd = sleep 600\nsingleton = true\n")
    wait_for(lambda: d.pids("one"), what="the singleton's worker")

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "CIRCUSCTL_ENDPOINT"}
        argv = [str(circus_ctl), "--endpoint", d.endpoint, "--timeout", "20", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    for args in (("incr", "one"), ("decr", "one", "--waiting")):
        proc = ctl(*args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert proc.stdout.strip() == "This watcher is a Singleton - not changing the number of processes"
    assert ctl("numprocesses", "one").stdout.strip() == "1"
    # an error reply: Circus's circusctl exits 3, which ours matches
    proc = ctl("incr", "missing")
    assert proc.returncode == 3 and "program missing not found" in proc.stderr, (proc.stdout, proc.stderr)
    assert ctl("quit").returncode == 0
    assert d.proc.wait(30) == 0
