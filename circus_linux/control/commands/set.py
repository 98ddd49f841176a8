"""set: change options of a running watcher (numprocesses scales it live).

Request properties:
  name     (string, required)  the watcher
  options  (object, required)  {key: value}; Circus's circusctl sends typed values, ours and older
           scripts send text: every known key is parsed as the ini parses it (`stop_signal = INT`,
           `shell = yes`, `env` as an object or KEY=VALUE,..., `rlimit_nofile = 4096`, `hooks.NAME`,
           `stdout_stream.max_bytes`); a bad value is errno 3 naming the key and nothing changes. Keys the
           config does not know are kept as free-form options (text), as in the ini
  waiting  (bool, default false)  reply when the change is applied (processes spawned/stopped)
Reply: `{"status": "ok"}`.
Cgroup limits (memory_max, memory_high, memory_swap_max, cpu_max, cpu_weight, io_weight, pids_max) are
parsed like the ini (`256M`, `20%`, `max`), written to the watcher's cgroup at once and kept in its
config; a bad value is errno 3 naming the key; a value the kernel refuses, a limit this host's cgroups
cannot apply (no controller for it, say memory_max where cgroup2 has no memory controller), or no
cgroups at all: errno 5 naming the key, and nothing is changed.
Errors: errno 3 "program NAME not found", a bad value, a key that only the configuration file can change
(`sockets`, `name`, ...), numprocesses above 1 for a singleton.
CLI: `circusctl set <name> <key> <value> [key value...] [--waiting]`
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from circus_linux import config as configmod
from circus_linux.control.commands.base import Action, get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError
from circus_linux.errors import CircusError, ConfigError

NAME = "set"
PROPERTIES = (
    Prop("name", Kind.STR, required=True),
    Prop("options", Kind.DICT, required=True),
    Prop("waiting", Kind.BOOL),
)


def parse_options(watcher: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The non-cgroup keys of ``options``, parsed like the ini (config.parse_watcher_option) before the
    reply: a bad value is errno 3 naming the key, and nothing is changed. Keys the config does not know
    stay free-form options (as in the ini: plugins read them, e.g. ``flapping.max_retry``), kept as text.
    """
    cfg = getattr(watcher, "config", None)
    fields = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in CGROUP_KEYS:
            continue
        try:
            _field, out[key] = configmod.parse_watcher_option(watcher.name, key, value)
        except ConfigError as exc:
            raise RequestError(_issues(exc), Errno.MESSAGE_ERROR, "options") from None
        except KeyError:
            if key in fields:
                raise RequestError(
                    f"{key!r} cannot be changed with set: edit the configuration file, then reloadconfig",
                    Errno.MESSAGE_ERROR,
                    "options",
                ) from None
            out[key] = value if isinstance(value, str) else json.dumps(value)
    if out.get("numprocesses", 0) > 1 and getattr(cfg, "singleton", False):
        raise RequestError("singleton watcher: numprocesses cannot exceed 1", Errno.MESSAGE_ERROR, "options")
    return out


def _issues(exc: ConfigError) -> str:
    return "invalid value for " + "; ".join(f"{i.key}: {i.message}" for i in exc.issues)


CGROUP_KEYS = frozenset(
    {"memory_max", "memory_high", "memory_swap_max", "cpu_max", "cpu_weight", "io_weight", "pids_max"}
)


def cgroup_changes(watcher: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The cgroup keys of ``options`` parsed by the config layer: (limit -> value, limit -> text)."""
    parsed: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for key in sorted(CGROUP_KEYS & set(options)):
        try:
            _field, value = configmod.parse_watcher_option(watcher, key, options[key])
        except ConfigError as exc:
            raise RequestError(_issues(exc), Errno.MESSAGE_ERROR, "options") from None
        parsed[key] = value
        texts[key] = str(options[key])
    return parsed, texts


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watcher = get_watcher(arbiter, props["name"])
    limits, texts = cgroup_changes(watcher.name, props["options"])
    options = parse_options(watcher, props["options"])
    cgroups = getattr(arbiter, "cgroups", None)
    if limits and cgroups is None:
        raise RequestError(
            f"cannot set {', '.join(limits)}: circusd runs without cgroups", Errno.COMMAND_ERROR, "options"
        )
    if limits and cgroups is not None:
        # Applied before the reply, so a value the kernel refuses reaches the client even without waiting.
        try:
            await cgroups.update_limits(watcher, limits, texts)
        except CircusError as exc:  # CgroupError: the kernel refused the value
            raise RequestError(str(exc), Errno.COMMAND_ERROR, "options") from None

    # Stream changes are applied now, before the reply: a stream that cannot be made (a class whose
    # constructor fails, a file that cannot be opened) is an error the client sees, and nothing changes.
    kinds = ("stdout_stream.", "stderr_stream.")
    streamed = {k: options.pop(k) for k in list(options) if k.startswith(kinds)}
    respawn: list[str] = []
    if streamed:
        try:
            respawn = watcher.set_stream_options(streamed)
        except (OSError, ValueError) as exc:
            keys = ", ".join(streamed)
            raise RequestError(f"cannot apply {keys}: {exc}", Errno.MESSAGE_ERROR, "options") from None

    async def run() -> Any:
        if respawn:
            return await watcher.set_options(options, also_reload=respawn)
        return await watcher.set_options(options) if options else None

    return Action(run)
