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
from circus_linux.control import multi

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


def _exited(tmux: Tmux) -> str | None:
    out = tmux.run("display-message", "-p", "-t", tmux.name, "#{pane_dead} #{pane_dead_status}").split()
    if not out or out[0] != "1":
        return None
    return out[1] if len(out) == 2 else "unreported"  # tmux 3.3 may not report it (see the test above)


def test_circustop_two_endpoints_shows_both_hosts_and_quits(circusd: Any, tmux: Tmux) -> None:
    one = circusd("[watcher:gamma]\ncmd = sleep 600\nnumprocesses = 1\n")
    two = circusd("[watcher:delta]\ncmd = sleep 600\nnumprocesses = 2\n")
    gamma = wait_for(lambda: one.pids("gamma"), 30, what="gamma")
    delta = wait_for(lambda: len(two.pids("delta")) == 2 and two.pids("delta"), 30, what="delta")
    cmd = (
        # tmux may hand the pane COLUMNS=80 (seen with tmux 3.3 started from pytest), which curses obeys.
        f"env -u COLUMNS -u LINES {sys.executable} -P -m circus_linux.cli.circustop "
        f"--endpoint {one.endpoint} --endpoint {two.endpoint} --interval 0.3"
    )
    # Wide: the hosts are named after their ipc:// endpoints (as circusctl names them), long pytest paths.
    tmux.run(
        "new-session", "-d", "-x", "250", "-y", "50", "-s", tmux.name, cmd,
        ";", "set-option", "-t", tmux.name, "remain-on-exit", "on",
    )  # fmt: skip

    last: list[str] = []

    def shows_both() -> list[str] | None:
        lines = last[:] = tmux.screen().splitlines()
        rows = [line for line in lines if " gamma " in f"{line} " or " delta " in f"{line} "]
        ok = (
            any(line.startswith(one.endpoint) and "gamma" in line and "1/1" in line for line in rows)
            and any(line.startswith(two.endpoint) and "delta" in line and "2/2" in line for line in rows)
            and all(
                any(line.lstrip().startswith(host) and str(pid) in line.split() for line in lines)
                for host, pids in ((one.endpoint, gamma), (two.endpoint, delta))
                for pid in pids
            )
        )
        return lines if ok else None

    try:
        lines = wait_for(shows_both, 30, interval=0.05, what="both hosts' watchers and pids on screen")
    except pytest.fail.Exception:
        pytest.fail("both hosts' watchers and pids not on screen; last screen:\n" + "\n".join(last))
    assert any(line.startswith("HOST") and "WATCHER" in line for line in lines)
    tmux.run("send-keys", "-t", tmux.name, "q")
    status = wait_for(lambda: _exited(tmux), 30, interval=0.05, what="circus-top to exit on q")
    assert status in ("0", "unreported"), status


def test_multifeed_marks_a_silent_host_unreachable(circusd: Any, tmp_path: Any) -> None:
    daemon = circusd("[watcher:gamma]\ncmd = sleep 600\nnumprocesses = 1\n")
    wait_for(lambda: daemon.pids("gamma"), 30, what="gamma")
    silent = f"ipc://{tmp_path}/nobody.sock"  # nothing binds it: requests time out
    feed = circustop.MultiFeed(multi.hosts_from_endpoints([daemon.endpoint, silent]), timeout=0.5)
    model = circustop.Model()
    try:
        feed.refresh(model)
    finally:
        feed.close()
    assert model.hosts is not None and list(model.hosts) == [daemon.endpoint, silent]
    assert model.hosts[silent].error.startswith("unreachable")
    assert model.hosts[daemon.endpoint].watchers["gamma"].numprocesses == 1
    text = "\n".join(circustop.render(model, "cpu", "two hosts", width=300))
    assert f"{silent} unreachable" in text and "gamma" in text


def test_render_with_hosts_has_a_host_column() -> None:
    hosts = {"web1": circustop.Model(), "db1": circustop.Model(), "web2": circustop.Model()}
    model = circustop.Model(hosts=hosts)
    circustop.apply_stats(hosts["web1"], {"web": {"11": {"wid": 1, "cpu": 5.0, "rss": 1024}}})
    circustop.apply_stats(hosts["db1"], {"pg": {"21": {"wid": 1, "cpu": 50.0, "rss": 2048}}})
    for host, name in (("web1", "web"), ("db1", "pg")):
        w = hosts[host].watchers[name]
        w.status, w.numprocesses = "active", 1
    hosts["web2"].error = "unreachable: timed out"
    lines = circustop.render(model, "cpu", "web1, db1, web2")
    head = next(line for line in lines if "WATCHER" in line)
    assert head.split()[:2] == ["HOST", "WATCHER"]
    watchers = [line.split()[:3] for line in lines if line.split()[1:2] in (["web"], ["pg"])]
    assert watchers == [["db1", "pg", "active"], ["web1", "web", "active"]]  # one table, by cpu across hosts
    procs = [line.split()[:2] for line in lines if line.startswith("    ") and line.split()[1].isdigit()]
    assert procs == [["db1", "21"], ["web1", "11"]]
    assert "web2 unreachable: timed out" in lines
    # Host names line up in one column, the watcher names start at the same place.
    assert len({line.index(" pg ") for line in lines if " pg " in line} | {head.index("WATCHER") - 1}) == 1
    # A single circusd keeps its screen: no HOST column.
    single = circustop.Model()
    circustop.apply_stats(single, {"web": {"11": {"wid": 1}}})
    head = next(line for line in circustop.render(single, "cpu", "x") if "WATCHER" in line)
    assert head.startswith("WATCHER")
