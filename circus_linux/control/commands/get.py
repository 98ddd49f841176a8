"""get: some options of a watcher.

Request properties:
  name  (string, required)  the watcher
  keys  (list of strings, required)  the option names
Reply: `{"options": {key: value}}`, the keys in the order asked (circusctl prints them in that order).
Errors: errno 3 "program NAME not found"; errno 3 "'KEY' option not found" for an unknown key.
CLI: `circusctl get <name> <key> [key...]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "get"
PROPERTIES = (Prop("name", Kind.STR, required=True), Prop("keys", Kind.STR_LIST, required=True))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    options = get_watcher(arbiter, props["name"]).options()
    result = {}
    for key in props["keys"]:
        if key not in options:
            raise RequestError(f"{key!r} option not found", Errno.MESSAGE_ERROR)
        result[key] = options[key]
    return {"options": result}
