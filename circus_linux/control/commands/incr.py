"""incr: add processes to a watcher.

Request properties:
  name     (string, required)  the watcher
  nb       (integer, default 1)  how many processes to add
  waiting  (bool, default false)  reply when the new processes are spawned
Reply: `{"numprocesses": N}`, the new desired count (without waiting: the count asked for). A singleton
watcher is left as it is, as in Circus: `{"numprocesses": N, "singleton": true}` with its current count.
Errors: errno 3 "program NAME not found"; errno 3 naming `nb` when it is negative or would take
numprocesses past PID_MAX_LIMIT (no machine can run that many processes).
CLI: `circusctl incr <name> [nb] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.config.values import PID_MAX_LIMIT
from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "incr"
PROPERTIES = (Prop("name", Kind.STR, required=True), Prop("nb", Kind.INT), Prop("waiting", Kind.BOOL))


def singleton_reply(watcher: Any) -> dict[str, Any] | None:
    """Circus's answer to incr/decr on a singleton watcher (nothing changes), or None for any other."""
    if not getattr(getattr(watcher, "config", None), "singleton", False):
        return None
    return {"numprocesses": watcher.numprocesses, "singleton": True}


def checked_nb(props: Mapping[str, Any]) -> int:
    """The `nb` property (default 1); errno 3 naming it when negative."""
    nb: int = props.get("nb", 1)
    if nb < 0:
        raise RequestError("must not be negative", Errno.MESSAGE_ERROR, "nb")
    return nb


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action | dict[str, Any]:
    watcher = get_watcher(arbiter, props["name"])
    nb = checked_nb(props)
    singleton = singleton_reply(watcher)
    if singleton is not None:
        return singleton
    # Checked here, before the reply: a count no kernel can run would make the watcher spawn forever.
    if watcher.numprocesses + nb > PID_MAX_LIMIT:
        raise RequestError(
            f"numprocesses would exceed {PID_MAX_LIMIT} (PID_MAX_LIMIT)", Errno.MESSAGE_ERROR, "nb"
        )
    return Action(
        lambda: watcher.incr(nb),
        immediate={"numprocesses": watcher.numprocesses + nb},
        finish=lambda n: {"numprocesses": n},
    )
