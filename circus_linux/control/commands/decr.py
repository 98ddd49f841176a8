"""decr: remove processes from a watcher (the oldest go first).

Request properties:
  name     (string, required)  the watcher
  nb       (integer, default 1)  how many processes to remove
  waiting  (bool, default false)  reply when the removed processes have stopped
Reply: `{"numprocesses": N}`, the new desired count (never below 0).
Errors: errno 3 "program NAME not found".
CLI: `circusctl decr <name> [nb] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "decr"
PROPERTIES = (Prop("name", Kind.STR, required=True), Prop("nb", Kind.INT), Prop("waiting", Kind.BOOL))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watcher = get_watcher(arbiter, props["name"])
    nb = props.get("nb", 1)
    if nb < 0:
        raise RequestError("must not be negative", Errno.MESSAGE_ERROR, "nb")
    return Action(
        lambda: watcher.decr(nb),
        immediate={"numprocesses": max(0, watcher.numprocesses - nb)},
        finish=lambda n: {"numprocesses": n},
    )
