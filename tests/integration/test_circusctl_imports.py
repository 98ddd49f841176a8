"""circusctl's fast path: a one-shot call to a real circusd loads no asyncio, multi-host, key or ssh code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from conftest import Circusd, wait_for

# Each costs start-up time a single-endpoint `circusctl list` does not need (asyncio alone ~40 ms).
HEAVY = (
    "asyncio",
    "zmq.asyncio",
    "zmq.auth",
    "circus_linux.cli.multihost",
    "circus_linux.control.multi",
    "circus_linux.control.keys",
    "subprocess",
    "shutil",
    "ssl",
    "uuid",
)

# Runs main() like the console script does, then reports what it printed and which HEAVY modules got in.
PROBE = """
import io, json, sys
from circus_linux.cli import circusctl
out, err = io.StringIO(), io.StringIO()
code = circusctl.main(sys.argv[2:], out, err)
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "heavy": heavy}))
"""

WATCHER = "[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\n"


def _probe(*argv: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUSCTL_")}
    proc = subprocess.run(
        [sys.executable, "-P", "-c", PROBE, json.dumps(HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_single_endpoint_commands_stay_on_the_light_path(circusd: Callable[..., Circusd]) -> None:
    daemon = circusd(WATCHER)
    pids = wait_for(lambda: len(daemon.pids("web")) == 2 and daemon.pids("web"), what="2 workers")
    for argv, expected in (
        (["--endpoint", daemon.endpoint, "list", "web"], ",".join(map(str, pids)) + "\n"),
        (["--timeout", "10", "--endpoint", daemon.endpoint, "status"], "web: active\n"),
        (["--endpoint", daemon.endpoint, "--json", "numprocesses", "web"], None),
    ):
        result = _probe(*argv)
        assert result["code"] == 0, result
        if expected is not None:
            assert result["out"] == expected
        else:
            assert json.loads(str(result["out"]))["numprocesses"] == 2
        assert result["heavy"] == [], f"{argv}: imported {result['heavy']}"


def test_multi_endpoint_still_loads_the_multi_host_side(circusd: Callable[..., Circusd]) -> None:
    # The lazy imports must still happen where they are needed: two endpoints -> a HOST table.
    daemon = circusd(WATCHER)
    result = _probe("--endpoint", daemon.endpoint, "--endpoint", daemon.endpoint, "list")
    assert result["code"] == 0, result
    assert str(result["out"]).splitlines()[0].split() == ["HOST", "WATCHER"]
    assert "circus_linux.cli.multihost" in result["heavy"] and "asyncio" in result["heavy"]
