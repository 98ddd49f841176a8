"""circusctl's main(): Circus argument syntax, readable output, --json, exit codes; against a fake arbiter."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import wait_for
from integration.control_fakes import ControlThread, running_control

from circus_linux.cli import circusctl


@pytest.fixture
def ctl(tmp_path: Path):
    with running_control(tmp_path, {"web": 2, "db": 1}) as control:
        yield control


def run(ctl: ControlThread, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = circusctl.main(["--endpoint", ctl.endpoint, "--timeout", "10", *argv], out, err)
    return code, out.getvalue(), err.getvalue()


def test_list_status_numbers_in_circus_format(ctl: ControlThread) -> None:
    assert run(ctl, "list") == (0, "web,db\n", "")
    code, out, _ = run(ctl, "list", "web")
    assert code == 0 and len(out.strip().split(",")) == 2
    assert run(ctl, "status") == (0, "db: active\nweb: active\n", "")
    assert run(ctl, "status", "web") == (0, "active\n", "")
    assert run(ctl, "numwatchers") == (0, "2\n", "")
    assert run(ctl, "numprocesses", "web") == (0, "2\n", "")


def test_scaling_commands(ctl: ControlThread) -> None:
    assert run(ctl, "incr", "web", "3", "--waiting") == (0, "5\n", "")
    assert run(ctl, "decr", "web", "--waiting") == (0, "4\n", "")
    assert run(ctl, "set", "web", "numprocesses", "1", "--waiting") == (0, "ok\n", "")
    assert run(ctl, "get", "web", "numprocesses") == (0, "numprocesses: 1\n", "")
    code, out, _ = run(ctl, "options", "web")
    assert code == 0 and "flapping.max_retry: 3\n" in out and "numprocesses: 1\n" in out


def test_stats_is_a_table(ctl: ControlThread) -> None:
    code, out, _ = run(ctl, "stats", "web")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == list(circusctl._STATS_HEADER)
    assert len(lines) == 3 and all(line.startswith("web") and "sleep 600" in line for line in lines[1:])
    code, out, _ = run(ctl, "stats")
    assert code == 0 and len(out.splitlines()) == 4
    code, out, _ = run(ctl, "dstats")
    assert code == 0 and "pid: " in out
    code, out, _ = run(ctl, "listsockets")
    assert out.splitlines()[1].split() == ["7", "web", "127.0.0.1:8080", "2048"]


def test_json_and_prettify(ctl: ControlThread) -> None:
    code, out, _ = run(ctl, "--json", "list")
    assert code == 0 and json.loads(out)["watchers"] == ["web", "db"]
    code, out, _ = run(ctl, "numwatchers", "--prettify")  # global options after the command, as in Circus
    assert code == 0 and json.loads(out)["numwatchers"] == 2 and "\n  " in out


def test_errors_exit_non_zero(ctl: ControlThread) -> None:
    code, out, err = run(ctl, "incr", "missing")
    assert (code, out, err) == (1, "", "error: program missing not found\n")
    code, out, _ = run(ctl, "--json", "get", "web", "nokey")
    assert code == 1 and json.loads(out)["errno"] == 3
    assert run(ctl, "set", "web", "numprocesses")[0] == 2  # usage error
    assert circusctl.main(["--endpoint", "ipc:///nonexistent/x", "--timeout", "0.2", "list"],
                          io.StringIO(), io.StringIO()) == 1  # fmt: skip


def test_signal_kill_start_stop_syntax(ctl: ControlThread) -> None:
    web = ctl.arbiter.watchers["web"]
    pid = ctl.call_soon(lambda: web.processes()[0].pid)
    assert run(ctl, "signal", "web", "hup") == (0, "ok\n", "")
    assert run(ctl, "signal", "web", str(pid), "--children", "SIGUSR1")[0] == 0
    assert web.signals == [(signal.SIGHUP, None, False, False), (signal.SIGUSR1, pid, True, False)]
    assert (
        run(ctl, "kill", "web", str(pid), "--signum", "term", "--graceful-timeout", "3", "--waiting")[0] == 0
    )
    assert web.kills == [(pid, signal.SIGTERM, 3.0)]
    assert run(ctl, "stop", "w*", "--waiting") == (0, "ok\n", "")
    assert run(ctl, "status", "web") == (0, "stopped\n", "")
    assert run(ctl, "start", "--waiting") == (0, "ok\n", "")
    assert run(ctl, "reload", "web", "--terminate", "--waiting") == (0, "ok\n", "")
    assert run(ctl, "add", "--start", "--waiting", "extra", "sleep", "600") == (0, "ok\n", "")
    assert run(ctl, "list") == (0, "web,db,extra\n", "")
    assert run(ctl, "rm", "extra", "--waiting") == (0, "ok\n", "")


def test_listen_prints_events(ctl: ControlThread) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "circus_linux.cli.circusctl", "listen", ctl.pubsub, "watcher.", "-n", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()

        def printed() -> bool:
            # the subscriber joins at its own pace: emit until it has printed one event
            ctl.call_soon(ctl.publisher.emit, "watcher.web.spawn", {"process_pid": 1})
            reader.join(0.05)
            return bool(lines)

        wait_for(printed, what="circusctl listen output")
        assert lines[0].startswith("watcher.web.spawn: {") and '"process_pid": 1' in lines[0]
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_interactive_shell(ctl: ControlThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("list\nstatus web\nbogus\nhelp incr\n"))
    out, err = io.StringIO(), io.StringIO()
    controller = circusctl.Controller(ctl.endpoint, 10, False, False, out, err)
    shell = circusctl.Shell(controller, circusctl.build_parser())
    shell.use_rawinput = False
    shell.stdin = sys.stdin
    shell.stdout = out
    shell.cmdloop()
    text = out.getvalue()
    assert "web,db\n" in text and "active\n" in text and "add processes" in text
    assert "unknown command 'bogus'" in err.getvalue()
    assert shell.completenames("st") == ["start ", "stop ", "status ", "stats "]
    assert shell.complete_incr("w", "incr w", 5, 6) == ["web"]
    controller.close()
