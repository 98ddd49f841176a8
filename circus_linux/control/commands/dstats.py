"""dstats: CPU, memory and age of circusd itself.

Request properties: none.
Reply: `{"info": {...}}`: the keys of one `stats` process info (pid, cpu, mem, mem_info1, mem_info2,
ctime, username, nice, create_time, cmdline, children [info...], age, started), so Circus's circusctl can
print it, plus whatever the runtime's `arbiter.dstats()` adds (rss, num_fds, cgroups, ...); the runtime's
own child count is reported as `num_children` since `children` is Circus's list.
`cgroups` (absent without cgroups) says which backend serves what: mode (explicit/delegated/default),
v2_root, v2_controllers, supervisor (the leaf circusd moved to under Delegate=yes), v1_roots,
v1_unavailable {controller: why}, and per watcher {v2, v1, limits {limit: v2|v1|unsupported},
stats {cpu|memory|oom|pids|pressure: v2|v1|unsupported}}.
`tasks`: what circusd's asyncio tasks wait on, for a command that gets no reply: {count, groups: [{count,
name, chain: ["file:line function", ... innermost last]}]}, the 10 largest groups of tasks with the same
name and chain (e.g. 300 commands queued on one watcher's lock: "watcher.py:... Watcher.restart", then
"locks.py:... Lock.acquire").
CLI: `circusctl dstats`
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from circus_linux.control.procinfo import process_info
from circus_linux.control.protocol import Prop

NAME = "dstats"
PROPERTIES: tuple[Prop, ...] = ()


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    base = process_info(os.getpid(), getattr(arbiter, "started", None))
    info: dict[str, Any] = dict(base) if isinstance(base, dict) else {}
    for key, value in arbiter.dstats().items():
        if key == "children" and not isinstance(value, list):
            info["num_children"] = value
        else:
            info[key] = value
    return {"info": info}
