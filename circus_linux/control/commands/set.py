"""set: change options of a running watcher (numprocesses scales it live).

Request properties:
  name     (string, required)  the watcher
  options  (object, required)  {key: value}; Circus's circusctl sends typed values, older scripts send
           text: a decimal string is accepted for the numeric keys below
  waiting  (bool, default false)  reply when the change is applied (processes spawned/stopped)
Reply: `{"status": "ok"}`.
Cgroup limits (memory_max, memory_high, memory_swap_max, cpu_max, cpu_weight, io_weight, pids_max) are
parsed like the ini (`256M`, `20%`, `max`), written to the watcher's cgroup at once and kept in its
config; a bad value is errno 3 naming the key, a value the kernel refuses (or no cgroups) errno 5.
Errors: errno 3 "program NAME not found", or a bad key/value as the runtime judges it.
CLI: `circusctl set <name> <key> <value> [key value...] [--waiting]`
"""

from __future__ import annotations

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
            msg = "; ".join(f"{i.key}: {i.message}" for i in exc.issues)
            raise RequestError(f"invalid value for {msg}", Errno.MESSAGE_ERROR, "options") from None
        parsed[key] = value
        texts[key] = str(options[key])
    return parsed, texts


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watcher = get_watcher(arbiter, props["name"])
    limits, texts = cgroup_changes(watcher.name, props["options"])
    options = coerce({k: v for k, v in props["options"].items() if k not in CGROUP_KEYS})
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

    async def run() -> Any:
        return await watcher.set_options(options) if options else None

    return Action(run)
