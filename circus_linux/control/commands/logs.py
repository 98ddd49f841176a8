"""logs: the last lines a watcher's workers wrote (captured stdout/stderr), and a lease to follow them live.

Request properties:
  name    (string, required)  the watcher
  wid     (integer, optional)  only the lines of the worker with this wid
  lines   (integer, default 20)  how many of the last lines (from an in-memory ring: the last 1000
          lines of the watcher, at most 4 MiB of them)
  follow  (number, optional)  seconds during which every new line is also published as an event on the
          pub/sub endpoint (with the default `publish = auto`); a follower renews it
Reply: `{"name": NAME, "blocks": N, "lines": [{"time", "pid", "wid", "stream", "data", "seq"}...],
        "stats": {...}, "topics": ["watcher.NAME.stdout", "watcher.NAME.stderr"]}`. Every line is numbered
`seq` = [block, index in the block], in the ring and in its event, and `blocks` is the number of the last
block read so far: a follower prints the lines after it from the events, and takes from the ring the
ones published before its subscription took effect (`circusctl logs -f` does). Stats: `bytes` read,
`written_bytes`,
`dropped` lines (overflow = drop), long lines `split`, lines lost to `write_errors`, `queued_bytes` (bytes,
not lines: circusd does not count the lines it writes), `paused` pipes (each over its own buffer_size) and
`held` outputs (stdout/stderr whose sink is over its 2 MiB bound: none of their pipes is read until it
drains).
Events (pub/sub): topic `watcher.<name>.stdout` / `.stderr`, body {pid, wid, data (the line), seq, time}.
Only captured output is there: a watcher without stdout_stream/stderr_stream writes to circusd's own
stdout/stderr, and a direct journald stream never passes through circusd (read it with journalctl).
Errors: errno 3 "program NAME not found"; errno 3 for a negative `lines`.
CLI: `circusctl logs NAME [-f] [--wid N] [--lines N]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import get_watcher
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError

NAME = "logs"
PROPERTIES = (
    Prop("name", Kind.STR, required=True),
    Prop("wid", Kind.INT),
    Prop("lines", Kind.INT),
    Prop("follow", Kind.NUMBER),
)
DEFAULT_LINES = 20


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    watcher = get_watcher(arbiter, props["name"])
    lines = props.get("lines", DEFAULT_LINES)
    if lines < 0:
        raise RequestError("lines must be >= 0", Errno.MESSAGE_ERROR, "lines")
    hub = arbiter.streams
    if props.get("follow"):
        hub.follow(watcher.name, float(props["follow"]))
    return {
        "name": watcher.name,
        "blocks": hub.blocks(watcher.name),
        "lines": hub.tail(watcher.name, lines, props.get("wid")),
        "stats": hub.stats(watcher.name),
        "topics": [f"watcher.{watcher.name}.stdout", f"watcher.{watcher.name}.stderr"],
    }
