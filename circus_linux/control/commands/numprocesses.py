"""numprocesses: the desired number of processes of a watcher, or of all watchers together.

Request properties:
  name  (string, optional)  the watcher; the sum over every watcher when absent
Reply: `{"numprocesses": N}`, with `"watcher_name"` when a name was given (as Circus).
Errors: errno 3 "program NAME not found".
CLI: `circusctl numprocesses [name]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import get_watcher
from circus_linux.control.protocol import Kind, Prop

NAME = "numprocesses"
PROPERTIES = (Prop("name", Kind.STR),)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    if "name" in props:
        watcher = get_watcher(arbiter, props["name"])
        return {"numprocesses": watcher.numprocesses, "watcher_name": watcher.name}
    return {"numprocesses": sum(w.numprocesses for w in arbiter.watchers.values())}
