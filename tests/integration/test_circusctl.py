"""circusctl's main(): Circus argument syntax, readable output, --json, exit codes; against a fake arbiter."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import wait_for
from integration.control_fakes import ControlThread, running_control

from circus_linux.cli import circusctl
from circus_linux.config.values import PID_MAX_LIMIT
from circus_linux.control.client import Client


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
    # an error reply exits 3, as Circus's circusctl does; with --json/--prettify too (Circus: 0 there)
    code, out, err = run(ctl, "incr", "missing")
    assert (code, out, err) == (3, "", "error: program missing not found\n")
    code, out, err = run(ctl, "--json", "get", "web", "nokey")
    assert code == 3 and json.loads(out)["errno"] == 3 and err == ""
    code, out, _ = run(ctl, "get", "web", "nokey", "--prettify")
    assert code == 3 and json.loads(out)["status"] == "error"
    assert run(ctl, "set", "web", "numprocesses")[0] == 2  # usage error
    # not reached: a timeout, a malformed endpoint (one line, no traceback) -> 1
    assert circusctl.main(["--endpoint", "ipc:///nonexistent/x", "--timeout", "0.2", "list"],
                          io.StringIO(), io.StringIO()) == 1  # fmt: skip
    err_io = io.StringIO()
    assert circusctl.main(["--endpoint", "nonsense", "list"], io.StringIO(), err_io) == 1
    text = err_io.getvalue()
    assert text.startswith("error: bad endpoint 'nonsense'") and text.count("\n") == 1


def test_several_hosts_exit_like_one(ctl: ControlThread) -> None:
    def hosts(*argv: str) -> int:
        return circusctl.main(argv, io.StringIO(), io.StringIO())

    two = ("--endpoint", ctl.endpoint, "--endpoint", ctl.endpoint, "--timeout", "10")
    assert hosts(*two, "numwatchers") == 0
    assert hosts(*two, "incr", "missing") == 3
    assert hosts(*two, "--json", "incr", "missing") == 3
    # a host that does not answer outweighs a host's error reply
    gone = ("--endpoint", ctl.endpoint, "--endpoint", "ipc:///nonexistent/x", "--timeout", "0.5")
    assert hosts(*gone, "incr", "missing") == 1
    assert hosts("--endpoint", ctl.endpoint, "--endpoint", "nonsense", "list") == 1


def test_get_prints_keys_in_the_order_asked(ctl: ControlThread) -> None:
    code, out, _ = run(ctl, "get", "web", "numprocesses", "graceful_timeout", "flapping.max_retry", "cmd")
    assert code == 0
    assert out == "numprocesses: 2\ngraceful_timeout: 30.0\nflapping.max_retry: 3\ncmd: sleep 600\n"
    code, out, _ = run(ctl, "--json", "get", "web", "graceful_timeout", "cmd", "numprocesses")
    assert list(json.loads(out)["options"]) == ["graceful_timeout", "cmd", "numprocesses"]


def test_incr_decr_leave_a_singleton_alone(ctl: ControlThread) -> None:
    db = ctl.arbiter.watchers["db"]
    ctl.call_soon(setattr, db, "config", SimpleNamespace(singleton=True))
    sentence = "This watcher is a Singleton - not changing the number of processes\n"
    for argv in (["incr", "db"], ["incr", "db", "3", "--waiting"], ["decr", "db"], ["decr", "db", "2"]):
        assert run(ctl, *argv) == (0, sentence, ""), argv
    assert run(ctl, "decr", "db", "--waiting") == (0, sentence, "")
    code, out, _ = run(ctl, "--json", "incr", "db", "--waiting")
    reply = json.loads(out)
    assert code == 0 and (reply["status"], reply["numprocesses"], reply["singleton"]) == ("ok", 1, True)
    assert db.numprocesses == 1 and len(db.processes()) == 1


def test_incr_has_an_upper_bound(ctl: ControlThread) -> None:
    web = ctl.arbiter.watchers["web"]
    assert run(ctl, "stop", "web", "--waiting")[0] == 0  # stopped: the count allowed below spawns nothing
    code, out, err = run(ctl, "incr", "web", str(PID_MAX_LIMIT))
    assert (code, out) == (3, "") and "nb" in err and str(PID_MAX_LIMIT) in err
    with Client(ctl.endpoint, 10) as client:
        for nb in (10**30, 1e30, PID_MAX_LIMIT - 1):
            reply = client.request("incr", name="web", nb=nb, waiting=True)
            assert reply["status"] == "error" and reply["errno"] == 3 and "nb" in reply["reason"], (nb, reply)
        assert web.numprocesses == 2
        reply = client.request("incr", name="web", nb=PID_MAX_LIMIT - 2, waiting=True)
        assert reply["numprocesses"] == PID_MAX_LIMIT and web.processes() == []


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


@pytest.mark.parametrize("form", ["ours", "circus"])
def test_listen_prints_events(ctl: ControlThread, form: str) -> None:
    # ours: `listen ENDPOINT TOPIC`; Circus's: `--endpoint ENDPOINT listen TOPIC`
    argv = ["listen", ctl.pubsub] if form == "ours" else ["--endpoint", ctl.pubsub, "listen"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "circus_linux.cli.circusctl", *argv, "watcher.", "-n", "1"],
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


def test_singleton_and_upper_bound_in_a_real_circusd(circusd: Any) -> None:
    d = circusd("[watcher:one]\ncmd = sleep 600\nsingleton = true\n\n[watcher:web]\ncmd = sleep 600\n")
    pid = wait_for(lambda: d.pids("one"), what="the singleton's worker")

    def ctl(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = circusctl.main(["--endpoint", d.endpoint, "--timeout", "20", *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    sentence = "This watcher is a Singleton - not changing the number of processes\n"
    assert ctl("incr", "one") == (0, sentence, "")
    assert ctl("incr", "one", "--waiting") == (0, sentence, "")
    assert ctl("decr", "one", "--waiting") == (0, sentence, "")
    reply = d.call("incr", name="one", nb=5, waiting=True)
    assert (reply["status"], reply["numprocesses"], reply["singleton"]) == ("ok", 1, True)
    assert d.pids("one") == pid and ctl("numprocesses", "one") == (0, "1\n", "")
    # nb past PID_MAX_LIMIT: refused before anything changes (circusd used to freeze spawning forever)
    for nb in (10**30, 1e30):
        reply = d.call("incr", name="web", nb=nb)
        assert (reply["status"], reply["errno"]) == ("error", 3) and "nb" in reply["reason"], reply
    code, _, err = ctl("incr", "web", str(PID_MAX_LIMIT))
    assert code == 3 and "nb" in err
    assert ctl("numprocesses", "web") == (0, "1\n", "")
    assert ctl("get", "web", "numprocesses", "cmd") == (0, "numprocesses: 1\ncmd: sleep 600\n", "")
