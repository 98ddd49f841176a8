"""ResourceWatcher on cgroup figures in a real circusd: the busy watcher is restarted, the idle one spared."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from conftest import wait_for

PLUGIN = """
[plugin:rw_{name}]
use = circus.plugins.resource_watcher.ResourceWatcher
watcher = {name}
loop_rate = 0.3
max_cpu = 30
max_count = 1
"""


def _restarts(d: Any, name: str) -> int:
    return int(d.call("stats", name=name)["restarts"])


def test_resource_watcher_restarts_the_busy_watcher_and_spares_the_idle_one(circusd: Any) -> None:
    d = circusd(
        f"""
[watcher:busy]
cmd = {sys.executable} -c "while True: pass"

[watcher:idle]
cmd = sleep 600
"""
        + PLUGIN.format(name="busy")
        + PLUGIN.format(name="idle")
    )
    cg = d.call("stats", name="busy").get("cgroup")
    if not cg or cg.get("cpu_usage_usec") is None:
        pytest.skip("circusd serves no cgroup CPU figure here (no cgroups)")
    idle = wait_for(lambda: d.pids("idle"), what="idle worker")
    first = wait_for(lambda: d.pids("busy"), what="busy worker")
    # A baseline look and two looks over max_cpu (max_count = 1), twice: about 2 s at loop_rate 0.3.
    wait_for(lambda: _restarts(d, "busy") >= 2, what="the busy watcher restarted twice by its plugin")
    assert d.pids("busy") != first
    # The idle plugin looked as often, at the same rate, over the same time.
    assert d.pids("idle") == idle and _restarts(d, "idle") == 0
    line = wait_for(
        lambda: next((x for x in d.log_text().splitlines() if "resource_watcher: busy broke" in x), None),
        what="the plugin's log line",
    )
    # The CPU figure is the cgroup's; memory falls back to the workers' when v2 has no memory controller.
    # max_cpu or, with Circus's per-worker health score (psutil's cpu_percent is noisy when other clients
    # call `stats` in between, as this test does), health: either way the CPU figure is the cgroup's.
    assert ("broke max_cpu" in line or "broke health" in line) and "from cgroup" in line, line
    if cg.get("memory_current") is None:
        assert "from process" in line, line
