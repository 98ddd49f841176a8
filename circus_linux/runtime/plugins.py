"""Turn [plugin:NAME] sections into singleton watcher configs (`plugin:NAME`); builds data, starts nothing."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Iterable
from typing import Any

from circus_linux.config.model import PLUGIN_WATCHER_PREFIX as PREFIX
from circus_linux.config.model import CircusConfig, PluginConfig, WatcherConfig
from circus_linux.config.values import parse_bool

RUNNER = "circus_linux.plugins.run"
# A plugin that cannot start (bad class, bad options) exits 2 at once: give up after a few tries rather than
# crash-looping beside the real workers.
PLUGIN_MAX_RETRY = 3
# Plugins stop on SIGTERM within milliseconds; a stuck one must not hold circusd's shutdown for 30 s.
PLUGIN_GRACEFUL_TIMEOUT = 5.0
PLUGIN_READY_TIMEOUT = 15.0
# How long circusd's start waits for its plugins to be listening before it starts the watchers.
PLUGIN_START_WAIT = 3.0


def watcher_name(plugin_name: str) -> str:
    return PREFIX + plugin_name


def is_plugin_watcher(name: str) -> bool:
    return name.startswith(PREFIX)


def plugin_env(plugin: PluginConfig, circus: CircusConfig, options: dict[str, Any]) -> dict[str, str]:
    """The wire contract's environment (docs/PLUGINS.md): endpoints, name and options as JSON."""
    return {
        "CIRCUS_ENDPOINT": circus.endpoint,
        "CIRCUS_PUBSUB_ENDPOINT": circus.pubsub_endpoint,
        "CIRCUS_STATS_ENDPOINT": circus.stats_endpoint,
        "CIRCUS_CHECK_DELAY": str(circus.check_delay),
        "CIRCUS_PLUGIN_NAME": plugin.name,
        "CIRCUS_PLUGIN_OPTIONS": json.dumps(options, sort_keys=True),
    }


def plugin_watcher(
    plugin: PluginConfig, circus: CircusConfig, priority: int = 0, python: str | None = None
) -> WatcherConfig:
    """The watcher that runs one plugin: `python -m circus_linux.plugins.run <use>`, or its own `cmd`.

    A Python plugin says READY=1 once subscribed (notify), so watchers started after it never emit events
    it misses; a `cmd` plugin is ready when spawned unless its section sets `notify = true`.
    """
    cmd_line: str | None = getattr(plugin, "cmd", None)
    reserved = {"use", "cmd", "args", "notify"}
    options = {k: v for k, v in plugin.options.items() if k not in reserved}
    # Circus's CircusPlugin option `active = false`: the plugin does not run. Its watcher is listed,
    # stopped; a start by hand runs it once (a Python plugin then exits 0 at once).
    # The loader checked the value (config/plugin_options.py), with the ini's boolean words.
    active = parse_bool(str(plugin.options.get("active", "true")))
    if cmd_line:
        cmd = cmd_line
        args = plugin.options.get("args")
        notify = plugin.options.get("notify", "").strip().lower() in ("1", "true", "yes", "on")
    else:
        cmd = shlex.quote(python or sys.executable)
        args = f"-m {RUNNER} {shlex.quote(plugin.use)}"
        notify = True
    return WatcherConfig(
        name=watcher_name(plugin.name),
        cmd=cmd,
        args=args,
        numprocesses=1,
        singleton=True,
        copy_env=True,  # Circus plugins inherit circusd's environment (PYTHONPATH for user plugin modules)
        env=plugin_env(plugin, circus, options),
        priority=priority,
        max_retry=PLUGIN_MAX_RETRY,
        graceful_timeout=PLUGIN_GRACEFUL_TIMEOUT,
        notify=notify,
        ready_timeout=PLUGIN_READY_TIMEOUT,
        autostart=active,
        respawn=active,
        raw={"use": plugin.use, **({"cmd": cmd_line} if cmd_line else {}), **options},
    )


def plugin_watchers(config: Any) -> list[WatcherConfig]:
    """One watcher per [plugin:NAME], with a priority above every watcher: plugins start first (and so see
    every event of the others' start) and stop last."""
    plugins: Iterable[PluginConfig] = getattr(config, "plugins", ()) or ()
    top = max((w.priority for w in config.watchers), default=0) + 1
    return [plugin_watcher(p, config.circus, priority=top) for p in plugins]


async def apply_plugin_changes(arbiter: Any, plan: Any, new: Any) -> None:
    """reloadconfig: stop removed plugins, restart changed ones with their new options, start added ones."""
    wanted = {cfg.name: cfg for cfg in plugin_watchers(new)}
    for name in (*plan.plugins_removed, *plan.plugins_changed):
        if watcher_name(name) in arbiter.watchers:
            await arbiter.rm_watcher(watcher_name(name))
    for name in (*plan.plugins_changed, *plan.plugins_added):
        cfg = wanted.get(watcher_name(name))
        if cfg is not None and cfg.name not in arbiter.watchers:
            await arbiter.add_watcher(cfg, start=cfg.autostart)


async def start_plugin_watchers(watchers: Iterable[Any], wait: float = PLUGIN_START_WAIT) -> list[Any]:
    """Start the plugin watchers first and give them up to `wait` seconds to subscribe (READY=1), so they
    see the other watchers' start; a slow or broken plugin never holds the real workers longer than that.
    Returns the plugin watchers (started, ready or not)."""
    plugins = [w for w in watchers if is_plugin_watcher(w.name) and w.config.autostart]
    for watcher in plugins:
        await watcher.start(wait=False)
    if plugins:
        waits = [asyncio.ensure_future(w.wait_started()) for w in plugins]
        _done, pending = await asyncio.wait(waits, timeout=wait)
        for task in pending:
            task.cancel()
    return plugins
