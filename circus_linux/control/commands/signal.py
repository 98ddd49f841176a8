"""signal: send a signal to a watcher's processes, to one of them, or to one of their children.

Request properties:
  name       (string, required)  the watcher
  signum     (signal, required)  a number or a name, with or without SIG, any case ("hup", "SIGTERM", 15)
  pid        (integer, optional)  only this process of the watcher
  childpid   (integer, optional)  only this descendant of `pid` (needs pid)
  children   (bool, default false)  the direct children of the process(es) as well
  recursive  (bool, default false)  every descendant as well
Reply: `{"status": "ok"}`.
Errors: errno 3 "program NAME not found", "process PID not found in NAME", "signal invalid",
"cannot specify childpid without pid".
CLI: `circusctl signal <name> [<pid> [<childpid>]] [--children] [--recursive] <signum>`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import find_process, get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "signal"
PROPERTIES = (
    Prop("name", Kind.STR, required=True),
    Prop("signum", Kind.SIGNAL, required=True),
    Prop("pid", Kind.INT),
    Prop("childpid", Kind.INT),
    Prop("children", Kind.BOOL),
    Prop("recursive", Kind.BOOL),
)


async def execute(arbiter: Any, props: Mapping[str, Any]) -> None:
    watcher = get_watcher(arbiter, props["name"])
    signum = props["signum"]
    pid = props.get("pid")
    if "childpid" in props:
        if pid is None:
            raise RequestError("cannot specify childpid without pid", Errno.MESSAGE_ERROR, "childpid")
        find_process(watcher, pid)
        # Through a pidfd opened while the worker (its ancestor) is alive, as every other signal path.
        if not await watcher.signal_child(pid, props["childpid"], signum):
            childpid = props["childpid"]
            raise RequestError(f"child {childpid!r} not found under {pid!r}", Errno.MESSAGE_ERROR, "childpid")
        return
    if pid is not None:
        find_process(watcher, pid)
    await watcher.signal(
        signum, pid=pid, children=props.get("children", False), recursive=props.get("recursive", False)
    )
