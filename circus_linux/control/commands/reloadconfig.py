"""reloadconfig: read the configuration file again and apply only what changed.

Request properties:
  waiting  (bool, default false)  reply when the new configuration is applied
Reply: `{"status": "ok"}`; with waiting, also what was done: `added`, `removed`, `scaled`, `changed`
(watcher names) and `not_applied` ([circus] options and `socket:NAME` sections that changed but only
take effect when circusd restarts).
Errors: errno 5 with the config problems when the new file is invalid, when a new [socket:*] cannot be
bound, or when the kernel refuses a cgroup limit of a changed or added watcher (the reason names it): the
old config stays in force, nothing is changed. Changed limits are written to the running cgroup; a limit
removed from a section goes back to the kernel default.
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
    return Action(arbiter.reload_config, finish=lambda report: dict(report))
