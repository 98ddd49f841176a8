"""Pure parts of the plugin layer: option passing, plugin watcher configs, policies, the plugin loop."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from circus_linux import config as configmod
from circus_linux.config.model import CircusConfig, PluginConfig
from circus_linux.plugins import CircusPlugin, Frame
from circus_linux.plugins.autoscaler import Policy, Reading
from circus_linux.plugins.base import option
from circus_linux.plugins.flapping import Flapping
from circus_linux.plugins.loop import PluginLoop
from circus_linux.plugins.resource_watcher import MemLimit, ResourceWatcher, Sample, parse_mem
from circus_linux.plugins.run import build, options_from_env, resolve
from circus_linux.plugins.statsd import FullStats, StatsdEmitter
from circus_linux.plugins.watchdog import Monitored, WatchDog
from circus_linux.runtime.plugins import plugin_watcher, plugin_watchers


def test_frame_formats_as_text_and_splits_as_bytes() -> None:
    topic, msg = Frame(b"watcher.web.spawn"), Frame(b'{"process_pid": 1}')
    assert "%s::%s" % (topic, msg) == 'watcher.web.spawn::{"process_pid": 1}'  # noqa: UP031 (the talk's form)
    assert topic.split(b".") == [b"watcher", b"web", b"spawn"]
    assert json.loads(msg) == {"process_pid": 1}


def test_split_data_keeps_dotted_and_plugin_names() -> None:
    assert CircusPlugin.split_data((b"watcher.a.b.reap", b"{}")) == ("a.b", "reap", b"{}")
    assert CircusPlugin.split_data(("watcher.plugin:x.spawn", "{}"))[:2] == ("plugin:x", "spawn")


def test_circus_names_map_to_bundled_classes() -> None:
    assert resolve("circus.plugins.flapping.Flapping") is Flapping
    assert resolve("circus.plugins.statsd.FullStats") is FullStats
    with pytest.raises(ValueError):
        resolve("circus_linux.plugins.flapping.NoSuchThing")


def test_options_are_json_and_reach_the_constructor() -> None:
    env = {
        "CIRCUS_PLUGIN_OPTIONS": json.dumps(
            {"retry_in": "3", "max_retry": "2", "use": "x", "endpoint": "evil"}
        ),
        "CIRCUS_ENDPOINT": "ipc:///nowhere/ctl",
        "CIRCUS_PUBSUB_ENDPOINT": "ipc:///nowhere/pub",
    }
    assert options_from_env(env) == {"retry_in": "3", "max_retry": "2"}
    plugin = build("circus.plugins.flapping.Flapping", env)
    assert isinstance(plugin, Flapping)
    assert plugin.defaults["retry_in"] == 3.0 and plugin.defaults["max_retry"] == 2.0
    assert plugin.endpoint == "ipc:///nowhere/ctl"
    plugin.context.term()
    with pytest.raises(ValueError):
        options_from_env({"CIRCUS_PLUGIN_OPTIONS": "[1, 2]"})


def test_plugin_sections_become_singleton_watchers_started_first() -> None:
    cfg = configmod.loads(
        """
[circus]
endpoint = ipc:///x/ctl
[watcher:web]
cmd = sleep 1
priority = 7
[plugin:flapping]
use = circus.plugins.flapping.Flapping
retry_in = 3
[plugin:c]
cmd = /usr/bin/reactor
args = /tmp/log
notify = true
""",
        "/x/circus.ini",
    )
    flapping, c = plugin_watchers(cfg)
    assert flapping.name == "plugin:flapping" and flapping.singleton and flapping.numprocesses == 1
    assert flapping.priority == 8 and flapping.notify and flapping.copy_env
    assert flapping.args is not None and flapping.args.endswith(
        "circus_linux.plugins.run circus_linux.plugins.flapping.Flapping"
    )
    env = flapping.env
    assert env["CIRCUS_ENDPOINT"] == "ipc:///x/ctl" and env["CIRCUS_PLUGIN_NAME"] == "flapping"
    assert json.loads(env["CIRCUS_PLUGIN_OPTIONS"]) == {"retry_in": "3"}
    assert c.cmd == "/usr/bin/reactor" and c.args == "/tmp/log" and c.notify
    assert json.loads(c.env["CIRCUS_PLUGIN_OPTIONS"]) == {}


def test_plugin_watcher_quotes_the_interpreter() -> None:
    cfg = plugin_watcher(PluginConfig("p", "a.B"), CircusConfig(), python="/opt/my python/bin/python3")
    assert cfg.cmd == "'/opt/my python/bin/python3'"


class _RecordingFlapping(Flapping):
    """Flapping with its wire calls recorded instead of sent (the unit under test is the decision)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def call(self, command: str, **props: Any) -> dict[str, Any]:
        self.sent.append((command, props))
        return {"status": "ok", "options": {"flapping.attempts": "3"}}

    def cast(self, command: str, **props: Any) -> None:
        self.sent.append((command, props))


def _reap(plugin: Flapping, name: str, t: float) -> None:
    plugin.handle_recv((Frame(f"watcher.{name}.reap".encode()), Frame(json.dumps({"time": t}).encode())))


def test_flapping_decisions_and_per_watcher_override() -> None:
    p = _RecordingFlapping(window="1", retry_in="5", max_retry="1", attempts="2")
    try:
        _reap(p, "w", 0.0)
        _reap(p, "w", 0.5)  # 2 reaps, but the watcher says attempts = 3
        assert [c for c, _ in p.sent] == ["options"]
        _reap(p, "w", 0.9)
        assert [c for c, _ in p.sent] == ["options", "stop"]  # retry 1 of 1, timer armed
        assert "w" in p.timers
        for t in (10.0, 10.1, 10.2):
            _reap(p, "w", t)
        assert [c for c, _ in p.sent][-1] == "stop" and p.tries["w"] == 0  # gave up
        for t in (20.0, 22.0, 24.0):  # slow crashes: never flapping
            _reap(p, "slow", t)
        assert ("stop", {"name": "slow"}) not in p.sent
        _reap(p, "plugin:x", 1.0)
        assert all(props.get("name") != "plugin:x" for _, props in p.sent)
    finally:
        p.context.term()


def test_autoscaler_policy() -> None:
    pol = Policy(min_workers=1, max_workers=3, queue_high=2, queue_low=0)
    assert pol.decide(Reading(1, 10, None)).delta == 1
    assert pol.decide(Reading(3, 100, None)).delta == 0
    assert pol.decide(Reading(2, 0, None)).delta == -1
    assert pol.decide(Reading(1, 0, None)).delta == 0
    assert pol.decide(Reading(2, 3, None)).delta == 0  # 1.5 per worker: steady
    assert pol.decide(Reading(0, None, None)).delta == 1  # below min
    assert pol.decide(Reading(2, None, None)).delta == 0  # nothing measured: no guess
    cpu = Policy(min_workers=1, max_workers=4, cpu_high=80, cpu_low=10)
    assert cpu.decide(Reading(2, None, 95.0)).delta == 1
    assert cpu.decide(Reading(2, None, 5.0)).delta == -1
    assert cpu.decide(Reading(2, None, 50.0)).delta == 0


def test_resource_watcher_rules() -> None:
    assert parse_mem("20%") == MemLimit(20.0, True)
    assert parse_mem("100M") == MemLimit(100 * 1024**2, False)
    assert parse_mem("15") == MemLimit(15.0, True)
    rw = ResourceWatcher(watcher="w", max_cpu="50", max_mem="1M", health_threshold="75")
    try:
        v = rw.verdicts([Sample(cpu=60, mem=1, rss=2 * 1024**2), Sample(cpu=1, mem=1, rss=10)])
        assert v["max_cpu"] and v["max_mem"] and not v["health"] and not v["min_cpu"]
        assert rw.verdicts([]) == {}
        with pytest.raises(ValueError):
            ResourceWatcher()
    finally:
        rw.context.term()


def test_statsd_names_are_line_safe() -> None:
    s = StatsdEmitter(host="127.0.0.1", port="9", prefix="p")
    try:
        assert s.statsd._name("plugin:x.spawn") == "p.plugin_x.spawn"
        assert StatsdEmitter.default_app_name == "app"
    finally:
        s.statsd.close()
        s.context.term()


def test_plugin_loop_timers_and_stop() -> None:
    loop = PluginLoop()
    seen: list[str] = []

    def tick() -> None:
        seen.append("tick")
        if seen.count("tick") >= 3 and "once" in seen:  # the event that ends the test, not a fixed delay
            loop.stop()

    ticks = loop.call_every(0.01, tick, first=0)
    loop.call_later(0.005, lambda: seen.append("once"))
    cancelled = loop.call_later(0.001, lambda: seen.append("never"))
    cancelled.cancel()

    def boom() -> None:
        raise RuntimeError("a failing callback is logged, the loop goes on")

    loop.call_later(0.002, boom)
    loop.call_later(10.0, loop.stop)  # deadline: a loop whose timers stopped firing fails below
    began = time.monotonic()
    loop.run()
    assert time.monotonic() - began < 10.0, "the ticks stopped after the failing callback"
    assert "once" in seen and "never" not in seen and seen.count("tick") >= 3
    ticks.cancel()


def _watchdog_kill(**options: str) -> list[tuple[str, dict[str, Any]]]:
    plugin = WatchDog(loop_rate="1", max_count="1", **options)
    casts: list[tuple[str, dict[str, Any]]] = []
    plugin.cast = lambda command, **props: casts.append((command, props))  # type: ignore[method-assign]
    try:
        plugin.pids[4242] = Monitored("web", time.monotonic() - 100)
        plugin.look_after()
    finally:
        plugin.context.term()
    return casts


def test_watchdog_uses_circus_option_names_and_the_watchers_own_stop_settings() -> None:
    """WatchDog read stop_signal/graceful_timeout (SIGTERM/10 s by default) instead of Circus's
    watchers_stop_signal/watchers_graceful_timeout, which are unset by default so that the watcher's own
    stop_signal and graceful_timeout apply; and it watched nothing by default, with re.search."""
    assert _watchdog_kill() == [("kill", {"name": "web", "pid": 4242})]
    assert _watchdog_kill(watchers_stop_signal="SIGKILL", watchers_graceful_timeout="2") == [
        ("kill", {"name": "web", "pid": 4242, "signum": 9, "graceful_timeout": 2.0})
    ]
    assert _watchdog_kill(stop_signal="QUIT")[0][1]["signum"] == 3  # the older name still works
    plugin = WatchDog()
    anchored = WatchDog(watchers_regex="web")
    try:
        assert plugin.monitors("web") and plugin.monitors("anything")  # Circus's default: `.*`
        assert not plugin.monitors("plugin:watchdog")  # no heartbeats: never its own victim
        assert anchored.monitors("web") and anchored.monitors("web2") and not anchored.monitors("myweb")
    finally:
        plugin.context.term()
        anchored.context.term()


class _WireFlapping(Flapping):
    """Flapping whose `options` reply is `self.options` and whose other commands are recorded."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options: dict[str, str] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def call(self, command: str, **props: Any) -> dict[str, Any]:
        self.sent.append((command, props))
        return {"status": "ok", "options": dict(self.options)} if command == "options" else {"status": "ok"}

    def cast(self, command: str, **props: Any) -> None:
        self.sent.append((command, props))

    def stops(self) -> int:
        return sum(1 for c, _ in self.sent if c == "stop")


def test_flapping_resets_tries_after_a_burst_that_is_not_flapping() -> None:
    """`tries` was never reset by healthy behaviour: the max_retry-th flap in the plugin's life (even
    weeks apart) left the watcher stopped for good. Circus sets it back to 0 on a non-flapping burst."""
    p = _WireFlapping(attempts="2", window="1", retry_in="7", max_retry="1")
    try:
        _reap(p, "web", 0.0)
        _reap(p, "web", 0.5)  # flap 1: retry 1/1
        assert p.tries["web"] == 1 and "web" in p.timers
        p._retry("web")
        for t in (1000.0, 1100.0, 1200.0):  # healthy: reaps 100 s apart
            _reap(p, "web", t)
        assert p.tries["web"] == 0
        _reap(p, "web", 5000.0)
        _reap(p, "web", 5000.3)  # flap 2, much later: a retry again, not the give-up
        assert p.tries["web"] == 1 and "web" in p.timers
    finally:
        p.context.term()


def test_flapping_honours_active_false_per_watcher_and_for_the_plugin() -> None:
    """flapping.active = false (Circus: `if not to_bool(self._get_conf(conf, 'active')): return`) was
    ignored and the watcher stopped anyway; a plugin-level `active = false` did not stop the plugin."""
    p = _WireFlapping()
    try:
        p.options = {"flapping.active": "false", "cmd": "x"}
        for t in (0.0, 0.2, 0.4):
            _reap(p, "web", t)
        assert p.stops() == 0
        p.options = {"flapping.active": "yes"}
        p.handle_recv((Frame(b"watcher.web.updated"), Frame(b"{}")))
        for t in (1.0, 1.2):
            _reap(p, "web", t)
        assert p.stops() == 1
    finally:
        p.context.term()
    inactive = _WireFlapping(active="false")
    assert inactive.active is False and inactive.defaults["active"] is False
    inactive.start()  # returns at once: no loop, no connection (nothing listens at the endpoints here)
    assert inactive.client is None and inactive.sub_socket is None
    cfg = configmod.loads(
        "[circus]\nendpoint = ipc:///x/ctl\n[plugin:flap]\nuse = circus.plugins.flapping.Flapping\n"
        "active = false\n[plugin:on]\nuse = circus.plugins.flapping.Flapping\n",
        "/x/circus.ini",
    )
    flap, on = plugin_watchers(cfg)
    assert (flap.autostart, flap.respawn) == (False, False) and (on.autostart, on.respawn) == (True, True)


def test_flapping_drops_cached_watcher_options_on_reload_and_start() -> None:
    """The flapping.* options were cached until `updated`, which a reloadconfig of the section never
    emits (it brings `reload`, or `start` for a stopped watcher): the old max_retry stayed in force."""
    p = _WireFlapping(attempts="2", window="1", max_retry="5")
    try:
        p.options = {"flapping.max_retry": "5"}
        _reap(p, "web", 0.0)
        assert p.conf("web")["max_retry"] == 5
        for event in ("reload", "start"):
            p.options = {"flapping.max_retry": "0" if event == "reload" else "2"}
            p.handle_recv((Frame(f"watcher.web.{event}".encode()), Frame(b"{}")))
            assert p.conf("web")["max_retry"] == (0 if event == "reload" else 2)
    finally:
        p.context.term()


def test_bad_plugin_config_errors_name_the_plugin_and_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # review plugins #10: `retry_in = abc` failed as "could not convert string to float: 'abc'"
    monkeypatch.setenv("CIRCUS_PLUGIN_NAME", "flap")
    env = {"CIRCUS_PLUGIN_OPTIONS": json.dumps({"retry_in": "abc"}), "CIRCUS_PLUGIN_NAME": "flap"}
    with pytest.raises(ValueError, match=r"^\[plugin:flap\] retry_in: expected a number, got 'abc'$"):
        build("circus.plugins.flapping.Flapping", env)
    with pytest.raises(ValueError, match=r"^\[plugin:flap\] port: expected an integer, got '81x'$"):
        option({"port": "81x"}, "port", 8125, int)
    with pytest.raises(ValueError, match=r"^\[plugin:flap\] active: expected a boolean"):
        option({"active": "maybe"}, "active", True, bool)
    assert option({"active": "Off"}, "active", True, bool) is False
    assert option({}, "retry_in", 7.0, float) == 7.0 and option({"n": "3"}, "n", 1, int) == 3
