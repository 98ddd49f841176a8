"""circus-top driven in a real terminal (tmux) against a real circusd: it shows watchers and pids, q quits."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_for

from circus_linux.cli import circustop

WATCHERS = """
[watcher:alpha]
cmd = sleep 600
numprocesses = 2

[watcher:beta]
cmd = sleep 600
numprocesses = 1
"""


class Tmux:
    def __init__(self) -> None:
        self.name = f"circus-top-{uuid.uuid4().hex[:8]}"
        # A private server socket (-L): the test never touches a user's own tmux sessions.
        self.base = ["tmux", "-L", self.name]

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    t = Tmux()
    yield t
    t.kill()


def test_circustop_shows_watchers_and_pids_and_quits(circusd: Any, tmux: Tmux) -> None:
    daemon = circusd(WATCHERS)
    pids = wait_for(lambda: len(daemon.pids("alpha")) == 2 and daemon.pids("alpha"), 30, what="alpha")
    beta = wait_for(lambda: daemon.pids("beta"), 30, what="beta")
    cmd = f"{sys.executable} -P -m circus_linux.cli.circustop --endpoint {daemon.endpoint} --interval 0.3"
    # remain-on-exit (set in the same tmux command, before circus-top can exit) keeps the dead pane and
    # tmux's banner with circus-top's exit status.
    tmux.run(
        "new-session", "-d", "-x", "160", "-y", "50", "-s", tmux.name, cmd,
        ";", "set-option", "-t", tmux.name, "remain-on-exit", "on",
    )  # fmt: skip

    def shows_all() -> str | None:
        text = tmux.screen()
        wanted = ["alpha", "beta", "active", *map(str, pids), str(beta[0])]
        return text if all(w in text for w in wanted) else None

    text = wait_for(shows_all, 30, interval=0.05, what="watchers and pids on screen")
    assert "2/2" in text and "1/1" in text
    tmux.run("send-keys", "-t", tmux.name, "p")
    wait_for(lambda: "sort: pid" in tmux.screen(), 30, interval=0.05, what="sort by pid")
    tmux.run("send-keys", "-t", tmux.name, "q")

    def exited() -> str | None:
        # tmux 3.3 sometimes leaves pane_dead_status empty for a dead pane (seen with `sleep 1` alone):
        # the exit is what q must cause; its status is checked whenever tmux reports one.
        out = tmux.run("display-message", "-p", "-t", tmux.name, "#{pane_dead} #{pane_dead_status}").split()
        if not out or out[0] != "1":
            return None
        return out[1] if len(out) == 2 else "unreported"

    status = wait_for(exited, 30, interval=0.05, what="circus-top to exit on q")
    assert status in ("0", "unreported"), status


def test_render_sorts_and_shows_counters() -> None:
    model = circustop.Model()
    circustop.apply_stats(
        model,
        {
            "web": {
                "11": {"pid": 11, "wid": 2, "cpu": 5.0, "mem": 1.0, "rss": 2048, "age": 61},
                "12": {"pid": 12, "wid": 1, "cpu": 50.0, "mem": 0.5, "rss": 4096, "age": 3},
            }
        },
    )
    w = model.watcher("web")
    w.status, w.numprocesses = "active", 2
    circustop.apply_stream(model, "stat.web", {"cgroup": {"oom_kill": 3}}, 0.0)
    lines = circustop.render(model, "cpu", "ipc://x")
    row = next(line for line in lines if line.startswith("web"))
    assert "2/2" in row and row.rstrip().endswith("12 11") and " 3 " in row  # cpu order, OOM kills
    lines = circustop.render(model, "wid", "ipc://x")
    procs = [line.split()[0] for line in lines if line.startswith("    ") and line.split()[0].isdigit()]
    assert procs == ["12", "11"]  # wid 1 first
    assert "0:01:01" in "\n".join(lines)
