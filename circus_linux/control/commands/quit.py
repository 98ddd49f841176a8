"""quit: stop every watcher and exit circusd.

Request properties:
  waiting  (bool, default false)  accepted for compatibility; the reply always leaves first, since the
           server that would carry a later reply is part of what quits
Reply: `{"status": "ok"}`, sent before the shutdown starts.
CLI: `circusctl quit [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action
from circus_linux.control.protocol import Kind, Prop

NAME = "quit"
PROPERTIES = (Prop("waiting", Kind.BOOL),)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    return Action(arbiter.quit, after_reply=True)
