"""stats: CPU, memory and age of the processes of one watcher, of one process, or of every watcher.

Request properties:
  name      (string, optional)  the watcher
  process   (integer, optional)  one pid of that watcher (needs name)
  extended  (bool, default false)  accepted for compatibility (the extended_stats hook)
Reply, Circus's three shapes:
  no name:      `{"infos": {watcher: {pid: info}}}`
  name:         `{"name": name, "info": {pid: info}}`
  name+process: `{"process": pid, "info": info}`
`info` keys: pid, cpu (%), mem (%), mem_info1 (RSS, human), mem_info2 (VMS, human), rss, vms (bytes),
ctime, username, nice, create_time, cmdline, children [info...], age, started, wid. A process that exited
while it was measured is the string "No such process (stopped?)", as in Circus.
Added beside Circus's keys (clients that do not know them ignore them): with a name, `cgroup` holds the
watcher's cgroup numbers; without, `cgroups` maps each watcher to them: cpu_usage_usec, cpu_user_usec,
cpu_system_usec, cpu_percent (since the previous `stats`, 100 = one CPU), cpu_nr_throttled,
memory_current, memory_peak, pids_current, oom, oom_kill, pids_max_events, cpu/memory/io_pressure (PSI),
backends (which cgroup interface served each group); null without cgroups.
Errors: errno 3 "program NAME not found", "process PID not found in NAME".
CLI: `circusctl stats [name] [pid] [--extended]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import find_process, get_watcher
from circus_linux.control.procinfo import watcher_info
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError
from circus_linux.runtime.stats import collector_for

NAME = "stats"
PROPERTIES = (Prop("name", Kind.STR), Prop("process", Kind.INT), Prop("extended", Kind.BOOL))


def _watcher(watcher: Any) -> dict[str, Any]:
    return {str(p.pid): watcher_info(p) for p in watcher.processes()}


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    # psutil reads small /proc files: fast enough to stay on the loop for the pool sizes Circus serves.
    if "name" not in props:
        if "process" in props:
            raise RequestError("process needs a watcher name", Errno.MESSAGE_ERROR, "process")
        col = collector_for(arbiter)
        return {
            "infos": {w.name: _watcher(w) for w in arbiter.watchers.values()},
            "cgroups": {w.name: col.cgroup(w.name) for w in arbiter.watchers.values()},
        }
    watcher = get_watcher(arbiter, props["name"])
    if "process" in props:
        proc = find_process(watcher, props["process"])
        return {"process": props["process"], "info": watcher_info(proc)}
    cgroup = collector_for(arbiter).cgroup(watcher.name)
    return {"name": props["name"], "info": _watcher(watcher), "cgroup": cgroup}
