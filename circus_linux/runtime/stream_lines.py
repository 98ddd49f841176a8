"""Cut a worker's byte stream into complete lines with a bound on line length; pure, no I/O.

Two ways out of the same splitter: feed() gives a list of lines, feed_block() gives the same lines as one
newline-terminated block (what the file sinks write as is). The block way does no Python work per line:
it cuts at the last newline (bytes.rfind) and proves that no line passes max_line with a few find() calls
per block; only a block that may hold a long line goes through the per-line feed().
"""

from __future__ import annotations

# Appended to every piece of a cut line but the last, so a reader of the log sees the line goes on.
CONTINUED = b" [...]"
MAX_LINE = 64 * 1024


class LineSplitter:
    """feed() bytes, get complete lines (without their newline); never holds more than max_line bytes.

    A line longer than max_line comes out as pieces of at most max_line bytes (marker included), each but
    the last ending in CONTINUED; `split` counts such lines once each.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line <= len(CONTINUED):
            raise ValueError(f"max_line must be more than {len(CONTINUED)} bytes")
        self.max_line = max_line
        self.partial = b""
        self.split = 0
        self._cutting = False  # the partial line was already cut (and counted)

    def _pieces(self, line: bytes) -> list[bytes]:
        step = self.max_line - len(CONTINUED)
        out = [line[i : i + step] + CONTINUED for i in range(0, len(line) - self.max_line, step)]
        # ceil((len - max_line) / step) marked pieces leave a rest of at most max_line bytes
        out.append(line[len(out) * step :])
        return out

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.partial + data if self.partial else data
        end = buf.rfind(b"\n")
        if end < 0:
            self.partial = buf
            return self._cut_partial()
        self.partial = buf[end + 1 :]
        lines = buf[:end].split(b"\n")
        # Only a block longer than max_line can hold a long line: the common case skips the scan.
        if end > self.max_line:
            out: list[bytes] = []
            for i, line in enumerate(lines):
                if len(line) > self.max_line:
                    if not (i == 0 and self._cutting):
                        self.split += 1
                    out.extend(self._pieces(line))
                else:
                    out.append(line)
            lines = out
        self._cutting = False
        return lines + self._cut_partial() if len(self.partial) > self.max_line else lines

    def _cut_partial(self) -> list[bytes]:
        if len(self.partial) <= self.max_line:
            return []
        step = self.max_line - len(CONTINUED)
        out: list[bytes] = []
        while len(self.partial) > self.max_line:
            out.append(self.partial[:step] + CONTINUED)
            self.partial = self.partial[step:]
        if not self._cutting:
            self.split += 1
            self._cutting = True
        return out

    def finish(self) -> list[bytes]:
        """At end of file: the unterminated last line, if any."""
        rest, self.partial, self._cutting = self.partial, b"", False
        return [rest] if rest else []

    # ---------------------------------------------------------------- block form
    def feed_block(self, data: bytes) -> bytes:
        """feed() as one block: the complete lines, each newline-terminated (b"" when there is none yet).

        Same lines, same cuts, same `split` count as feed(); the partial last line is kept for the next call.
        """
        end = data.rfind(b"\n")
        if end < 0 or not fits(self.partial, data, end, self.max_line):
            return join_lines(self.feed(data))
        if self.partial:
            # One copy of the block (join takes the view as is); a slice then a + would make two.
            block = b"".join((self.partial, memoryview(data)[: end + 1]))
        else:
            block = data if end == len(data) - 1 else data[: end + 1]
        self.partial = data[end + 1 :]
        self._cutting = False  # fits(): the first line, the partial one included, was not long
        if len(self.partial) > self.max_line:
            block += join_lines(self._cut_partial())
        return block

    def finish_block(self) -> bytes:
        """finish() as a block: the unterminated last line with a newline, or b""."""
        return join_lines(self.finish())


def join_lines(lines: list[bytes]) -> bytes:
    """Lines (without newlines) as one newline-terminated block."""
    return b"\n".join(lines) + b"\n" if lines else b""


def split_block(block: bytes) -> list[bytes]:
    """The inverse of join_lines: the lines of a newline-terminated block."""
    lines = block.split(b"\n")
    lines.pop()  # after the last newline: b""
    return lines


def fits(partial: bytes, data: bytes, end: int, max_line: int) -> bool:
    """True when no line of partial + data[: end + 1] is longer than max_line (data[end] is a newline).

    False may also mean "could not prove it" (the caller then takes the per-line path, exact either way).
    Proof without looking at each line: with steps of s = (max_line + 2) // 2 bytes, a run of more than
    max_line bytes without a newline (at least 2s - 1 bytes) covers one whole step window, so a window
    with a newline in every step proves there is none. A 256 KiB block costs 8 find() calls.
    """
    first = data.find(b"\n", 0, end + 1)
    if len(partial) + first > max_line:
        return False
    step = (max_line + 2) // 2
    # A window past end - step cannot lie inside a run that ends at or before the newline at `end`.
    return all(data.find(b"\n", pos, pos + step) >= 0 for pos in range(first + 1, end - step + 1, step))
