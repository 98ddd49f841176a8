"""What every output stream shares: the Chunk of lines it is handed and the Stream interface; no I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STDOUT, STDERR = "stdout", "stderr"

# Options the hub reads itself (how output is captured and buffered); every other option goes to the class.
HUB_OPTIONS = frozenset(
    {"class", "overflow", "buffer_size", "max_line", "publish", "drain_timeout", "direct", "ring"}
)


class Chunk:
    """Complete lines of one worker, in order, as read in one go.

    Made from lines (newlines stripped) or from a block (the same lines newline-terminated in one bytes
    object, as the hub reads them). Each form is derived from the other on first use and kept: a sink that
    writes blocks as they are never pays for a split, one that wants lines sees no difference.
    """

    __slots__ = ("_block", "_lines", "kind", "pid", "time", "watcher", "wid")

    def __init__(
        self,
        watcher: str,
        kind: str,  # STDOUT or STDERR
        pid: int,
        wid: int,
        time: float,  # time.time() when circusd read them
        lines: Sequence[bytes] | None = None,
        *,
        block: bytes | None = None,
    ) -> None:
        if (lines is None) == (block is None):
            raise TypeError("Chunk takes lines or block, not both")
        if block is not None and block and not block.endswith(b"\n"):
            raise ValueError("a block is whole lines: it ends with a newline")
        self.watcher = watcher
        self.kind = kind
        self.pid = pid
        self.wid = wid
        self.time = time
        self._lines = lines
        self._block = block

    @property
    def lines(self) -> Sequence[bytes]:
        if self._lines is None:
            assert self._block is not None
            lines = self._block.split(b"\n")
            lines.pop()  # after the last newline
            self._lines = lines
        return self._lines

    def payload(self) -> bytes:
        """The lines as the worker wrote them (newline-terminated)."""
        if self._block is None:
            lines = self.lines
            self._block = b"\n".join(lines) + b"\n" if lines else b""
        return self._block

    def nbytes(self) -> int:
        if self._block is not None:
            return len(self._block)
        return sum(len(line) for line in self.lines) + len(self.lines)

    def count(self) -> int:
        """How many lines (counted, not split, when the chunk is a block)."""
        return len(self._lines) if self._lines is not None else self.payload().count(b"\n")

    def __repr__(self) -> str:
        return f"Chunk({self.watcher!r}, {self.kind!r}, pid={self.pid}, wid={self.wid}, {self.nbytes()} B)"


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
    import datetime  # time_format only (~450 KiB of RSS a circusd without it does not carry)

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
