"""upgrade: re-execute circusd in place (same PID), keeping its workers, their pidfds and listening sockets.

Request properties: none.
Reply: `{"status": "ok"}`, sent before the exec; the control endpoint is re-bound by the new image within
a fraction of a second (clients' DEALER sockets reconnect by themselves). Same as sending circusd SIGUSR2.
CLI: `circusctl upgrade`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action

NAME = "upgrade"
PROPERTIES = ()


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    check = getattr(arbiter, "check_upgrade", None)
    if check is not None:
        check()  # before the reply: a configuration file the new image could not load refuses it here
    return Action(arbiter.upgrade, after_reply=True)
