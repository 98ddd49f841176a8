"""The `logs` ring: a watcher's last lines, kept as the blocks they were read in; pure, no I/O.

Lines are only split out of a block when somebody asks for them (tail), and counted only now and then to
forget the blocks nobody can ask for any more: keeping the ring costs the capture path no work per line.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from circus_linux.kernel.native import count_byte
from circus_linux.runtime.stream_lines import split_block

RING_SIZE = 1000  # lines a watcher's ring answers for
# Bytes held before old blocks are counted and forgotten; past it, the ring also lets what it keeps
# double before counting again, so a watcher of long lines is not counted at every block.
RING_BYTES = 1024 * 1024
# The most the ring keeps whatever its line count: 1000 lines of 64 KiB would be 64 MiB per watcher
# (a review measured 90 MB of RSS per watcher writing 60 KB lines). Past it, `logs` answers fewer lines.
RING_MAX_BYTES = 4 * 1024 * 1024
COUNT_STEP = 32 * 1024  # newlines are counted backwards this many bytes at a time, stopping when enough
NEWLINE = ord("\n")


@dataclass(frozen=True)
class Entry:
    time: float
    pid: int
    wid: int
    kind: str
    block: bytes  # whole lines, newline-terminated, at least one
    seq: int = 0  # the block's number in its watcher's output: (seq, index of the line) orders every line


# (time, pid, wid, kind, line, (block seq, index of the line in its block))
RingLine = tuple[float, int, int, str, bytes, tuple[int, int]]


class LineRing:
    """add() blocks; last() gives the newest lines of the last `size` (within `max_bytes`) as RingLine."""

    def __init__(
        self, size: int = RING_SIZE, budget: int = RING_BYTES, max_bytes: int = RING_MAX_BYTES
    ) -> None:
        self.size = size
        self.budget = budget
        self.max_bytes = max_bytes
        # Every block holds at least one line: more than `size` blocks are never needed.
        self._blocks: collections.deque[Entry] = collections.deque(maxlen=size)
        self._bytes = 0  # an upper bound: blocks pushed out by maxlen are not subtracted
        self._kept = 0  # bytes kept by the last prune

    def add(self, time: float, pid: int, wid: int, kind: str, block: bytes, seq: int = 0) -> None:
        if not block or self.size <= 0:
            return
        self._blocks.append(Entry(time, pid, wid, kind, block, seq))
        self._bytes += len(block)
        if self._bytes > max(self.budget, 2 * self._kept):
            self._prune()

    def _prune(self) -> None:
        """Forget the oldest blocks whose lines are all older than the newest `size` lines, and those past
        `max_bytes` (the newest block is always kept)."""
        need, keep, kept = self.size, 0, 0
        for entry in reversed(self._blocks):
            if keep and kept + len(entry.block) > self.max_bytes:
                break
            keep += 1
            kept += len(entry.block)
            need -= count_newlines(entry.block, need)
            if need <= 0:
                break
        for _ in range(len(self._blocks) - keep):
            self._blocks.popleft()
        self._bytes = self._kept = kept

    def last(self, n: int, wid: int | None = None) -> list[RingLine]:
        """The newest n lines (of worker `wid` only, if given) among the ring's last `size`, oldest first,
        each as (time, pid, wid, kind, line, (block seq, index of the line in its block))."""
        picked: list[RingLine] = []
        budget = self.size
        for e in reversed(self._blocks):
            if budget <= 0 or len(picked) >= n:
                break
            all_lines = split_block(e.block)
            skip = max(0, len(all_lines) - budget)
            lines = all_lines[skip:]
            budget -= len(lines)
            if wid is None or e.wid == wid:
                picked.extend(
                    (e.time, e.pid, e.wid, e.kind, line, (e.seq, skip + i))
                    for i, line in reversed(list(enumerate(lines)))
                )
        del picked[n:]
        picked.reverse()
        return picked

    def clear(self) -> None:
        self._blocks.clear()
        self._bytes = self._kept = 0


def count_newlines(block: bytes, enough: int) -> int:
    """Newlines in block, counted from its end; stops once `enough` are seen (then returns at least that)."""
    found, end = 0, len(block)
    while end > 0 and found < enough:
        start = max(0, end - COUNT_STEP)
        found += count_byte(block, NEWLINE, start, end)
        end = start
    return found
