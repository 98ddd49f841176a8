"""globaloptions: the [circus] options circusd runs with.

Request properties:
  option  (string, optional)  one option name
Reply: `{"options": {key: value}}` for endpoint, pubsub_endpoint, stats_endpoint, check_delay, statsd,
warmup_delay, umask, endpoint_owner, pidfile, loglevel, logoutput, debug (null when unset), plus what
the runtime's `arbiter.globaloptions()` adds (every raw [circus] key).
Errors: errno 3 "'X' not an existing option".
CLI: `circusctl globaloptions [option]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "globaloptions"
PROPERTIES = (Prop("option", Kind.STR),)
OPTIONS = (
    "endpoint",
    "pubsub_endpoint",
    "stats_endpoint",
    "check_delay",
    "statsd",
    "warmup_delay",
    "umask",
    "endpoint_owner",
    "pidfile",
    "loglevel",
    "logoutput",
    "debug",
)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _all(arbiter: Any) -> dict[str, Any]:
    circus = getattr(getattr(arbiter, "config", None), "circus", None)
    out = {key: getattr(circus, key, None) for key in OPTIONS}
    own = getattr(arbiter, "globaloptions", None)
    if callable(own):  # the runtime knows more (raw ini keys); ours stay as the base so none is missing
        out.update(own())
    return {key: _json_value(value) for key, value in out.items()}


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    options = _all(arbiter)
    wanted = props.get("option")
    if wanted is None:
        return {"options": options}
    if wanted not in options:
        raise RequestError(f"{wanted!r} not an existing option", Errno.MESSAGE_ERROR)
    return {"options": {wanted: options[wanted]}}
