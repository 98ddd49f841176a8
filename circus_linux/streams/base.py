"""What every output stream shares: the Chunk of lines it is handed and the Stream interface; no I/O here."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STDOUT, STDERR = "stdout", "stderr"

# Options the hub reads itself (how output is captured and buffered); every other option goes to the class.
HUB_OPTIONS = frozenset(
    {"class", "overflow", "buffer_size", "max_line", "publish", "drain_timeout", "direct", "ring"}
)


@dataclass(frozen=True)
class Chunk:
    """Complete lines of one worker, in order, as read in one go (newlines stripped)."""

    watcher: str
    kind: str  # STDOUT or STDERR
    pid: int
    wid: int
    time: float  # time.time() when circusd read them
    lines: Sequence[bytes]

    def payload(self) -> bytes:
        """The lines as the worker wrote them (newline-terminated)."""
        return b"\n".join(self.lines) + b"\n" if self.lines else b""

    def nbytes(self) -> int:
        return sum(len(line) for line in self.lines) + len(self.lines)


class Stream:
    """A sink for worker output. write() and close() run in the sink's own writer thread, never in the loop.

    Subclasses may block in write(): the hub's bounded queue in front of them turns a slow sink into
    backpressure on the workers (or counted drops), never into a stalled event loop.
    """

    def write(self, chunks: Sequence[Chunk]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


def time_prefix(chunk: Chunk, time_format: str | None) -> bytes:
    """Circus's `time_format` prefix: '<strftime> [pid] | ' before every line; b'' without a format."""
    if not time_format:
        return b""
    stamp = datetime.datetime.fromtimestamp(chunk.time).strftime(time_format)
    return f"{stamp} [{chunk.pid}] | ".encode()


def prefixed(chunk: Chunk, prefix: bytes) -> bytes:
    if not prefix:
        return chunk.payload()
    return b"".join(prefix + line + b"\n" for line in chunk.lines)


def opt_int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    return int(value)


def opt_bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")
