"""config layer (pure): ini text in, frozen dataclasses out; reads config files and nothing else.

Public API: load(), loads(), diff(), render() and the model dataclasses; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus_linux.config.loader import load, loads
from circus_linux.config.model import (
    MAX,
    CgroupLimits,
    CircusConfig,
    Config,
    HookConfig,
    PluginConfig,
    SocketConfig,
    StreamConfig,
    SystemdMode,
    WatcherConfig,
)
from circus_linux.config.sections import parse_watcher_option
from circus_linux.config.substitute import render, watcher_context

if TYPE_CHECKING:
    from pathlib import Path

    from circus_linux.config.changes import ConfigDiff


def diff(old: Config, new: Config) -> ConfigDiff:
    """What a reload of `old` into `new` has to do (config/changes.py). Imported on first use: only a
    reload needs it, and circusd's start, up to the prestart's spawns, does not pay for it."""
    from circus_linux.config import changes

    return changes.diff(old, new)


def __getattr__(name: str) -> object:
    if name == "ConfigDiff":
        from circus_linux.config.changes import ConfigDiff

        return ConfigDiff
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_config_path() -> Path:
    """The embedded example config circusd runs when given no config file (needs no external service)."""
    from pathlib import Path  # here, not at the top: pathlib costs ~5 ms of circusd's start (prestart)

    return Path(__file__).with_name("default.ini")


__all__ = [
    "MAX",
    "CgroupLimits",
    "CircusConfig",
    "Config",
    "ConfigDiff",
    "HookConfig",
    "PluginConfig",
    "SocketConfig",
    "StreamConfig",
    "SystemdMode",
    "WatcherConfig",
    "default_config_path",
    "diff",
    "load",
    "loads",
    "parse_watcher_option",
    "render",
    "watcher_context",
]
