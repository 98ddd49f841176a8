"""The value types of the bundled plugins' documented options, checked when the ini is loaded; pure.

A plugin converts its own options when it starts (plugins/base.option), long after `circusd --check` said
OK; this table lets the loader refuse a bad value with file, line, section and key first. Only the bundled
classes (docs/PLUGINS.md) are listed; any other plugin's options stay free-form text, except `active`,
which circusd itself reads for every plugin (runtime/plugins.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from circus_linux.config import values as v

Parser = Callable[[str], object]


def _number(text: str) -> object:
    return v.parse_float(text)


def _integer(text: str) -> object:
    return v.parse_int(text)


def _regex(text: str) -> object:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"expected a regular expression ({exc}), got {text!r}") from None


_STATSD: Mapping[str, Parser] = {"port": _integer, "sample_rate": _number}
_BUNDLED = "circus_linux.plugins."

# Keyed by the class after map_plugin_class (so Circus's circus.plugins.* names find it too).
OPTION_TYPES: Mapping[str, Mapping[str, Parser]] = {
    _BUNDLED + "flapping.Flapping": dict.fromkeys(("attempts", "window", "retry_in", "max_retry"), _number),
    _BUNDLED + "statsd.StatsdEmitter": _STATSD,
    _BUNDLED + "statsd.FullStats": {**_STATSD, "loop_rate": _number},
    _BUNDLED + "http_observer.HttpObserver": {**_STATSD, "loop_rate": _number, "timeout": _number},
    _BUNDLED + "watchdog.WatchDog": {
        "loop_rate": _number, "max_count": _integer, "port": _integer,
        "watchers_graceful_timeout": _number, "graceful_timeout": _number,
        "watchers_stop_signal": v.parse_signal, "stop_signal": v.parse_signal,
        "watchers_regex": _regex, "msg_regex": _regex,
    },
    _BUNDLED + "resource_watcher.ResourceWatcher": {
        **dict.fromkeys(("loop_rate", "max_cpu", "min_cpu", "health_threshold"), _number),
        "max_count": _integer, "watcher_totals": v.parse_bool, "cgroup": v.parse_bool,
    },
    _BUNDLED + "command_reloader.CommandReloader": {"loop_rate": _number, "watchers_regex": _regex},
    _BUNDLED + "autoscaler.Autoscaler": {
        **dict.fromkeys(("min_workers", "max_workers", "step"), _integer),
        **dict.fromkeys(
            ("loop_rate", "cooldown", "queue_high", "queue_low", "cpu_high", "cpu_low",
             "max_cpu_pressure", "min_cpu_pressure"),
            _number,
        ),
    },
}


def check_option(use: str, key: str, text: str) -> None:
    """Raise ValueError saying what was expected when `key = text` cannot be an option of plugin `use`."""
    if key == "active":
        v.parse_bool(text)
        return
    parser = OPTION_TYPES.get(use, {}).get(key)
    if parser is not None:
        parser(text)
