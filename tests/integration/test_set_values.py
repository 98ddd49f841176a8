"""`set` in a real circusd: every known key parsed as the ini parses it, before the reply; a bad value is
errno 3 naming the key and changes nothing (a value stored unparsed used to wedge the watcher)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from conftest import wait_for

from circus_linux.control.client import Client

SECTIONS = """
[socket:web]
host = 127.0.0.1
port = 0

[watcher:w]
cmd = sleep 600
numprocesses = 2
graceful_timeout = 5
"""


def _error(reply: dict[str, Any]) -> str:
    assert reply["status"] == "error" and reply["errno"] == 3, reply
    return str(reply["reason"])


def test_text_values_are_parsed_like_the_ini_and_the_watcher_still_stops(circusd: Any) -> None:
    d = circusd(SECTIONS)
    with Client(d.endpoint, timeout=20) as c:
        before = c.call("list", name="w")["pids"]
        # What `circusctl set w stop_signal INT ...` sends: text.
        reply = c.call("set", name="w", options={"stop_signal": "INT", "send_hup": "no", "max_retry": "3"})
        assert reply["status"] == "ok", reply
        opts = c.call("get", name="w", keys=["stop_signal", "send_hup", "max_retry"])["options"]
        assert opts == {"stop_signal": int(signal.SIGINT), "send_hup": False, "max_retry": 3}
        assert c.call("stop", name="w", waiting=True)["status"] == "ok"
        assert c.call("status", name="w")["status"] == "stopped"
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in before), what="the workers gone")
        assert c.call("start", name="w", waiting=True)["status"] == "ok"
        assert len(c.call("list", name="w")["pids"]) == 2


def test_spawn_keys_given_as_text_roll_the_pool_with_typed_values(circusd: Any, tmp_path: Path) -> None:
    d = circusd(SECTIONS)
    with Client(d.endpoint, timeout=30) as c:
        old = set(c.call("list", name="w")["pids"])
        reply = c.call(
            "set",
            name="w",
            options={"env": "GREETING=hello,OTHER=x", "uid": str(os.getuid()), "rlimit_nofile": "512",
                     "close_child_stdout": "false"},
            waiting=True,
        )
        assert reply["status"] == "ok", reply
        wait_for(lambda: len(set(c.call("list", name="w")["pids"]) - old) == 2, what="the new pool")
        pid = c.call("list", name="w")["pids"][0]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"GREETING=hello" in environ and b"OTHER=x" in environ
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert any(line.startswith("Max open files") and line.split()[3:5] == ["512", "512"]
                   for line in limits.splitlines()), limits
        assert c.call("get", name="w", keys=["env"])["options"]["env"]["GREETING"] == "hello"


def test_bad_values_are_refused_naming_the_key_and_nothing_changes(circusd: Any) -> None:
    d = circusd(SECTIONS)
    with Client(d.endpoint, timeout=20) as c:
        pids = c.call("list", name="w")["pids"]
        assert "stop_signal" in _error(c.request("set", name="w", options={"stop_signal": "NOPE"}))
        assert "send_hup" in _error(c.request("set", name="w", options={"send_hup": "maybe"}))
        assert "numprocesses" in _error(c.request("set", name="w", options={"numprocesses": True}))
        assert "numprocesses" in _error(c.request("set", name="w", options={"numprocesses": 10**30}))
        assert "env" in _error(c.request("set", name="w", options={"env": "novalue"}))
        assert "rlimit_bogus" in _error(c.request("set", name="w", options={"rlimit_bogus": "1"}))
        assert "hooks.nope" in _error(c.request("set", name="w", options={"hooks.nope": "a.b"}))
        assert "max_bytes" in _error(c.request("set", name="w", options={"stdout_stream.max_bytes": "lots"}))
        # A config field only the file can change:
        assert "sockets" in _error(c.request("set", name="w", options={"sockets": "web"}))
        # One bad key refuses the whole request: the good one next to it is not applied either.
        _error(c.request("set", name="w", options={"graceful_timeout": "7", "stop_signal": "NOPE"}))
        assert c.call("get", name="w", keys=["graceful_timeout"])["options"] == {"graceful_timeout": 5.0}
        assert c.call("list", name="w")["pids"] == pids and c.call("status", name="w")["status"] == "active"


def test_unknown_keys_stay_free_form_options_as_text(circusd: Any) -> None:
    d = circusd(SECTIONS)
    with Client(d.endpoint, timeout=20) as c:
        assert c.call("set", name="w", options={"flapping.max_retry": 3, "note": "hi"})["status"] == "ok"
        got = c.call("get", name="w", keys=["flapping.max_retry", "note"])["options"]
        assert got == {"flapping.max_retry": "3", "note": "hi"}


def test_a_singleton_cannot_be_set_above_one(circusd: Any) -> None:
    d = circusd("[watcher:one]\ncmd = sleep 600\nsingleton = true\n")
    with Client(d.endpoint, timeout=20) as c:
        assert "singleton" in _error(c.request("set", name="one", options={"numprocesses": 2}))
        assert c.call("numprocesses", name="one")["numprocesses"] == 1


def test_circusctl_set_sends_text_circusd_parses(circusd: Any) -> None:
    import io

    from circus_linux.cli import circusctl

    d = circusd(SECTIONS)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = circusctl.main(["--endpoint", d.endpoint, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    assert run("set", "w", "stop_signal", "INT", "close_child_stdout", "false")[0] == 0
    with Client(d.endpoint, timeout=20) as c:
        got = c.call("get", name="w", keys=["stop_signal", "close_child_stdout"])["options"]
        assert got == {"stop_signal": int(signal.SIGINT), "close_child_stdout": False}
    code, _out, err = run("set", "w", "send_hup", "maybe")
    assert code == 3 and "send_hup" in err
    code, _out, err = run("set", "w", "numprocesses", "lots")
    assert code == 3 and "numprocesses" in err


def test_a_stream_that_cannot_be_made_is_refused_before_the_reply(circusd: Any, tmp_path: Path) -> None:
    (tmp_path / "streamboom.py").write_text(
        "class Boom:\n    def __init__(self, **options):\n        raise RuntimeError('log server down')\n"
    )
    out = tmp_path / "out.log"
    d = circusd(
        f"[watcher:w]\ncmd = sleep 600\nstdout_stream.class = FileStream\nstdout_stream.filename = {out}\n",
        env={"PYTHONPATH": str(tmp_path)},
    )
    with Client(d.endpoint, timeout=20) as c:
        # Without waiting too: the error used to come after an ok reply, in the log only.
        reply = c.request("set", name="w", options={"stdout_stream.class": "streamboom.Boom"})
        assert reply["status"] == "error" and reply["errno"] == 3, reply
        assert "streamboom.Boom" in reply["reason"] and "log server down" in reply["reason"]
        conf = c.call("options", name="w")["options"]["stdout_stream_conf"]
        assert conf == {"class": "FileStream", "filename": str(out)}
        # A good change still works, at once.
        new = tmp_path / "new.log"
        assert c.call("set", name="w", options={"stdout_stream.filename": str(new)})["status"] == "ok"
        assert c.call("options", name="w")["options"]["stdout_stream_conf"]["filename"] == str(new)
