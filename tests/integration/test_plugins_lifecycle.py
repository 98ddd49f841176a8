"""A Python plugin's life under a real circusd: Circus-shaped constructors, and exit 0 on SIGTERM at any
point (during handle_init, during a call made there, during a blocking fetch)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import wait_for
from integration.plugin_tap import PRIMER, EventTap

PLUGINS = """\
import os, time
from circus_linux.plugins import CircusPlugin


class CircusShaped(CircusPlugin):
    # The signature of every Circus 0.19 bundled plugin: ssh_server is required.
    name = "circus_shaped"

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server, **config):
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server=ssh_server, **config)
        self.filename = config["filename"]

    def handle_recv(self, data):
        with open(self.filename, "a") as f:
            f.write("%s\\n" % (data[0],))


class SlowInit(CircusPlugin):
    name = "slow_init"

    def __init__(self, marker, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def handle_init(self):
        open(self.marker + ".init", "w").close()
        time.sleep(2)  # opening a database, warming a cache...

    def handle_stop(self):
        open(self.marker + ".stopped", "w").close()


class CallInInit(SlowInit):
    def handle_init(self):
        open(self.marker + ".init", "w").close()
        self.call("list")  # nobody answers: waits its 5 s call timeout
"""


def _status(d: Any, name: str) -> str:
    return str(d.call("status", name=name).get("status"))


def test_plugin_with_circus_constructor_signature_starts(circusd: Any, tmp_path: Path) -> None:
    """run.build() never passed ssh_server, so a class declaring it as Circus's plugins do got TypeError
    and gave up."""
    (tmp_path / "lifeplugins.py").write_text(PLUGINS)
    seen = tmp_path / "seen.log"
    d = circusd(
        f"""
[watcher:w]
cmd = sleep 600
autostart = false

[plugin:shaped]
use = lifeplugins.CircusShaped
filename = {seen}
""",
        env={"PYTHONPATH": str(tmp_path)},
    )
    wait_for(lambda: _status(d, "plugin:shaped") == "active", what="the Circus-shaped plugin up")
    d.call("start", name="w", waiting=True)
    wait_for(lambda: seen.exists() and "watcher.w.start" in seen.read_text(), what="its events")
    assert "cannot start" not in d.log_text()


def _reap_codes(tap: EventTap, name: str) -> list[int]:
    return [int(p["exit_code"]) for t, p in tap.events if t == f"watcher.{name}.reap"]


def test_sigterm_during_handle_init_is_not_lost(circusd: Any, tmp_path: Path) -> None:
    """The loop's run() reset the stop that a SIGTERM during handle_init had asked for: the plugin ran on
    until circusd SIGKILLed it 5 s later."""
    (tmp_path / "lifeplugins.py").write_text(PLUGINS)
    marker = tmp_path / "slow"
    d = circusd(
        PRIMER
        + f"""
[plugin:slow]
use = lifeplugins.SlowInit
marker = {marker}
""",
        env={"PYTHONPATH": str(tmp_path)},
    )
    wait_for(lambda: _status(d, "plugin:slow") == "active", what="the plugin up")
    tap = EventTap(d.pubsub_endpoint)
    try:
        tap.prime(d)
        assert d.call("stop", name="plugin:slow", waiting=True, timeout=20)["status"] == "ok"
        os.unlink(f"{marker}.init")
        os.unlink(f"{marker}.stopped")
        d.call("start", name="plugin:slow")
        wait_for(lambda: os.path.exists(f"{marker}.init"), what="handle_init to begin")
        began = time.monotonic()
        assert d.call("stop", name="plugin:slow", waiting=True, timeout=20)["status"] == "ok"
        assert time.monotonic() - began < 4.5  # ended after handle_init's 2 s, not by the 5 s SIGKILL
        tap.wait(lambda ev: len(_reap_codes(tap, "plugin:slow")) == 2, what="both stops' reaps")
        assert _reap_codes(tap, "plugin:slow") == [0, 0]
        assert os.path.exists(f"{marker}.stopped")  # handle_stop ran
    finally:
        tap.close()


def test_sigterm_during_a_call_in_handle_init_exits_0(tmp_path: Path) -> None:
    """PluginStopping, raised by SIGTERM inside a call() made in handle_init, escaped start(): a traceback,
    exit 1, no handle_stop."""
    (tmp_path / "lifeplugins.py").write_text(PLUGINS)
    marker = tmp_path / "call"
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "CIRCUS_ENDPOINT": f"ipc://{tmp_path}/nobody-ctl.sock",
        "CIRCUS_PUBSUB_ENDPOINT": f"ipc://{tmp_path}/nobody-pub.sock",
        "CIRCUS_PLUGIN_NAME": "call",
        "CIRCUS_PLUGIN_OPTIONS": json.dumps({"marker": str(marker)}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "circus_linux.plugins.run", "lifeplugins.CallInInit"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: os.path.exists(f"{marker}.init") or proc.poll() is not None, what="handle_init")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=4)  # well before the call's own 5 s timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert os.path.exists(f"{marker}.stopped")


def test_http_observer_stops_at_once_during_a_hung_fetch(circusd: Any) -> None:
    """HttpObserver's fetch held SIGTERM for up to its timeout: stopping it against a hung backend took
    circusd's 5 s and a SIGKILL."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(4)
    hung.settimeout(20)
    port = hung.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        statsd_port = s.getsockname()[1]
    try:
        d = circusd(
            PRIMER
            + f"""
[plugin:http]
use = circus.plugins.http_observer.HttpObserver
check_url = http://127.0.0.1:{port}/
loop_rate = 2
timeout = 30
host = 127.0.0.1
port = {statsd_port}
"""
        )
        wait_for(lambda: _status(d, "plugin:http") == "active", what="the observer up")
        tap = EventTap(d.pubsub_endpoint)
        try:
            tap.prime(d)
            conn, _ = hung.accept()  # the first check has connected, and now waits for a reply
            try:
                began = time.monotonic()
                assert d.call("stop", name="plugin:http", waiting=True, timeout=20)["status"] == "ok"
                assert time.monotonic() - began < 1.5
            finally:
                conn.close()
            tap.wait(lambda ev: _reap_codes(tap, "plugin:http"), what="the observer's reap")
            assert _reap_codes(tap, "plugin:http") == [0]
        finally:
            tap.close()
    finally:
        hung.close()


def test_plugin_with_active_false_is_not_run(circusd: Any) -> None:
    """Circus's CircusPlugin option `active = false` (the plugin does not run) was ignored: the plugin ran
    and acted."""
    d = circusd(
        """
[watcher:w]
cmd = sleep 600

[plugin:flap]
use = circus.plugins.flapping.Flapping
active = false
"""
    )
    wait_for(lambda: _status(d, "w") == "active", what="w up")
    assert "plugin:flap" in d.call("list")["watchers"]
    assert _status(d, "plugin:flap") == "stopped" and d.pids("plugin:flap") == []
