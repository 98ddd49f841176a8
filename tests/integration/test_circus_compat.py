"""Circus 0.19's own circusctl drives our circusd unchanged (the wire compatibility promise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

CACHE = Path("/var/cache/circus-linux-test/circus-0.19-venv")
SECTIONS = """
[watcher:web]
cmd = sleep 600
numprocesses = 2
flapping.max_retry = 3
"""


def circus_venv() -> Path:
    """A venv with circus==0.19.0, built once and cached; skipped (reason given) when pip cannot get it."""
    if (CACHE / "bin" / "circusctl").exists():
        return CACHE
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="circus-venv-", dir="/var/tmp"))
    try:
        # Debian's python: Circus 0.19 supports it, and the venv does not depend on pyenv's shims
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        subprocess.run([python, "-m", "venv", str(tmp / "venv")], check=True, capture_output=True)
        pip = subprocess.run(
            [
                str(tmp / "venv" / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "circus==0.19.0",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if pip.returncode != 0:
            pytest.skip(f"cannot install circus==0.19.0 (package index unreachable?): {pip.stderr[-500:]}")
        try:
            os.rename(tmp / "venv", CACHE)  # atomic: a concurrent run either sees a whole venv or none
        except OSError:
            if not (CACHE / "bin" / "circusctl").exists():
                raise
        # a venv's scripts hard-code their interpreter path: rebuild the shebangs for the final location
        for script in (CACHE / "bin").iterdir():
            if script.is_file() and not script.is_symlink():
                head = script.read_bytes()[:200]
                if head.startswith(b"#!") and str(tmp).encode() in head:
                    text = script.read_bytes().replace(str(tmp / "venv").encode(), str(CACHE).encode())
                    script.write_bytes(text)
        return CACHE
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
