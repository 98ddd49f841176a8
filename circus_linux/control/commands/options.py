"""options: every option of a watcher, as the runtime sees it now (config values plus later `set`s).

Request properties:
  name  (string, required)  the watcher
Reply: `{"options": {key: value}}`; unknown ini keys (e.g. flapping.max_retry) are included.
Errors: errno 3 "program NAME not found".
CLI: `circusctl options <name>`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import get_watcher
from circus_linux.control.protocol import Kind, Prop

NAME = "options"
PROPERTIES = (Prop("name", Kind.STR, required=True),)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    return {"options": dict(get_watcher(arbiter, props["name"]).options())}
