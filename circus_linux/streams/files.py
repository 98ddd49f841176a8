"""FileStream, WatchedFileStream and TimedRotatingFileStream: append worker lines to a file, rotating it.

Runs only in a sink's writer thread (plain blocking file I/O: regular files never return EAGAIN, so a
thread is the only way to keep a slow disk away from the event loop). Must not touch the event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from circus_linux.streams.base import Chunk, Stream, opt_bool, opt_int, prefixed, time_prefix
from circus_linux.streams.fdio import write_all
from circus_linux.streams.writesize import WriteSizer

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


class FileStream(Stream):
    """Append to `filename`; with max_bytes and backup_count, rotate to filename.1 .. filename.N.

    As Python's RotatingFileHandler: no rotation while backup_count is 0 (the file just grows). A file never
    exceeds max_bytes unless a single line is longer than max_bytes.
    """

    def __init__(
        self,
        filename: str,
        max_bytes: int = 0,
        backup_count: int = 0,
        time_format: str | None = None,
        **_ignored: Any,
    ) -> None:
        self.filename = os.path.abspath(str(filename))
        self.max_bytes = int(max_bytes)
        self.backup_count = int(backup_count)
        self.time_format = time_format or None
        self._fd: int | None = None
        self._size = 0
        self.sizer = WriteSizer()

    # ---------------------------------------------------------------- file handling
    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.filename, _OPEN_FLAGS, 0o644)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write_all(self, data: bytes) -> None:
        self._write_many([data])

    def _write_many(self, buffers: Sequence[bytes]) -> None:
        fd = self._open()
        limit = self.sizer.limit()
        cpu0 = time.thread_time_ns()
        try:
            written = write_all(fd, buffers, limit)
        except OSError:
            self._cut_partial_line(fd)
            raise
        self.sizer.observe(written, time.thread_time_ns() - cpu0, limit)
        self._size += written

    def _cut_partial_line(self, fd: int) -> None:
        """After a write that failed part-way (ENOSPC): keep the whole lines it wrote, cut the start of a
        line it left at the end of the file, which the next write would glue to another line."""
        with contextlib.suppress(OSError):
            end = os.fstat(fd).st_size
            if end <= self._size:
                return
            # Our fd is write-only (O_APPEND): the same open file is read through /proc, even if moved.
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                tail = os.pread(rfd, end - self._size, self._size)
            finally:
                os.close(rfd)
            keep = tail.rfind(b"\n") + 1
            if keep < len(tail):
                os.ftruncate(fd, self._size + keep)
            self._size += keep

    def _rotate(self) -> None:
        self._close_fd()
        for i in range(self.backup_count - 1, 0, -1):
            src, dst = f"{self.filename}.{i}", f"{self.filename}.{i + 1}"
            if os.path.exists(src):
                os.replace(src, dst)
        if os.path.exists(self.filename):
            os.replace(self.filename, f"{self.filename}.1")

    def before_write(self) -> None:
        """Hook for subclasses: runs before each batch (reopen, timed rotation)."""

    # ---------------------------------------------------------------- Stream
    def write(self, chunks: Sequence[Chunk]) -> None:
        self.before_write()
        self._open()
        rotating = bool(self.max_bytes and self.backup_count)
        # Whole chunks go out together in one writev; a chunk is only taken apart when it would push the
        # file past max_bytes (rotation between two lines) or when a time_format prefixes each line.
        batch: list[bytes] = []
        size = 0
        for chunk in chunks:
            prefix = time_prefix(chunk, self.time_format)
            data = prefixed(chunk, prefix)
            if not rotating or self._size + size + len(data) <= self.max_bytes:
                batch.append(data)
                size += len(data)
                continue
            if batch:
                self._write_many(batch)
                batch, size = [], 0
            # Does not fit: line by line, so every file stays under max_bytes (but for a longer line).
            pending: list[bytes] = []
            psize = 0
            for line in chunk.lines:
                entry = prefix + line + b"\n"
                if self._size + psize > 0 and self._size + psize + len(entry) > self.max_bytes:
                    if pending:
                        self._write_all(b"".join(pending))
                        pending, psize = [], 0
                    self._rotate()
                    self._open()
                pending.append(entry)
                psize += len(entry)
            if pending:
                self._write_all(b"".join(pending))
        if batch:
            self._write_many(batch)

    def close(self) -> None:
        self._close_fd()


class WatchedFileStream(FileStream):
    """A FileStream that notices an external logrotate (rename or unlink) and reopens `filename`."""

    def before_write(self) -> None:
        if self._fd is None:
            return
        try:
            st = os.stat(self.filename)
        except FileNotFoundError:
            self._close_fd()
            return
        own = os.fstat(self._fd)
        if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
            self._close_fd()


_UNITS = {"S": 1, "M": 60, "H": 3600, "D": 86400, "MIDNIGHT": 86400}
_SUFFIX = {"S": "%Y-%m-%d_%H-%M-%S", "M": "%Y-%m-%d_%H-%M", "H": "%Y-%m-%d_%H"}


class TimedRotatingFileStream(FileStream):
    """Rotate every rotate_interval x rotate_when (S, M, H, D, midnight, W0..W6), keeping backup_count files.

    Rotated files are named filename.<period start> (as Python's TimedRotatingFileHandler names them).
    """

    def __init__(
        self,
        filename: str,
        rotate_when: str = "H",
        rotate_interval: int = 1,
        backup_count: int = 0,
        utc: bool = False,
        time_format: str | None = None,
        **_ignored: Any,
    ) -> None:
        super().__init__(filename, 0, backup_count, time_format)
        self.when = str(rotate_when).upper()
        if not (self.when in _UNITS or re.fullmatch(r"W[0-6]", self.when)):
            raise ValueError(f"rotate_when: expected S, M, H, D, midnight or W0..W6, got {rotate_when!r}")
        self.interval = max(int(rotate_interval), 1)
        self.utc = bool(utc) if isinstance(utc, bool) else str(utc).lower() in ("1", "true", "yes", "on")
        self.suffix = _SUFFIX.get(self.when, "%Y-%m-%d")
        self.rollover_at = self.next_rollover(time.time())

    def _tm(self, t: float) -> time.struct_time:
        return time.gmtime(t) if self.utc else time.localtime(t)

    def next_rollover(self, now: float) -> float:
        """The first rotation instant after `now` (pure arithmetic, testable)."""
        if self.when in ("S", "M", "H", "D"):
            return now + self.interval * _UNITS[self.when]
        tm = self._tm(now)
        midnight = _midnight(tm, self.utc) + 86400
        if self.when == "MIDNIGHT":
            return midnight + (self.interval - 1) * 86400
        # W<d>: midnight at the start of the next day <d> (0 = Monday), as logging does.
        days_ahead = (int(self.when[1]) - tm.tm_wday - 1) % 7
        return midnight + days_ahead * 86400

    def before_write(self) -> None:
        now = time.time()
        if now < self.rollover_at:
            return
        start = self.rollover_at - (
            self.interval * _UNITS[self.when] if self.when in ("S", "M", "H", "D") else 86400 * self.interval
        )
        self._close_fd()
        if os.path.exists(self.filename) and os.path.getsize(self.filename) > 0:
            target = f"{self.filename}.{time.strftime(self.suffix, self._tm(start))}"
            os.replace(self.filename, target)
            self._prune()
        self.rollover_at = self.next_rollover(now)

    def _prune(self) -> None:
        if self.backup_count <= 0:
            return
        directory, base = os.path.split(self.filename)
        # Only this stream's own backups (base.<date as the suffix writes it>): another log sharing the
        # prefix (app.err next to app) or a file someone keeps there is never taken for one.
        dated = re.compile(re.escape(base + ".") + _suffix_pattern(self.suffix))
        olds = sorted(n for n in os.listdir(directory or ".") if dated.fullmatch(n))
        for name in olds[: max(len(olds) - self.backup_count, 0)]:
            os.unlink(os.path.join(directory, name))


def _suffix_pattern(suffix: str) -> str:
    """The regular expression of the names a strftime suffix made of %Y %m %d %H %M %S writes."""
    digits = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}", "%S": r"\d{2}"}
    return "".join(digits.get(part, re.escape(part)) for part in re.split(r"(%[YmdHMS])", suffix))


def _midnight(tm: time.struct_time, utc: bool) -> float:
    """Epoch of 00:00 on tm's day, in UTC or local time (DST decided by the C library, isdst=-1)."""
    day = (tm.tm_year, tm.tm_mon, tm.tm_mday, 0, 0, 0, 0, 0, -1)
    if utc:
        import calendar  # timed rotation in UTC only: neither it nor datetime is loaded by a plain circusd

        return float(calendar.timegm(day))
    return time.mktime(day)


def file_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Typed keyword arguments for the file classes from the ini options (already typed by config)."""
    out = dict(options)
    for key in ("max_bytes", "backup_count", "rotate_interval"):
        if key in out:
            out[key] = opt_int(out, key, 0)
    if "utc" in out:
        out["utc"] = opt_bool(out, "utc", False)
    return out
