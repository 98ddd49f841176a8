"""Per-process figures for `stats`/`dstats` in Circus's shapes, read with psutil; never signals anything."""

from __future__ import annotations

import time
from typing import Any

import psutil

# cpu_percent() measures between two calls on the same psutil.Process object; keeping the objects (keyed by
# pid and start time, so a recycled pid is a new entry) makes the second `stats` meaningful.
_CACHE: dict[int, psutil.Process] = {}
_CACHE_MAX = 4096
NO_SUCH_PROCESS = "No such process (stopped?)"


def bytes2human(n: float) -> str:
    """1536 -> '1.5K': how Circus prints mem_info1/mem_info2."""
    for unit in ("Y", "Z", "E", "P", "T", "G", "M", "K"):
        size = 1 << (("KMGTPEZY".index(unit) + 1) * 10)
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}B"


def _ctime(cpu_seconds: float) -> str:
    """CPU time as Circus writes it: M:SS.cc."""
    minutes, seconds = divmod(cpu_seconds, 60)
    return f"{int(minutes)}:{int(seconds):02d}.{int((seconds % 1) * 100):02d}"


def _proc(pid: int) -> psutil.Process:
    proc = _CACHE.get(pid)
    if proc is not None and proc.is_running():  # is_running() also compares the start time
        return proc
    proc = psutil.Process(pid)
    if len(_CACHE) >= _CACHE_MAX:
        for stale in [p for p, obj in _CACHE.items() if not obj.is_running()]:
            del _CACHE[stale]
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
    _CACHE[pid] = proc
    return proc


def basic_info(pid: int) -> dict[str, Any]:
    """pid, username, nice, mem_info1/2, rss, vms, cpu, mem, ctime, cmdline, create_time.

    Raises psutil.NoSuchProcess when the pid is gone.
    """
    proc = _proc(pid)
    with proc.oneshot():
        mem = proc.memory_info()
        cpu_times = proc.cpu_times()
        try:
            username = proc.username()
        except KeyError:  # a uid with no passwd entry
            username = str(proc.uids().real)
        return {
            "pid": pid,
            "username": username,
            "nice": proc.nice(),
            "mem_info1": bytes2human(mem.rss),
            "mem_info2": bytes2human(mem.vms),
            "rss": mem.rss,
            "vms": mem.vms,
            "cpu": proc.cpu_percent(interval=None),
            "mem": round(proc.memory_percent(), 1),
            "ctime": _ctime(cpu_times.user + cpu_times.system),
            "cmdline": " ".join(proc.cmdline()),
            "create_time": proc.create_time(),
        }


def process_info(pid: int, started: float | None = None, wid: int | None = None) -> dict[str, Any] | str:
    """Circus's per-process `info` (with children and age), or the string Circus sends for a gone pid."""
    try:
        info = basic_info(pid)
        children = []
        for child in _proc(pid).children():
            try:
                children.append(basic_info(child.pid))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # a child that exited while we looked is not an error
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return NO_SUCH_PROCESS
    start = info["create_time"] if started is None else started
    info.update(children=children, age=time.time() - start, started=start, wid=wid)
    return info


def watcher_info(process: Any) -> dict[str, Any] | str:
    """`process_info` for a runtime Process (pid, wid, started); uses its own info() when it has one."""
    own = getattr(process, "info", None)
    if callable(own):
        result: dict[str, Any] | str = own()
        return result
    info = process_info(process.pid, process.started, process.wid)
    argv = getattr(process, "cmdline", None)
    if isinstance(info, dict) and isinstance(argv, list) and not info.get("cmdline"):
        # /proc/<pid>/cmdline reads empty while the worker is being torn down; we know what we exec'd.
        info["cmdline"] = " ".join(argv)
    status = getattr(process, "status_text", None)
    if isinstance(info, dict) and status is not None:
        info["notify_status"] = status  # the worker's last STATUS= on its notify socket
    return info
