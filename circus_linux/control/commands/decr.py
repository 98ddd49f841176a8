"""decr: remove processes from a watcher (the oldest go first).

Request properties:
  name     (string, required)  the watcher
  nb       (integer, default 1)  how many processes to remove
  waiting  (bool, default false)  reply when the removed processes have stopped
Reply: `{"numprocesses": N}`, the new desired count (never below 0). A singleton watcher is left as it
is, as in Circus: `{"numprocesses": N, "singleton": true}` with its current count.
Errors: errno 3 "program NAME not found"; errno 3 naming `nb` when it is negative.
CLI: `circusctl decr <name> [nb] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.commands.incr import checked_nb, singleton_reply
from circus_linux.control.protocol import Kind, Prop

NAME = "decr"
PROPERTIES = (Prop("name", Kind.STR, required=True), Prop("nb", Kind.INT), Prop("waiting", Kind.BOOL))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action | dict[str, Any]:
    watcher = get_watcher(arbiter, props["name"])
    nb = checked_nb(props)
    singleton = singleton_reply(watcher)
    if singleton is not None:
        return singleton
    return Action(
        lambda: watcher.decr(nb),
        immediate={"numprocesses": max(0, watcher.numprocesses - nb)},
        finish=lambda n: {"numprocesses": n},
    )
