"""Read-only /proc probes for the benchmark (children, stat, CPU time, RSS); never signals or writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> bytes | None:
    # os.open/os.read instead of open(): this sits in 0.2 ms polling loops, and the io stack costs more
    # than the syscalls themselves. None when the process (or thread) is gone.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except ProcessLookupError:  # ESRCH: the task died between open and read
                return None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def children(pid: int) -> list[int]:
    """Pids of every child of `pid`, from /proc/<pid>/task/<tid>/children of each of its threads.

    The children file lists the children of one *thread* (proc(5)); a supervisor that spawned from a
    worker thread would have its children there, so every thread is read, not only the main one.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return []
    out: list[int] = []
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            out.extend(int(x) for x in data.split())
    return out


@dataclass(frozen=True)
class Stat:
    comm: str
    state: str
    utime: int  # clock ticks, all threads
    stime: int
    starttime: int  # clock ticks after boot


def stat(pid: int) -> Stat | None:
    """Fields of /proc/<pid>/stat (proc(5)); None when the pid does not exist."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    # comm may contain spaces and parentheses: it runs from the first '(' to the LAST ')'.
    lp = data.index(b"(")
    rp = data.rindex(b")")
    rest = data[rp + 2 :].split()
    return Stat(
        comm=data[lp + 1 : rp].decode(errors="replace"),
        state=rest[0].decode(),
        utime=int(rest[11]),
        stime=int(rest[12]),
        starttime=int(rest[19]),
    )


def is_running(pid: int, comm: str) -> bool:
    """True when `pid` has exec'd `comm` (its comm is the program's name) and is not a zombie."""
    st = stat(pid)
    return st is not None and st.comm == comm and st.state not in ("Z", "X", "x")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of the whole process (every thread, dead ones included), in clock ticks."""
    st = stat(pid)
    return None if st is None else st.utime + st.stime


def cpu_ns(pid: int) -> int | None:
    """Nanoseconds on CPU summed over the live threads, from /proc/<pid>/task/*/schedstat.

    Finer than utime+stime (which moves in 10 ms ticks, i.e. 0.1 % of a 10 s window), at the price of
    missing threads that exited during the window.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return None
    total = 0
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/schedstat")
        if data:
            total += int(data.split()[0])
    return total


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB."""
    data = _read(f"/proc/{pid}/status")
    if not data:
        return None
    for line in data.splitlines():
        if line.startswith(b"VmRSS:"):
            return int(line.split()[1])
    return None
