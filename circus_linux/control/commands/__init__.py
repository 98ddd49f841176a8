"""The control commands: one module per command, each with NAME, PROPERTIES, execute(); the registry."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from circus_linux.control.command_names import NAMES
from circus_linux.control.protocol import Prop


class _ByName(Mapping[str, Any]):
    """A mapping whose keys are exactly NAMES, in wire order; values are computed by subclasses."""

    def __contains__(self, name: object) -> bool:
        return name in NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)


class _Registry(_ByName):
    """NAME -> command module, each imported on first use.

    circusd serves its first spawn before most commands are ever asked for: importing every handler up
    front (psutil and the stats code among them) cost ~30 ms of cold start and ~1.5 MiB of RSS.
    """

    def __init__(self) -> None:
        self._modules: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        module = self._modules.get(name)
        if module is None:
            if name not in NAMES:
                raise KeyError(name)
            module = importlib.import_module(f"{__name__}.{name}")
            assert name == module.NAME, module
            self._modules[name] = module
        return module


class _Specs(_ByName):
    """NAME -> the command's PROPERTIES, through the registry (so only asked-for commands are imported)."""

    def __getitem__(self, name: str) -> Sequence[Prop]:
        return cast(Sequence[Prop], COMMANDS[name].PROPERTIES)


COMMANDS: Mapping[str, Any] = _Registry()
SPECS: Mapping[str, Sequence[Prop]] = _Specs()
