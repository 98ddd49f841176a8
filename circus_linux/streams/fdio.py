"""Write buffers to an fd, whole: writev(2) calls (at most max_write bytes each, cut after a newline, when
asked), short writes resumed; no policy."""

from __future__ import annotations

import os
from collections.abc import Sequence

# writev(2) takes at most IOV_MAX buffers (1024 on Linux) and fails with EINVAL past it.
IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def write_all(fd: int, buffers: Sequence[bytes], max_write: int | None = None) -> int:
    """Write every byte of `buffers` in order; returns the byte count. Blocking fd (writer threads only).

    Without `max_write`, one writev per IOV_MAX buffers: on an O_APPEND file each call lands in one piece,
    and a batch costs one syscall. With it, buffers are grouped into calls of at most `max_write` bytes, a
    bigger one cut after a newline (streams/writesize.py says why a sink may want that). A call then never
    ends inside a line unless that line alone is longer than `max_write` (it goes in one call of its own),
    so on an O_APPEND file shared with other writers lines stay whole. OSError propagates (the sink counts
    the loss).
    """
    if max_write is None:
        pending: list[bytes | memoryview] = [b for b in buffers if b]
        _write_group(fd, pending)
        return sum(len(b) for b in pending)
    total = 0
    group: list[bytes | memoryview] = []
    room = max_write
    for buf in buffers:
        n = len(buf)
        total += n
        pos = 0
        while n - pos > room:
            cut = buf.rfind(b"\n", pos, pos + room) + 1
            if cut <= pos:
                if group:  # no newline in what is left of this call: the line starts the next one
                    _write_group(fd, group)
                    group, room = [], max_write
                    continue
                cut = buf.find(b"\n", pos + room) + 1 or n  # one line longer than max_write
            group.append(memoryview(buf)[pos:cut])
            _write_group(fd, group)
            group, room, pos = [], max_write, cut
        if pos < n:
            group.append(buf if pos == 0 else memoryview(buf)[pos:])
            room -= n - pos
            if room == 0:
                _write_group(fd, group)
                group, room = [], max_write
    if group:
        _write_group(fd, group)
    return total


def _write_group(fd: int, buffers: list[bytes | memoryview]) -> None:
    """writev() the non-empty `buffers` until all is written: IOV_MAX at a time, a short write resumed."""
    pending = buffers
    while pending:
        if len(pending) == 1:
            view = memoryview(pending[0])
            while view:
                view = view[os.write(fd, view) :]
            return
        head = pending[:IOV_MAX]
        done = os.writev(fd, head)
        # drop the buffers written whole, keep the unwritten end of a half-written one
        i = 0
        while i < len(head) and done >= len(head[i]):
            done -= len(head[i])
            i += 1
        rest = pending[i:]
        if done:
            rest[0] = memoryview(rest[0])[done:]
        pending = rest
