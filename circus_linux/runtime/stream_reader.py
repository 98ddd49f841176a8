"""Reads one worker's stdout or stderr pipe with loop.add_reader (non-blocking) into line blocks; no sinks.

The reader owns the pipe's read end: it reads until EOF (every writer closed, the worker and whatever
inherited the pipe), or until a drain deadline set after the worker exited, so a grandchild that keeps the
pipe open cannot hold a stop or a shutdown forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable

from circus_linux.runtime.stream_lines import LineSplitter

log = logging.getLogger("circus_linux.streams")

# 64 KiB a read: what a pipe of the default size holds, and a buffer that is still in the CPU cache when the
# writer thread copies it into the file.
READ_SIZE = 64 * 1024
# A few reads per wake-up, then back to the loop: one flooding worker must not starve the others.
READS_PER_WAKE = 4
# F_SETPIPE_SZ (fcntl(2)); a bigger pipe means fewer wake-ups per MB. Python 3.11 has no constant for it.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 256 * 1024
# A wake-up that found less than REST_BELOW bytes rests the pipe REST seconds before the next one: a worker
# writing small pieces (coreutils write 8 KiB at a time) then costs one read per REST instead of one per
# write. A pipe that had a lot (its writer is fast and may fill it) is read again at once.
REST_BELOW = 64 * 1024
REST = 0.005
# At the drain deadline, how many reads we still do before closing (a writer may never stop).
FINAL_READS = 64


def make_pipe() -> tuple[int, int]:
    """(read end, write end), both CLOEXEC; the spawner dup2()s the write end onto fd 1/2 of the worker."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # EPERM past the user's pipe quota: the default size still works
        fcntl.fcntl(r, F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(r, False)
    return r, w


class PipeReader:
    """One pipe of one worker. `deliver(reader, block)` gets complete lines (one newline-terminated bytes,
    never empty, lines bounded by max_line); `done(reader)` at the end."""

    def __init__(
        self,
        fd: int,
        watcher: str,
        kind: str,
        pid: int,
        wid: int,
        max_line: int,
        deliver: Callable[[PipeReader, bytes], None],
        done: Callable[[PipeReader], None],
    ) -> None:
        self.fd: int | None = fd
        self.watcher = watcher
        self.kind = kind
        self.pid = pid
        self.wid = wid
        self.splitter = LineSplitter(max_line)
        self._deliver = deliver
        self._done = done
        self.queued = 0  # bytes handed to the sink and not written yet (charged to this pipe)
        self.paused = False
        self.exited = False  # the worker itself is gone
        self.dropped = 0
        self.finished = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        self._rest: asyncio.TimerHandle | None = None  # resting: not watched until the timer fires

    def start(self) -> None:
        assert self.fd is not None
        self._loop.add_reader(self.fd, self._on_readable)

    def pause(self) -> None:
        """Backpressure: stop reading; the pipe fills and the worker blocks in write()."""
        if not self.paused and self.fd is not None:
            self.paused = True
            if not self._stop_resting():
                self._loop.remove_reader(self.fd)

    def resume(self) -> None:
        if self.paused and self.fd is not None:
            self.paused = False
            self._loop.add_reader(self.fd, self._on_readable)

    def _stop_resting(self) -> bool:
        """Cancel a rest (the pipe is then not watched); False when it was not resting."""
        if self._rest is None:
            return False
        self._rest.cancel()
        self._rest = None
        return True

    def _wake(self) -> None:
        self._rest = None
        if self.fd is not None and not self.paused:
            self._loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        got = 0
        for _ in range(READS_PER_WAKE):
            n = self._read_once()
            got += n
            if n < READ_SIZE or self.paused:
                break
        if got < REST_BELOW and self.fd is not None and not self.paused:
            self._loop.remove_reader(self.fd)
            self._rest = self._loop.call_later(REST, self._wake)

    def _read_once(self) -> int:
        """One read; how many bytes it got (0: nothing for now, EAGAIN, or the pipe ended)."""
        if self.fd is None:
            return 0
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError as exc:
            log.error("watcher %s: reading %s of pid %d failed: %s", self.watcher, self.kind, self.pid, exc)
            self.finish()
            return 0
        if not data:
            self.finish()
            return 0
        block = self.splitter.feed_block(data)
        if block:
            self._deliver(self, block)
        return len(data)

    def worker_exited(self, drain_timeout: float) -> None:
        """The worker is gone: the pipe ends when its last writer goes, or at the deadline at the latest."""
        self.exited = True
        if self.fd is not None and self._deadline is None:
            self._deadline = self._loop.call_later(drain_timeout, self._drain_deadline)

    def _drain_deadline(self) -> None:
        if self.fd is None:
            return
        log.warning(
            "watcher %s: %s pipe of pid %d still open after the worker exited (a child holds it?): closing",
            self.watcher,
            self.kind,
            self.pid,
        )
        self.paused = False
        self._stop_resting()
        for _ in range(FINAL_READS):
            if self._read_once() < READ_SIZE:
                break
        self.finish()

    def finish(self) -> None:
        """Flush the unterminated last line, stop watching and close the read end; idempotent."""
        if self.fd is None:
            return
        if not self.paused and not self._stop_resting():
            self._loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = None
        self.paused = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        tail = self.splitter.finish_block()
        if tail:
            self._deliver(self, tail)
        self.finished.set()
        self._done(self)
