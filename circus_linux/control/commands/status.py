"""status: the state of one watcher or of every watcher.

Request properties:
  name  (string, optional)  the watcher
Reply: with name, the reply's own `status` key carries the state instead of "ok", exactly as Circus
does: `{"status": "active" | "stopped" | "starting" | "stopping", "time", "id"}`; without name
`{"status": "ok", "statuses": {watcher: status}}`.
Errors: errno 3 "program NAME not found".
CLI: `circusctl status [name]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import get_watcher, statuses
from circus_linux.control.protocol import Kind, Prop

NAME = "status"
PROPERTIES = (Prop("name", Kind.STR),)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    if "name" in props:
        return {"status": get_watcher(arbiter, props["name"]).status()}
    return {"statuses": statuses(list(arbiter.watchers.values()))}
