"""The control commands: one module per command, each with NAME, PROPERTIES, execute(); the registry."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from circus_linux.control.protocol import Prop

# Module names equal the wire names (Circus does the same), which is why some shadow builtins.
NAMES = (
    "add", "rm", "start", "stop", "restart", "reload", "reloadconfig", "quit", "incr", "decr",
    "numprocesses", "numwatchers", "list", "listsockets", "status", "stats", "dstats", "options",
    "get", "set", "globaloptions", "signal", "kill", "upgrade", "logs",
)  # fmt: skip


def _load() -> dict[str, Any]:
    modules = {}
    for name in NAMES:
        module = importlib.import_module(f"{__name__}.{name}")
        assert name == module.NAME, module
        modules[name] = module
    return modules


COMMANDS: Mapping[str, Any] = MappingProxyType(_load())
SPECS: Mapping[str, Sequence[Prop]] = MappingProxyType({n: m.PROPERTIES for n, m in COMMANDS.items()})
