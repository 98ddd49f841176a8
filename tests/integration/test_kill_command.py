"""`kill` in a real circusd: without signum it sends the watcher's stop_signal first, as Circus does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import wait_for

from circus_linux.control.client import Client


def _watcher(out: Path, stop_signal: str) -> str:
    # The worker says which signal reached it, then exits; a SIGKILL would leave the file empty.
    return (
        "[watcher:w]\n"
        f"cmd = sh -c 'trap \"echo TERM > {out}; exit 0\" TERM; trap \"echo INT > {out}; exit 0\" INT; "
        f"echo up > {out}; while :; do sleep 0.1; done'\n"
        f"stop_signal = {stop_signal}\ngraceful_timeout = 20\nrespawn = false\n"
    )


def test_kill_without_signum_sends_the_stop_signal(circusd: Any, tmp_path: Path) -> None:
    out = tmp_path / "got"
    d = circusd(_watcher(out, "INT"))
    with Client(d.endpoint, timeout=30) as c:
        wait_for(lambda: out.exists() and out.read_text() == "up\n", what="the worker's traps")
        assert c.call("kill", name="w", waiting=True)["status"] == "ok"
        assert out.read_text() == "INT\n"


def test_kill_with_signum_sends_that_signal(circusd: Any, tmp_path: Path) -> None:
    out = tmp_path / "got"
    d = circusd(_watcher(out, "INT"))
    with Client(d.endpoint, timeout=30) as c:
        wait_for(lambda: out.exists() and out.read_text() == "up\n", what="the worker's traps")
        assert c.call("kill", name="w", signum="TERM", waiting=True)["status"] == "ok"
        assert out.read_text() == "TERM\n"
