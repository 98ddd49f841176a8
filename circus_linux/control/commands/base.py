"""What every command handler shares: the Action shape and watcher lookup; no sockets, no replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from circus_linux.control.protocol import Errno, Prop, RequestError, select_names
from circus_linux.errors import UnknownWatcher

Result = Mapping[str, Any] | list[Any] | None


@dataclass
class Action:
    """Work that outlives the request unless the client asked `waiting: true`.

    `execute` does every check first (unknown watcher, bad pid) so errors still reach the client; the
    Action is what may then run in the background. Without waiting the reply carries `immediate`; with
    waiting it carries `finish(result of run())`. `after_reply` defers the work until the reply is sent
    (quit: the reply must leave before the server goes away).
    """

    run: Callable[[], Awaitable[Any]]
    immediate: Mapping[str, Any] | None = None
    finish: Callable[[Any], Result] | None = None
    after_reply: bool = False


class Command(Protocol):
    """A command module: NAME, PROPERTIES and execute(); its docstring documents the wire contract."""

    NAME: str
    PROPERTIES: Sequence[Prop]

    async def execute(self, arbiter: Any, props: Mapping[str, Any]) -> Result | Action: ...


def get_watcher(arbiter: Any, name: str) -> Any:
    """The watcher, or errno 3 "program NAME not found" as Circus answers."""
    try:
        return arbiter.get_watcher(name)
    except (UnknownWatcher, KeyError):
        raise RequestError(f"program {name} not found", Errno.MESSAGE_ERROR) from None


def select_watchers(arbiter: Any, props: Mapping[str, Any]) -> list[Any]:
    """Watchers named by `name` under `match` (glob by default), in arbiter order; every one without name."""
    watchers = list(arbiter.watchers.values())
    if "name" not in props:
        return watchers
    names = set(select_names([w.name for w in watchers], props["name"], props.get("match", "glob")))
    chosen = [w for w in watchers if w.name in names]
    if not chosen:
        raise RequestError(f"program {props['name']} not found", Errno.MESSAGE_ERROR)
    return chosen


def find_process(watcher: Any, pid: int) -> Any:
    """The watcher's live process with this pid, or errno 3 as Circus answers."""
    for proc in watcher.processes():
        if proc.pid == pid:
            return proc
    raise RequestError(f"process {pid!r} not found in {watcher.name!r}", Errno.MESSAGE_ERROR)


def statuses(watchers: Sequence[Any]) -> dict[str, str]:
    return {w.name: w.status() for w in watchers}
