"""StdoutStream and FancyStdoutStream: worker lines onto circusd's own stdout; writer thread only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circus_linux.streams.base import Chunk, Stream, prefixed, time_prefix
from circus_linux.streams.fdio import write_all

_COLORS = {
    "black": 30, "red": 31, "green": 32, "yellow": 33, "blue": 34, "magenta": 35, "cyan": 36, "white": 37,
}  # fmt: skip


class StdoutStream(Stream):
    """Lines as written (optionally with the time_format prefix) on circusd's fd 1."""

    def __init__(self, time_format: str | None = None, fd: int = 1, **_ignored: Any) -> None:
        self.time_format = time_format or None
        self.fd = int(fd)

    def write(self, chunks: Sequence[Chunk]) -> None:
        write_all(self.fd, [prefixed(c, time_prefix(c, self.time_format)) for c in chunks])


class FancyStdoutStream(StdoutStream):
    """Circus's colored console output: '<time> [pid] | line' in the watcher's `color` (default green)."""

    def __init__(
        self, color: str = "green", time_format: str | None = None, fd: int = 1, **_ignored: Any
    ) -> None:
        super().__init__(time_format or "%Y-%m-%d %H:%M:%S", fd)
        code = _COLORS.get(str(color).lower())
        if code is None:
            raise ValueError(f"color: expected one of {', '.join(_COLORS)}, got {color!r}")
        self.start = f"\033[0;{code}m".encode()

    def write(self, chunks: Sequence[Chunk]) -> None:
        out = []
        for c in chunks:
            prefix = self.start + time_prefix(c, self.time_format)
            out.append(b"".join(prefix + line + b"\033[0m\n" for line in c.lines))
        write_all(self.fd, out)
