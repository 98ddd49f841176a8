"""stats: CPU, memory and age of the processes of one watcher, of one process, or of every watcher.

Request properties:
  name      (string, optional)  the watcher
  process   (integer, optional)  one pid of that watcher (needs name)
  extended  (bool, default false)  run the watcher's `extended_stats` hook on each process's info
Reply, Circus's three shapes:
  no name:      `{"infos": {watcher: {pid: info}}}`
  name:         `{"name": name, "info": {pid: info}}`
  name+process: `{"process": pid, "info": info}`
`info` keys: pid, cpu (%), mem (%), mem_info1 (RSS, human), mem_info2 (VMS, human), rss, vms (bytes),
ctime, username, nice, create_time, cmdline, children [info...], age, started, wid. A process that exited
while it was measured is the string "No such process (stopped?)", as in Circus.
Added beside Circus's keys (clients that do not know them ignore them): with a name, `restarts` is the
watcher's restart count and `cgroup` holds its cgroup numbers; without, `restarts` and `cgroups` map each
watcher to them. The cgroup numbers: cpu_usage_usec, cpu_user_usec,
cpu_system_usec, cpu_percent (since the previous `stats`, 100 = one CPU), cpu_nr_throttled,
memory_current, memory_peak, pids_current, oom, oom_kill, pids_max_events, cpu/memory/io_pressure (PSI),
backends (which cgroup interface served each group); null without cgroups.
extended (Circus's semantics): `hooks.extended_stats` is called once per process as
`hook(watcher=, arbiter=, hook_name='extended_stats', pid=pid, stats=info)` and may add keys to `stats`;
its result is ignored. Each call runs in a thread (runtime.hooks); the request waits for them at most
EXTENDED_BUDGET seconds in all, so a slow hook delays this reply only. A hook that raises or is still
running then leaves that info as it was and emits hook_failure; successes emit no event (a poll a second
would flood the stream).
Errors: errno 3 "program NAME not found", "process PID not found in NAME".
CLI: `circusctl stats [name] [pid] [--extended]`
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import find_process, get_watcher
from circus_linux.control.procinfo import watcher_info
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError
from circus_linux.runtime.hooks import run_hook
from circus_linux.runtime.stats import collector_for

log = logging.getLogger(__name__)

NAME = "stats"
PROPERTIES = (Prop("name", Kind.STR), Prop("process", Kind.INT), Prop("extended", Kind.BOOL))


def _watcher(watcher: Any) -> dict[str, Any]:
    return {str(p.pid): watcher_info(p) for p in watcher.processes()}


def _restarts(watcher: Any) -> int | None:
    # None for a watcher-like object that keeps no count (the runtime's Watcher always does).
    count = getattr(watcher, "restarts", None)
    return count if isinstance(count, int) else None


HOOK = "extended_stats"
EXTENDED_BUDGET = 2.0  # seconds for all of one request's hook calls: clients wait 5 s for a reply
HOOK_THREADS = 8  # hook calls running at once for one request


async def _extend(arbiter: Any, watcher: Any, infos: dict[str, Any]) -> None:
    """Let the watcher's extended_stats hook add to each process's info (in place), within the budget."""
    hooks = getattr(getattr(watcher, "config", None), "hooks", None) or {}
    if HOOK not in hooks:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EXTENDED_BUDGET
    gate = asyncio.Semaphore(HOOK_THREADS)

    async def one(key: str, info: dict[str, Any]) -> None:
        async with gate:
            left = deadline - loop.time()
            if left <= 0:
                log.warning("stats: %s: extended_stats budget spent, pid %s left as is", watcher.name, key)
                return
            failed: list[str] = []

            def emit(event: str, **payload: Any) -> None:
                if event == "hook_failure":
                    failed.append(event)
                    arbiter.emit(f"watcher.{watcher.name}.{event}", payload)

            # The hook gets a copy: one that overruns the deadline goes on in its thread and must not
            # change a dict that is being serialised.
            mine = copy.deepcopy(info)
            await run_hook(hooks, HOOK, watcher, arbiter, emit, timeout=left, pid=info.get("pid"), stats=mine)
            if not failed:
                infos[key] = mine

    await asyncio.gather(*(one(k, v) for k, v in list(infos.items()) if isinstance(v, dict)))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    # psutil reads small /proc files: fast enough to stay on the loop for the pool sizes Circus serves.
    extended = bool(props.get("extended"))
    if "name" not in props:
        if "process" in props:
            raise RequestError("process needs a watcher name", Errno.MESSAGE_ERROR, "process")
        col = collector_for(arbiter)
        watchers = list(arbiter.watchers.values())
        infos = {w.name: _watcher(w) for w in watchers}
        if extended:
            await asyncio.gather(*(_extend(arbiter, w, infos[w.name]) for w in watchers))
        return {
            "infos": infos,
            "cgroups": {w.name: col.cgroup(w.name) for w in watchers},
            "restarts": {w.name: _restarts(w) for w in watchers},
        }
    watcher = get_watcher(arbiter, props["name"])
    if "process" in props:
        proc = find_process(watcher, props["process"])
        one = {"info": watcher_info(proc)}
        if extended:
            await _extend(arbiter, watcher, one)
        return {"process": props["process"], "info": one["info"]}
    cgroup = collector_for(arbiter).cgroup(watcher.name)
    info = _watcher(watcher)
    if extended:
        await _extend(arbiter, watcher, info)
    return {"name": props["name"], "info": info, "cgroup": cgroup, "restarts": _restarts(watcher)}
