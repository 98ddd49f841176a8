"""Write buffers to an fd, whole: one writev(2) per IOV_MAX buffers, short writes resumed; no policy."""

from __future__ import annotations

import os
from collections.abc import Sequence

# writev(2) takes at most IOV_MAX buffers (1024 on Linux) and fails with EINVAL past it.
IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def write_all(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
    """Write every byte of `buffers` in order; returns the byte count. Blocking fd (writer threads only).

    One writev for a batch instead of one write per buffer: on an O_APPEND file each call lands in one
    piece, and a batch costs one syscall. A short write (a pipe or a full disk's last bytes) is resumed
    from where it stopped; OSError propagates (the sink counts the loss).
    """
    pending: list[bytes | memoryview] = [b for b in buffers if b]
    total = sum(len(b) for b in pending)
    while pending:
        if len(pending) == 1:
            view = memoryview(pending[0])
            while view:
                view = view[os.write(fd, view) :]
            break
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
    return total
