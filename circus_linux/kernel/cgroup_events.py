"""One pollable fd for many cgroup event files (cgroup.events, memory.events); no policy.

A change of such a file wakes poll/epoll waiters with POLLPRI|POLLERR (and fires inotify IN_MODIFY) until
the file is read again through the same open file (checked on kernel 6.18). EPOLLIN is always set on
kernfs files, so ``add_reader`` on the file itself would spin; an epoll registered for EPOLLPRI is
readable exactly when a watched file changed, and asyncio can watch that epoll fd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
from collections.abc import Hashable


class EventsMonitor:
    """Watch many cgroup event files (cgroup.events, memory.events) through one pollable fd.

    ``fileno()`` is an epoll fd, readable when a watched file changed; then ``poll()`` re-reads the
    changed files (clearing their notification) and returns ``[(key, text)]``.
    """

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._by_fd: dict[int, Hashable] = {}
        self._by_key: dict[Hashable, int] = {}

    def fileno(self) -> int:
        return self._ep.fileno()

    def add(self, key: Hashable, path: str) -> str:
        """Watch ``path`` under ``key``; returns its current text (read after registering)."""
        if key in self._by_key:
            self.discard(key)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._ep.register(fd, select.EPOLLPRI)
        except OSError:
            os.close(fd)
            raise
        self._by_fd[fd] = key
        self._by_key[key] = fd
        return os.pread(fd, 4096, 0).decode("ascii", "replace")

    def discard(self, key: Hashable) -> None:
        fd = self._by_key.pop(key, None)
        if fd is None:
            return
        del self._by_fd[fd]
        with contextlib.suppress(OSError):
            self._ep.unregister(fd)
        os.close(fd)

    def poll(self, timeout: float = 0.0) -> list[tuple[Hashable, str]]:
        out: list[tuple[Hashable, str]] = []
        for fd, _ev in self._ep.poll(timeout):
            key = self._by_fd.get(fd)
            if key is None:
                continue
            try:
                out.append((key, os.pread(fd, 4096, 0).decode("ascii", "replace")))
            except OSError as e:
                if e.errno != errno.ENODEV:  # the cgroup was removed under us
                    raise
                self.discard(key)
        return out

    def close(self) -> None:
        for key in list(self._by_key):
            self.discard(key)
        self._ep.close()

    def __enter__(self) -> EventsMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
