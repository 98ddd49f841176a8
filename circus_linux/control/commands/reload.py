"""reload: replace the processes of one watcher (or of every watcher) with fresh ones.

Request properties:
  name        (string, optional)  the watcher; every watcher when absent
  graceful    (bool, default true)  start the new processes before the old ones are stopped
  sequential  (bool, default false)  one process at a time
  waiting     (bool, default false)  reply when the reload is over
Reply: `{"status": "ok"}`.
Errors: errno 3 "program NAME not found"; errno 5 "watcher NAME: reload abandoned, ..." when a stop,
restart or rm of the watcher came while a graceful reload waited for its new pool (the stop goes first).
CLI: `circusctl reload [name] [--terminate] [--sequential] [--waiting]` (--terminate: graceful=false)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Kind, Prop

NAME = "reload"
PROPERTIES = (
    Prop("name", Kind.STR),
    Prop("graceful", Kind.BOOL),
    Prop("sequential", Kind.BOOL),
    Prop("waiting", Kind.BOOL),
)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    graceful = props.get("graceful", True)
    sequential = props.get("sequential", False)
    if "name" in props:
        watcher = get_watcher(arbiter, props["name"])
        return Action(lambda: watcher.reload(graceful=graceful, sequential=sequential))
    return Action(lambda: arbiter.reload(graceful=graceful, sequential=sequential))
