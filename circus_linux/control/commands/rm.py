"""rm: remove a watcher (stopping its processes unless nostop).

Request properties:
  name     (string, required)  the watcher
  nostop   (bool, default false)  leave its processes running, unsupervised (in a cgroup set aside:
           a new watcher of the same name gets a fresh one; circusd's exit still stops them)
  waiting  (bool, default false)  reply when the watcher is gone
Reply: `{"status": "ok"}`.
Errors: errno 3 "program NAME not found".
CLI: `circusctl rm <name> [--nostop] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Kind, Prop

NAME = "rm"
PROPERTIES = (Prop("name", Kind.STR, required=True), Prop("nostop", Kind.BOOL), Prop("waiting", Kind.BOOL))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    name = props["name"]
    get_watcher(arbiter, name)
    return Action(lambda: arbiter.rm_watcher(name, stop=not props.get("nostop", False)))
