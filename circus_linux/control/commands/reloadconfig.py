"""reloadconfig: read the configuration file again and apply only what changed.

Request properties:
  waiting  (bool, default false)  reply when the new configuration is applied
Reply: `{"status": "ok"}`.
Errors: errno 5 with the config problems when the new file is invalid (the old config stays in force).
CLI: `circusctl reloadconfig [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action
from circus_linux.control.protocol import Kind, Prop

NAME = "reloadconfig"
PROPERTIES = (Prop("waiting", Kind.BOOL),)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    return Action(arbiter.reload_config)
