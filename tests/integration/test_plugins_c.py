"""A plugin in C (examples/plugins/reactor.c over Debian's libzmq) hears events and drives circusd."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

SOURCE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "reactor.c"


@pytest.fixture(scope="module")
def reactor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    if cc is None or not Path("/usr/include/zmq.h").exists():
        pytest.skip("needs a C compiler and libzmq3-dev (tests/setup.sh installs both)")
    out = tmp_path_factory.mktemp("reactor") / "circus-reactor"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(out), str(SOURCE), "-lzmq"], check=True)
    return out


def test_c_plugin_receives_events_and_issues_a_command(circusd: Any, tmp_path: Path, reactor: Path) -> None:
    log = tmp_path / "reactor.log"
    request = json.dumps({"id": "r1", "command": "start", "properties": {"name": "web"}})
    d = circusd(
        f"""
[watcher:web]
cmd = sleep 600

[plugin:reactor]
cmd = {reactor}
args = {log} watcher.web.stop '{request}'
color = blue
"""
    )
    wait_for(lambda: log.exists() and "listening" in log.read_text(), what="the C plugin to connect")
    lines = log.read_text().splitlines()
    assert json.loads(lines[0].removeprefix("options ")) == {"color": "blue"}
    assert "plugin:reactor" in d.call("list")["watchers"]

    # The SUB may join after the first events: stop the watcher until the plugin saw a stop and answered.
    def restarted_by_plugin() -> bool:
        if "reply " not in log.read_text():
            if d.call("status", name="web")["status"] == "active":
                d.call("stop", name="web", waiting=True)
            return False
        return d.call("status", name="web")["status"] == "active"

    wait_for(restarted_by_plugin, what="the C plugin to start web again after its stop")
    text = log.read_text()
    assert "watcher.web.stop {" in text
    reply = json.loads(next(line for line in text.splitlines() if line.startswith("reply "))[6:])
    assert reply["status"] == "ok" and reply["id"] == "r1"
    assert d.pids("web")
    d.call("stop", name="plugin:reactor", waiting=True)
    wait_for(lambda: log.read_text().endswith("stopping\n"), what="the plugin to stop on SIGTERM")
