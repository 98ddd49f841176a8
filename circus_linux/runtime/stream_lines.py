"""Split a worker's byte stream into complete lines with a bound on line length; pure, no I/O."""

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
