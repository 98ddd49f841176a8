"""[plugin:NAME] sections as supervised plugin processes: the talk's Logger, Flapping, statsd, autoscaler."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import circusd_argv, wait_for
from integration.plugin_tap import PRIMER, EventTap

from circus_linux.errors import ExitCode

# The talk's Logger plugin ("Étendre circus"), verbatim but for the import.
TALK_LOGGER = """\
from circus_linux.plugins import CircusPlugin


class Logger(CircusPlugin):

    name = 'logger'

    def __init__(self, filename, **kwargs):
        super(Logger, self).__init__(**kwargs)
        self.filename = filename
        self.file = None

    def handle_init(self):
        self.file = open(self.filename, 'a+')

    def handle_stop(self):
        self.file.close()

    def handle_recv(self, data):
        topic, msg = data
        self.file.write('%s::%s' % (topic, msg))
"""


def active(d: Any, name: str) -> bool:
    return d.call("status", name=name).get("status") == "active"


def test_talk_logger_plugin_writes_the_events_it_receives(circusd: Any, tmp_path: Path) -> None:
    (tmp_path / "talklogger.py").write_text(TALK_LOGGER)
    events = tmp_path / "events.log"
    d = circusd(
        f"""
[watcher:dummy]
cmd = sleep 600

[plugin:logger]
use = talklogger.Logger
filename = {events}
""",
        env={"PYTHONPATH": str(tmp_path)},
    )
    wait_for(lambda: active(d, "plugin:logger"), what="the logger plugin to be up")
    assert "plugin:logger" in d.call("list")["watchers"]
    assert d.call("incr", name="dummy", waiting=True)["numprocesses"] == 2
    new_pid = max(d.pids("dummy"))
    # The Logger only flushes on close: stop its watcher (SIGTERM -> handle_stop) and read the file.
    assert d.call("stop", name="plugin:logger", waiting=True)["status"] == "ok"
    text = events.read_text()
    assert f'watcher.dummy.spawn::{{"process_pid": {new_pid}' in text
    assert "b'" not in text  # topics and messages read as text, not as bytes reprs


def test_circusd_shutdown_publishes_its_events_to_listeners_and_plugins(circusd: Any, tmp_path: Path) -> None:
    """The PUB socket closed before the watchers stopped: a SIGTERM'd circusd published nothing of its
    shutdown, and plugins, which stop last, never saw the others stop. Circus stops the watchers first."""
    (tmp_path / "talklogger.py").write_text(TALK_LOGGER)
    events = tmp_path / "events.log"
    d = circusd(
        PRIMER
        + f"""
[watcher:w]
cmd = sleep 600

[plugin:logger]
use = talklogger.Logger
filename = {events}
""",
        env={"PYTHONPATH": str(tmp_path)},
    )
    wait_for(lambda: active(d, "plugin:logger") and active(d, "w"), what="the plugin and w to be up")
    tap = EventTap(d.pubsub_endpoint, prefix=b"")
    try:
        tap.prime(d)
        pid = d.pids("w")[0]
        assert d.stop() == 0
        tap.wait(lambda ev: "watcher.plugin:logger.stop" in [t for t, _ in ev], what="the plugin's stop")
        topics = tap.topics()
        assert "arbiter.stopping" in topics
        assert topics.index("watcher.w.stop") < topics.index("watcher.plugin:logger.stop")
        reaps = [p for t, p in tap.events if t == "watcher.w.reap"]
        assert [r["process_pid"] for r in reaps] == [pid]
    finally:
        tap.close()
    text = events.read_text()  # the Logger wrote it and closed it in handle_stop
    assert f'watcher.w.kill::{{"process_pid": {pid}' in text and "watcher.w.stop::" in text


def test_plugin_that_cannot_start_gives_up_without_hurting_circusd(circusd: Any) -> None:
    # A class that does not exist is a config error now (test_bad_plugin_config_errors_...); one whose
    # constructor refuses its options (ResourceWatcher needs watcher = NAME) still fails at run time.
    d = circusd(
        """
[watcher:dummy]
cmd = sleep 600

[plugin:broken]
use = circus.plugins.resource_watcher.ResourceWatcher
"""
    )
    # 4 failed starts of a Python process each: seconds on a loaded machine.
    wait_for(lambda: d.call("status", name="plugin:broken")["status"] == "stopped", 30, what="give up")
    assert active(d, "dummy")
    wait_for(lambda: "cannot start" in d.log_text(), what="the plugin's error in the log")
    assert "resource_watcher needs watcher = NAME" in d.log_text()


def test_bad_plugin_config_errors_refused_by_check_and_start(circusd: Any, tmp_path: Path) -> None:
    # review plugins #10: a missing plugin class or hook module passed --check; Circus refuses to start
    marker = tmp_path / "worker-ran"
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "herehooks.py").write_text("def ok(**kwargs):\n    return True\n")
    (tmp_path / "heretalk.py").write_text(TALK_LOGGER)  # a plugin process finds it in its cwd (-m)
    sections = f"""
[watcher:w]
cmd = /bin/sh -c 'touch {marker}; exec sleep 1000'
hooks.before_start = herehooks.ok
hooks.after_start = no_such_hook_module.fn

[plugin:typo]
use = circus.plugins.flapping.Flaping

[plugin:gone]
use = no_such_plugin_module.Plugin

[plugin:talk]
use = heretalk.Logger
filename = {tmp_path / "events.log"}
"""
    hooks_path = {"PYTHONPATH": str(tmp_path / "hooks")}
    d = circusd(sections, wait=False, env=hooks_path)  # cwd = tmp_path
    lines = d.path.read_text().splitlines()

    def at(text: str) -> str:
        return f"{d.path}:{lines.index(text) + 1}"

    assert d.proc.wait(30) == ExitCode.CONFIG
    log = d.log_text()
    assert "circusd: invalid configuration (3 error(s))" in log, log
    hook = "hooks.after_start = no_such_hook_module.fn"
    assert f"{at(hook)} [watcher:w] hooks.after_start: cannot import no_such_hook_module.fn: No module" in log
    typo = "use = circus.plugins.flapping.Flaping"
    assert (f"{at(typo)} [plugin:typo] use: cannot import circus_linux.plugins.flapping.Flaping: "
            "circus_linux.plugins.flapping has no class Flaping") in log, log
    gone = "use = no_such_plugin_module.Plugin"
    assert f"{at(gone)} [plugin:gone] use: cannot import no_such_plugin_module.Plugin: No module" in log, log
    assert not marker.exists()
    check = subprocess.run(circusd_argv("--check", str(d.path)), capture_output=True, text=True,
                           timeout=30, cwd=tmp_path, env={**os.environ, **hooks_path})
    assert check.returncode == ExitCode.CONFIG, check.stderr
    assert check.stderr.splitlines() == log.splitlines(), (check.stderr, log)

    # a bad option value of a bundled plugin: named by file, line, section and key at load time, and by
    # section and key in the plugin's own log when it gets one anyway (a reloadconfig, a hand-made env)
    flap = tmp_path / "flap.ini"
    flap.write_text("[plugin:flap]\nuse = circus.plugins.flapping.Flapping\nretry_in = abc\n")
    check = subprocess.run(circusd_argv("--check", str(flap)), capture_output=True, text=True, timeout=30)
    assert check.returncode == ExitCode.CONFIG, check.stderr
    assert f"{flap}:3 [plugin:flap] retry_in: expected a number, got 'abc'" in check.stderr, check.stderr
    env = {**os.environ, "CIRCUS_PLUGIN_NAME": "flap", "CIRCUS_PLUGIN_OPTIONS": '{"retry_in": "abc"}'}
    runner = [sys.executable, "-P", "-m", "circus_linux.plugins.run", "circus.plugins.flapping.Flapping"]
    run = subprocess.run(runner, capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 2, run.stderr
    assert "[plugin:flap] retry_in: expected a number, got 'abc'" in run.stderr, run.stderr


def test_plugin_name_collision_refused_by_check_add_and_reloadconfig(circusd: Any, tmp_path: Path) -> None:
    # review plugins #13: [watcher:plugin:X] and [plugin:X] collided silently (one of them was dropped)
    both = tmp_path / "both.ini"
    both.write_text("[watcher:plugin:flap]\ncmd = sleep 1000\n\n"
                    "[plugin:flap]\nuse = circus.plugins.flapping.Flapping\n")
    check = subprocess.run(circusd_argv("--check", str(both)), capture_output=True, text=True, timeout=30)
    assert check.returncode == ExitCode.CONFIG, check.stderr
    assert (f"{both}:4 [plugin:flap]: duplicate watcher name: [plugin:flap] runs as the watcher plugin:flap, "
            f"which [watcher:plugin:flap] ({both}:1) already names") in check.stderr, check.stderr

    d = circusd("[watcher:plugin:other]\ncmd = sleep 1000\n\n"
                "[plugin:flap]\nuse = circus.plugins.flapping.Flapping\n")
    plugin = wait_for(lambda: d.pids("plugin:flap"), what="the plugin's process")
    other = wait_for(lambda: d.pids("plugin:other"), what="the watcher named plugin:other")
    reply = d.call("add", name="plugin:flap", cmd="sleep 1000", start=True)
    assert reply["status"] == "error" and reply["errno"] == 5, reply
    assert reply["reason"] == "watcher plugin:flap already exists: it runs [plugin:flap]", reply
    # a watcher of that name is not a plugin's: reloadconfig keeps it (it used to be "added" again each time)
    for _ in range(2):
        reply = d.call("reloadconfig", waiting=True, timeout=30)
        assert reply["status"] == "ok" and reply.get("added") == [], reply
    assert d.pids("plugin:flap") == plugin and d.pids("plugin:other") == other
    assert d.call("numwatchers")["numwatchers"] == 2

    # the file swaps [plugin:flap] for a [watcher:plugin:flap]: refused as a whole while the plugin runs
    plugin_sec = "[plugin:flap]\nuse = circus.plugins.flapping.Flapping\n"
    swapped = "[watcher:plugin:flap]\ncmd = sleep 1000\n"
    d.path.write_text(d.path.read_text().replace(plugin_sec, swapped))
    reply = d.call("reloadconfig", waiting=True, timeout=30)
    assert reply["status"] == "error" and reply["errno"] == 5, reply
    assert "watcher plugin:flap already exists: it runs [plugin:flap]" in reply["reason"], reply
    assert d.pids("plugin:flap") == plugin and d.pids("plugin:other") == other


FLAPPING = """
[watcher:crash]
cmd = sh -c 'exit 3'
autostart = false
max_retry = -1
{overrides}

[plugin:flapping]
use = circus.plugins.flapping.Flapping
retry_in = {retry_in}
max_retry = 2
attempts = 3
window = 2
"""


def _flapping_scenario(circusd: Any, retry_in: str, overrides: str, expected_gap: float) -> None:
    d = circusd(PRIMER + FLAPPING.format(retry_in=retry_in, overrides=overrides))
    wait_for(lambda: active(d, "plugin:flapping"), what="the flapping plugin to be up")
    tap = EventTap(d.pubsub_endpoint)
    try:
        tap.prime(d)
        assert d.call("start", name="crash")["status"] == "ok"
        timeout = 3 * expected_gap + 15
        tap.wait(lambda ev: len([t for t, _ in ev if t == "watcher.crash.stop"]) >= 3, timeout, "3 stops")
        # Given up: no start comes after the third stop, even well past retry_in.
        deadline = time.monotonic() + expected_gap + 0.5
        while time.monotonic() < deadline:
            tap.pump(deadline - time.monotonic())
        lifecycle = [
            (t.rsplit(".", 1)[1], p["time"]) for t, p in tap.events if t.startswith("watcher.crash.")
        ]
        kinds = [k for k, _ in lifecycle if k in ("start", "stop")]
        assert kinds == ["start", "stop", "start", "stop", "start", "stop"], kinds
        # Each stop came after a burst of at least `attempts` reaps since the start before it.
        reaps = 0
        for kind, _ in lifecycle:
            if kind == "reap":
                reaps += 1
            elif kind == "start":
                reaps = 0
            elif kind == "stop":
                assert reaps >= 3
        stops = [t for k, t in lifecycle if k == "stop"]
        starts = [t for k, t in lifecycle if k == "start"]
        for stop, restart in zip(stops[:2], starts[1:], strict=True):
            assert restart - stop >= expected_gap * 0.9, (stop, restart)
        assert d.call("status", name="crash")["status"] == "stopped"
    finally:
        tap.close()


def test_flapping_stops_retries_and_gives_up_with_per_watcher_retry_in(circusd: Any) -> None:
    # The plugin says retry_in = 3 (the talk); the watcher's flapping.retry_in = 0.5 overrides it.
    _flapping_scenario(circusd, retry_in="3", overrides="flapping.retry_in = 0.5", expected_gap=0.5)


@pytest.mark.slow
def test_flapping_with_the_talks_config(circusd: Any) -> None:
    # [plugin:flapping] retry_in = 3, max_retry = 2 as on the slide; smaller attempts/window.
    _flapping_scenario(circusd, retry_in="3", overrides="", expected_gap=3.0)


def test_flapping_uses_the_reloaded_max_retry_after_reloadconfig(circusd: Any) -> None:
    """Flapping cached a watcher's flapping.* options until `updated`, which reloadconfig never emits: a
    max_retry lowered to 0 in the file still got the old max_retry's retries."""
    d = circusd(
        """
[watcher:w]
cmd = sleep 600
flapping.attempts = 3
flapping.window = 30
flapping.retry_in = 60
flapping.max_retry = 5

[plugin:flap]
use = circus.plugins.flapping.Flapping
"""
    )
    wait_for(lambda: active(d, "plugin:flap") and active(d, "w"), what="the plugin and w up")

    def kill_worker() -> None:
        pid = wait_for(lambda: d.pids("w"), what="a worker of w")[0]
        d.call("signal", name="w", signum=9)
        wait_for(lambda: d.pids("w") and d.pids("w") != [pid], what="w's worker replaced")

    kill_worker()  # one reap: the plugin asks for w's options (max_retry = 5) and keeps them
    d.path.write_text(d.path.read_text().replace("flapping.max_retry = 5", "flapping.max_retry = 0"))
    reply = d.call("reloadconfig", waiting=True, timeout=30)
    assert reply["status"] == "ok" and reply["changed"] == ["w"], reply
    # The reload's own reap of the old worker is the second reap; this is the third: a flap.
    wait_for(lambda: d.pids("w"), what="w's new worker")
    d.call("signal", name="w", signum=9)
    wait_for(lambda: "reached max_retry=0" in d.log_text(), what="the give-up under the reloaded max_retry")
    assert "retry in 60s" not in d.log_text()
    wait_for(lambda: d.call("status", name="w")["status"] == "stopped", what="w left stopped")


def _udp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    return sock


def _collect(sock: socket.socket, predicate: Any, timeout: float = 10.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not predicate(lines):
        if time.monotonic() > deadline:
            raise AssertionError(f"statsd lines so far: {lines}")
        try:
            lines.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return lines


def test_statsd_emitter_and_full_stats_against_a_udp_listener(circusd: Any) -> None:
    udp = _udp_listener()
    port = udp.getsockname()[1]
    try:
        d = circusd(
            f"""
[watcher:dummy]
cmd = sleep 600

[plugin:statsd]
use = circus.plugins.statsd.StatsdEmitter
host = 127.0.0.1
port = {port}
prefix = test.circus

[plugin:fullstats]
use = circus.plugins.statsd.FullStats
host = 127.0.0.1
port = {port}
prefix = full
loop_rate = 0.2
"""
        )
        wait_for(lambda: active(d, "plugin:statsd"), what="the statsd plugin to be up")
        lines = _collect(udp, lambda ls: "full._stats.processes_num:1|g" in ls)  # plugin watchers skipped
        assert "full.dummy.processes:1|g" in lines, lines
        assert any(x.startswith("full.dummy.cpu:") and x.endswith("|g") for x in lines), lines
        assert "full._stats.watchers_num:1|g" in lines
        d.call("incr", name="dummy", waiting=True)
        lines = _collect(udp, lambda ls: "test.circus.dummy.spawn:1|c" in ls)
        assert "test.circus.dummy.spawn:1|c" in lines
        assert not any(x.startswith("full.dummy.spawn") for x in lines)  # FullStats counts no events
    finally:
        udp.close()


def test_full_stats_and_http_observer_send_circus_metric_names(circusd: Any) -> None:
    """FullStats sent <w>.cpu/.memory/.processes (plugin watchers too) and HttpObserver
    http_observer.fetch/.<status> under circus.app.watcher: none of Circus's names, on which users'
    dashboards and alerts are built."""
    import http.server
    import threading

    from circus_linux.plugins.http_observer import HttpObserver

    udp = _udp_listener()
    port = udp.getsockname()[1]

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        circusd(
            f"""
[watcher:web]
cmd = sleep 600
numprocesses = 2

[plugin:fullstats]
use = circus.plugins.statsd.FullStats
host = 127.0.0.1
port = {port}
loop_rate = 0.2
"""
        )
        prefix = "circus.app.watcher._stats.web."
        lines = _collect(udp, lambda ls: f"{prefix}watchers_num:2|g" in ls and f"{prefix}mem_sum" in str(ls))
        for gauge in ("cpu_max", "cpu_sum", "mem_pct_max", "mem_pct_sum", "mem_max", "mem_sum"):
            assert any(x.startswith(f"{prefix}{gauge}:") and x.endswith("|g") for x in lines), (gauge, lines)
        mem_sum = next(x for x in lines if x.startswith(f"{prefix}mem_sum:"))
        assert int(mem_sum.split(":")[1].split("|")[0]) > 0  # RSS bytes, as Circus's human2bytes(mem_info1)
        assert not any("plugin" in x for x in lines)
        observer = HttpObserver(
            host="127.0.0.1",
            port=str(port),
            check_url=f"http://127.0.0.1:{server.server_port}/ok",
            restart_on_error="web",
        )
        restarts: list[str] = []
        observer.cast = lambda command, **props: restarts.append(command)  # type: ignore[method-assign]
        try:
            observer.check()
            observer.check_url = f"http://127.0.0.1:{server.server_port}/down"
            observer.check()
        finally:
            observer.statsd.close()
            observer.context.term()
        want = "circus.http_observer.watcher.http_stats."
        lines = _collect(udp, lambda ls: f"{want}restart_on_error:1|c" in ls)
        assert any(x.startswith(f"{want}request_time:") and x.endswith("|ms") for x in lines), lines
        assert f"{want}error:1|c" in lines and f"{want}error.503:1|c" in lines
        assert restarts == ["restart"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        udp.close()


ACCEPT_WHEN_FILE = (
    "import os, socket, sys, time\n"
    "s = socket.socket(fileno=int(sys.argv[1]))\n"
    "while not os.path.exists(sys.argv[2]): time.sleep(0.02)\n"
    "s.setblocking(True)\n"
    "while True: s.accept()[0].close()\n"
)


def test_autoscaler_follows_the_accept_queue(circusd: Any, tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(ACCEPT_WHEN_FILE)
    drain = tmp_path / "drain"
    d = circusd(
        f"""
[socket:web]
host = 127.0.0.1
port = 0
backlog = 128

[watcher:web]
cmd = {_python()} {worker} $(circus.sockets.web) {drain}
use_sockets = true

[plugin:scale]
use = circus_linux.plugins.autoscaler.Autoscaler
watcher = web
socket = web
min_workers = 1
max_workers = 3
queue_high = 2
loop_rate = 0.1
cooldown = 0.2
"""
    )
    entry = next(s for s in d.call("listsockets")["sockets"] if s["name"] == "web")
    if entry.get("queued") is None:
        pytest.skip("listsockets reports no accept-queue depth here (sock_diag unavailable)")
    clients = []
    try:
        # Nobody accepts yet: every connection the kernel completes waits in the accept queue.
        for _ in range(30):
            clients.append(socket.create_connection(("127.0.0.1", entry["port"]), timeout=5))
        wait_for(lambda: d.call("numprocesses", name="web")["numprocesses"] == 3, what="scale up to 3")
        assert len(d.pids("web")) == 3
        drain.write_text("")  # the workers now accept: the queue empties
        wait_for(lambda: d.call("numprocesses", name="web")["numprocesses"] == 1, what="scale down to 1")
    finally:
        for c in clients:
            c.close()
    # Every decision is logged with its reason (the plugin's stderr reaches circusd's output).
    wait_for(lambda: "autoscaler: web decr -1" in d.log_text(), what="the decision log")
    assert "autoscaler: web incr +1 -> 2 (queued=" in d.log_text()

    # ...and its reason reaches clients as the plugin's STATUS= (incr/decr events carry none).
    def status() -> str:
        info = d.call("stats", name="plugin:scale").get("info") or {}
        return " ".join(str(p.get("notify_status")) for p in info.values() if isinstance(p, dict))

    assert wait_for(lambda: "web decr -1 -> 1 (idle: queued=0" in status() and status(), what="STATUS=")


def test_autoscaler_finds_the_socket_referenced_in_cmd(
    circusd: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A watcher given its socket the Circus way, `$(circus.sockets.web)` in cmd, had no `sockets` in
    `options`: without `socket =` the Autoscaler found none and never saw the queue, silently."""
    from circus_linux.plugins.autoscaler import Autoscaler

    d = circusd(
        """
[socket:web]
host = 127.0.0.1
port = 0

[watcher:web]
cmd = sleep 600 $(circus.sockets.web)

[watcher:plain]
cmd = sleep 600
"""
    )
    assert d.call("options", name="web")["options"]["sockets"] == ["web"]
    assert d.call("options", name="plain")["options"]["sockets"] == []
    found = Autoscaler(watcher="web", endpoint=d.endpoint, pubsub_endpoint=d.pubsub_endpoint)
    none = Autoscaler(watcher="plain", endpoint=d.endpoint, pubsub_endpoint=d.pubsub_endpoint)
    try:
        assert found._socket_name() == "web"
        reading = found.read()
        assert reading is not None and reading.workers == 1
        with caplog.at_level("WARNING", logger="circus_linux.plugins.autoscaler"):
            assert none._socket_name() is None
        assert "plain uses no socket" in caplog.text
    finally:
        for plugin in (found, none):
            if plugin.client is not None:
                plugin.client.close()
            plugin.context.term()


def _python() -> str:
    import sys

    return sys.executable
