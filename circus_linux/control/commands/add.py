"""add: create a watcher at run time, as if its [watcher:NAME] section were in the config.

Request properties:
  name     (string, required)  the new watcher's name
  cmd      (string, required)  the command line (may hold its arguments, as in the ini `cmd`)
  args     (string or list of strings, optional)  more arguments
  options  (object, optional)  any [watcher:NAME] key (numprocesses, working_dir, ...); a dict under `env`
           becomes the watcher's environment
  start    (bool, default false)  start it at once
  waiting  (bool, default false)  with start: reply when it has started
Reply: `{"status": "ok"}`; the watcher exists (and is listed) when the reply arrives.
Errors: errno 3 for an invalid option (same messages as the config loader), errno 5 when the name is
already taken.
CLI: `circusctl add [--start] <name> <cmd...>`
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError
from circus_linux.errors import CommandError, ConfigError

NAME = "add"
PROPERTIES = (
    Prop("name", Kind.STR, required=True),
    Prop("cmd", Kind.STR, required=True),
    Prop("args", Kind.ANY),
    Prop("options", Kind.DICT),
    Prop("start", Kind.BOOL),
    Prop("waiting", Kind.BOOL),
)
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _ini_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = shlex.join(value)
    else:
        raise RequestError(f"{key}: unsupported value {value!r}", Errno.MESSAGE_ERROR, "options")
    # The section is rebuilt as ini text for the one config loader we trust; a line break would let a
    # value smuggle in keys or sections.
    if "\n" in text or "\r" in text:
        raise RequestError(f"{key}: line breaks are not allowed", Errno.MESSAGE_ERROR, "options")
    return text


def watcher_ini(name: str, cmd: str, args: Any, options: Mapping[str, Any]) -> str:
    """The [watcher:NAME] (and [env:NAME]) ini text equivalent to an `add` request; pure."""
    if not _NAME.fullmatch(name):
        raise RequestError("invalid watcher name", Errno.MESSAGE_ERROR, "name")
    lines = [f"[watcher:{name}]", f"cmd = {_ini_value('cmd', cmd)}"]
    if args is not None and args != [] and args != "":
        lines.append(f"args = {_ini_value('args', args)}")
    env: Mapping[str, Any] = {}
    for key, value in options.items():
        if key in ("cmd", "args"):
            continue
        if key == "env" and isinstance(value, dict):
            env = value
            continue
        if not _KEY.fullmatch(key):
            raise RequestError(f"invalid option name {key!r}", Errno.MESSAGE_ERROR, "options")
        lines.append(f"{key} = {_ini_value(key, value)}")
    if env:
        lines.append(f"[env:{name}]")
        for key, value in env.items():
            if not _KEY.fullmatch(str(key)):
                raise RequestError(f"invalid env name {key!r}", Errno.MESSAGE_ERROR, "options")
            lines.append(f"{key} = {_ini_value(key, value)}")
    return "\n".join(lines) + "\n"


def build_config(name: str, cmd: str, args: Any, options: Mapping[str, Any]) -> Any:
    """A WatcherConfig through the config loader, so `add` and the ini file agree on every key."""
    from circus_linux import config  # deferred: the loader is only needed by this command

    text = watcher_ini(name, cmd, args, options)
    try:
        loaded = config.loads(text, f"<add {name}>")
    except ConfigError as exc:
        raise RequestError(str(exc), Errno.MESSAGE_ERROR, "options") from None
    for watcher in loaded.watchers:
        if watcher.name == name:
            return watcher
    raise CommandError(f"the config loader produced no watcher {name!r}")


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action | None:
    name = props["name"]
    arbiter.refuse_taken(name)  # errno 5, saying so when a [plugin:X] section's watcher has the name
    args = props.get("args")
    if args is not None and not isinstance(args, str | list):
        raise RequestError("expected string or list of strings", Errno.MESSAGE_ERROR, "args")
    cfg = build_config(name, props["cmd"], args, props.get("options", {}))
    watcher = await arbiter.add_watcher(cfg, start=False)
    if props.get("start", False):
        return Action(watcher.start)
    return None
