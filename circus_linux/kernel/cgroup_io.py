"""cgroup file primitives: one read or one write(2) per value, and the CgroupError family; no policy."""

from __future__ import annotations

import errno
import os

from circus_linux.errors import CircusError


class CgroupError(CircusError):
    """A cgroup file operation failed; carries the path and errno."""

    def __init__(self, message: str, path: str, err: int | None = None) -> None:
        self.path = path
        self.errno = err
        detail = f" ({errno.errorcode.get(err, err)}: {os.strerror(err)})" if err else ""
        super().__init__(f"{message}: {path}{detail}")


class CgroupUnavailable(CgroupError):
    """No cgroup root could be set up for circusd."""


def read_file(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def write_file(path: str, data: str) -> None:
    # One write(2) per value: cgroup files parse each write as a whole.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode("ascii"))
    finally:
        os.close(fd)
