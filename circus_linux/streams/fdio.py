"""Write buffers to an fd, whole: writev(2) calls of at most WRITE_MAX bytes cut after a newline, short writes
resumed; no policy."""

from __future__ import annotations

import os
from collections.abc import Sequence

# writev(2) takes at most IOV_MAX buffers (1024 on Linux) and fails with EINVAL past it.
IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
# Most bytes one call writes. A buffered write to ext4 (Linux 6.x, large folios) gets page-cache folios as
# big as the write allows: past 32 KiB (order 3) they no longer come from the per-CPU free lists, which
# hold recently freed (warm) pages, but from the buddy allocator. On a VM with free page reporting (the
# project's: virtio-balloon F_REPORTING) those are pages the host has taken back, and the copy into them
# pays a host fault per page: 2026-11-28, 175 coreutils flooders into one file, the sink's writes of
# 512 KiB cost 1.5-2.4 ms/MB where 32 KiB writes cost 1.0-1.5 (runs interleaved, `perf` on the writer
# thread: 46 % in copy_folio_from_iter_atomic), and supervisord, which writes what each small read got,
# 0.8-1.0. On a warm machine the extra calls cost about 0.05 ms/MB.
WRITE_MAX = 32 * 1024


def write_all(fd: int, buffers: Sequence[bytes], max_write: int = WRITE_MAX) -> int:
    """Write every byte of `buffers` in order; returns the byte count. Blocking fd (writer threads only).

    Buffers are grouped into calls of at most `max_write` bytes, a bigger one cut after a newline: few
    syscalls for many small lines, small page-cache folios for big blocks (see WRITE_MAX). A call never
    ends inside a line unless that line alone is longer than `max_write` (it then goes in one call of its
    own), so on an O_APPEND file shared with other writers lines stay whole. OSError propagates (the sink
    counts the loss).
    """
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
