"""kill: stop a watcher's processes (or one of them) now: a signal, then SIGKILL after a grace period.

Request properties:
  name              (string, required)  the watcher
  pid               (integer, optional)  only this process
  signum            (signal, default: the watcher's stop_signal, as in Circus)  the first signal sent
  graceful_timeout  (number, optional)  seconds before SIGKILL (the watcher's graceful_timeout if absent)
  waiting           (bool, default false)  reply when the processes are gone
Reply: `{"status": "ok"}`. The watcher respawns killed processes as its policy says.
Errors: errno 3 "program NAME not found", "process PID not found in NAME".
CLI: `circusctl kill <name> [pid] [--signum=SIG] [--graceful-timeout=S] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, find_process, get_watcher
from circus_linux.control.protocol import Kind, Prop

NAME = "kill"
PROPERTIES = (
    Prop("name", Kind.STR, required=True),
    Prop("pid", Kind.INT),
    Prop("signum", Kind.SIGNAL),
    Prop("graceful_timeout", Kind.NUMBER),
    Prop("waiting", Kind.BOOL),
)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watcher = get_watcher(arbiter, props["name"])
    pid = props.get("pid")
    if pid is not None:
        find_process(watcher, pid)
    signum = props.get("signum")  # None: the watcher's stop_signal
    timeout = props.get("graceful_timeout")
    return Action(lambda: watcher.kill(pid=pid, signum=signum, graceful_timeout=timeout))
