"""list: the watcher names, or the pids of one watcher's processes.

Request properties:
  name  (string, optional)  the watcher whose pids are wanted
Reply: `{"watchers": [name, ...]}` in arbiter order, or `{"pids": [pid, ...]}` oldest first.
Errors: errno 3 "program NAME not found".
CLI: `circusctl list [name]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import get_watcher
from circus_linux.control.protocol import Kind, Prop

NAME = "list"
PROPERTIES = (Prop("name", Kind.STR),)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    if "name" in props:
        return {"pids": [p.pid for p in get_watcher(arbiter, props["name"]).processes()]}
    return {"watchers": list(arbiter.watchers)}
