"""incr: add processes to a watcher.

Request properties:
  name     (string, required)  the watcher
  nb       (integer, default 1)  how many processes to add
  waiting  (bool, default false)  reply when the new processes are spawned
Reply: `{"numprocesses": N}`, the new desired count (without waiting: the count asked for).
Errors: errno 3 "program NAME not found".
CLI: `circusctl incr <name> [nb] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "incr"
PROPERTIES = (Prop("name", Kind.STR, required=True), Prop("nb", Kind.INT), Prop("waiting", Kind.BOOL))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watcher = get_watcher(arbiter, props["name"])
    nb = props.get("nb", 1)
    if nb < 0:
        raise RequestError("must not be negative", Errno.MESSAGE_ERROR, "nb")
    return Action(
        lambda: watcher.incr(nb),
        immediate={"numprocesses": watcher.numprocesses + nb},
        finish=lambda n: {"numprocesses": n},
    )
