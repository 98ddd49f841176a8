"""The real circusd: command line, config checks, reloadconfig diffs, concurrency without a global lock."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from conftest import circusd_argv, wait_for

WATCHERS = """
[watcher:a]
cmd = sleep 600
numprocesses = 2
graceful_timeout = 5

[watcher:b]
cmd = sleep 600
numprocesses = 2
graceful_timeout = 5
"""


def test_check_accepts_a_good_file_and_lists_every_error_of_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.ini"
    good.write_text("[watcher:w]\ncmd = sleep 1\n")
    out = subprocess.run(circusd_argv("--check", str(good)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "OK" in out.stdout

    bad = tmp_path / "bad.ini"
    bad.write_text("[watcher:w]\nnumprocesses = many\nstop_signal = SIGNOPE\n\n[watcher:x]\ncmd = true\n")
    out = subprocess.run(circusd_argv("--check", str(bad)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    # every error, each with file, line, section and key
    assert f"{bad}:2 [watcher:w] numprocesses" in out.stderr
    assert f"{bad}:3 [watcher:w] stop_signal" in out.stderr
    assert "[watcher:w] cmd" in out.stderr


def test_an_invalid_config_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[watcher:ok]\ncmd = touch {marker}\n\n[watcher:broken]\ncmd = true\nnumprocesses = -1\n")
    out = subprocess.run(circusd_argv(str(bad)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "numprocesses" in out.stderr
    assert not marker.exists()


def test_python_dash_m_and_help(tmp_path: Path) -> None:
    out = subprocess.run(circusd_argv("--help"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--check" in out.stdout and "embedded example" in out.stdout


def test_overlapping_restarts_on_two_watchers_and_a_list_storm(circusd: Any) -> None:
    d = circusd(WATCHERS)
    wait_for(lambda: len(d.pids("a")) == 2 and len(d.pids("b")) == 2, what="both pools up")
    before = {"a": set(d.pids("a")), "b": set(d.pids("b"))}
    replies: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "list": []}

    def restart(name: str) -> None:
        for _ in range(3):
            replies[name].append(d.call("restart", name=name, waiting=True, timeout=30))

    def storm() -> None:
        for _ in range(200):
            replies["list"].append(d.call("list", timeout=10))

    threads = [threading.Thread(target=restart, args=(n,)) for n in ("a", "b")]
    threads.append(threading.Thread(target=storm))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Circus answered "arbiter is already running restart command" here; we never refuse.
    assert all(r["status"] == "ok" for rs in replies.values() for r in rs), replies
    assert len(replies["a"]) == 3 and len(replies["b"]) == 3 and len(replies["list"]) == 200
    assert all(sorted(r["watchers"]) == ["a", "b"] for r in replies["list"])
    for name in ("a", "b"):
        now = set(d.pids(name))
        assert len(now) == 2 and not (now & before[name])


def test_reloadconfig_applies_only_the_difference(circusd: Any) -> None:
    d = circusd(WATCHERS + "\n[watcher:c]\ncmd = sleep 600\n")
    wait_for(lambda: len(d.pids("c")) == 1, what="c up")
    a_before, b_before = set(d.pids("a")), set(d.pids("b"))
    text = d.path.read_text()
    # a: numprocesses only (scale, no restart); b: cmd changed (graceful roll); c removed; e added
    text = text.replace(
        "[watcher:a]\ncmd = sleep 600\nnumprocesses = 2", "[watcher:a]\ncmd = sleep 600\nnumprocesses = 3"
    )
    text = text.replace("[watcher:b]\ncmd = sleep 600", "[watcher:b]\ncmd = sleep 601")
    text = text.replace("\n[watcher:c]\ncmd = sleep 600\n", "\n[watcher:e]\ncmd = sleep 600\n")
    d.path.write_text(text)
    reply = d.call("reloadconfig", waiting=True, timeout=30)
    assert reply["status"] == "ok", reply
    assert sorted(d.call("list")["watchers"]) == ["a", "b", "e"]
    a_now = set(d.pids("a"))
    assert len(a_now) == 3 and a_before <= a_now  # scaled, nobody restarted
    wait_for(lambda: len(d.pids("b")) == 2 and not set(d.pids("b")) & b_before, what="b rolled")
    wait_for(lambda: len(d.pids("e")) == 1, what="e started")


def test_reloadconfig_with_a_broken_file_changes_nothing(circusd: Any) -> None:
    d = circusd(WATCHERS)
    wait_for(lambda: len(d.pids("a")) == 2, what="a up")
    before = set(d.pids("a"))
    d.path.write_text(d.path.read_text() + "\n[watcher:oops]\nnumprocesses = x\n")
    reply = d.call("reloadconfig", waiting=True)
    assert reply["status"] == "error" and "numprocesses" in reply["reason"]
    assert set(d.pids("a")) == before
    assert sorted(d.call("list")["watchers"]) == ["a", "b"]


def test_circus_section_change_is_reported_not_applied(circusd: Any) -> None:
    d = circusd(WATCHERS)
    d.path.write_text(d.path.read_text().replace("[circus]\n", "[circus]\ncheck_delay = 7\n", 1))
    reply = d.call("reloadconfig", waiting=True)
    assert reply["status"] == "ok"
    wait_for(lambda: "check_delay" in d.log_text() and "not applied live" in d.log_text(), what="log line")


def test_sigterm_stops_everything_and_exits_zero(circusd: Any) -> None:
    d = circusd(WATCHERS)
    pids = d.pids("a") + d.pids("b")
    assert d.stop() == 0
    deadline = time.monotonic() + 5
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not Path(f"/proc/{pid}").exists()
