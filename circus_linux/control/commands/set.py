"""set: change options of a running watcher (numprocesses scales it live).

Request properties:
  name     (string, required)  the watcher
  options  (object, required)  {key: value}; Circus's circusctl sends typed values, older scripts send
           text: a decimal string is accepted for the numeric keys below
  waiting  (bool, default false)  reply when the change is applied (processes spawned/stopped)
Reply: `{"status": "ok"}`.
Errors: errno 3 "program NAME not found", or a bad key/value as the runtime judges it.
CLI: `circusctl set <name> <key> <value> [key value...] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "set"
PROPERTIES = (
    Prop("name", Kind.STR, required=True),
    Prop("options", Kind.DICT, required=True),
    Prop("waiting", Kind.BOOL),
)
_INT_KEYS = frozenset({"numprocesses", "max_retry", "max_age", "max_age_variance", "priority"})
_FLOAT_KEYS = frozenset({"warmup_delay", "graceful_timeout", "retry_in", "check_delay"})


def coerce(options: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for key, value in options.items():
        if isinstance(value, str) and (key in _INT_KEYS or key in _FLOAT_KEYS):
            try:
                out[key] = int(value) if key in _INT_KEYS else float(value)
            except ValueError:
                raise RequestError(
                    f"{key!r} must be a number, got {value!r}", Errno.MESSAGE_ERROR, "options"
                ) from None
    if "numprocesses" in out and (not isinstance(out["numprocesses"], int) or out["numprocesses"] < 0):
        raise RequestError("numprocesses must be a non-negative integer", Errno.MESSAGE_ERROR, "options")
    return out


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watcher = get_watcher(arbiter, props["name"])
    options = coerce(props["options"])
    return Action(lambda: watcher.set_options(options))
