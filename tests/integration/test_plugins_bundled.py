"""The other bundled plugins against a real circusd: WatchDog, HttpObserver, CommandReloader."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from conftest import wait_for


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_watchdog_kills_the_silent_worker_and_spares_the_talkative_one(circusd: Any, tmp_path: Path) -> None:
    port = _free_port(socket.SOCK_DGRAM)
    beat = tmp_path / "beat.py"
    beat.write_text(
        "import os, socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "while True:\n"
        f"    s.sendto(f'{{os.getpid()}};{{time.time()}}'.encode(), ('127.0.0.1', {port}))\n"
        "    time.sleep(0.05)\n"
    )
    d = circusd(
        f"""
[watcher:silent]
cmd = sleep 600

[watcher:talker]
cmd = {sys.executable} {beat}

[plugin:watchdog]
use = circus.plugins.watchdog.WatchDog
loop_rate = 0.2
max_count = 10
watchers_regex = ^(silent|talker)$
port = {port}
"""
    )
    wait_for(lambda: d.call("status", name="plugin:watchdog")["status"] == "active", what="watchdog up")
    silent = wait_for(lambda: d.pids("silent"), what="silent up")
    talker = wait_for(lambda: d.pids("talker"), what="talker up")
    wait_for(lambda: d.pids("silent") != silent and d.pids("silent"), what="the silent worker replaced")
    assert d.pids("talker") == talker
    wait_for(lambda: "sent no heartbeat" in d.log_text(), what="the watchdog's log line")


def test_http_observer_restarts_its_watcher_when_the_url_fails(circusd: Any) -> None:
    port = _free_port(socket.SOCK_STREAM)  # nothing listens there: every check fails
    d = circusd(
        f"""
[watcher:web]
cmd = sleep 600

[plugin:http]
use = circus.plugins.http_observer.HttpObserver
check_url = http://127.0.0.1:{port}/health
loop_rate = 0.3
restart_on_error = web
port = {_free_port(socket.SOCK_DGRAM)}
"""
    )
    first = d.pids("web")
    wait_for(lambda: d.pids("web") and d.pids("web") != first, what="web restarted by the observer")
    wait_for(lambda: "restarting web" in d.log_text(), what="the observer's log line")


def test_command_reloader_restarts_when_the_executable_changes(circusd: Any, tmp_path: Path) -> None:
    script = tmp_path / "worker.sh"
    script.write_text("#!/bin/sh\nexec sleep 600\n")
    script.chmod(0o755)
    d = circusd(
        f"""
[watcher:w]
cmd = {script}

[plugin:reloader]
use = circus.plugins.command_reloader.CommandReloader
loop_rate = 0.1
"""
    )
    wait_for(lambda: d.call("status", name="plugin:reloader")["status"] == "active", what="reloader up")
    first = wait_for(lambda: d.pids("w"), what="w up")
    # Its first look happened before it said READY=1: replace the file now (a new inode).
    new = tmp_path / "worker.sh.new"
    new.write_text("#!/bin/sh\nexec sleep 601\n")
    new.chmod(0o755)
    os.replace(new, script)
    wait_for(lambda: d.pids("w") and d.pids("w") != first, what="w restarted after its executable changed")
