"""The control commands: one module per command, each with NAME, PROPERTIES, execute(); the registry."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from circus_linux.control.command_names import NAMES
from circus_linux.control.protocol import Prop


def _load() -> dict[str, Any]:
    modules = {}
    for name in NAMES:
        module = importlib.import_module(f"{__name__}.{name}")
        assert name == module.NAME, module
        modules[name] = module
    return modules


COMMANDS: Mapping[str, Any] = MappingProxyType(_load())
SPECS: Mapping[str, Sequence[Prop]] = MappingProxyType({n: m.PROPERTIES for n, m in COMMANDS.items()})
