"""Reads workers' stdout/stderr pipes (non-blocking, one shared epoll) into line blocks; no sinks.

The reader owns the pipe's read end: it reads until EOF (every writer closed, the worker and whatever
inherited the pipe), or until a drain deadline set after the worker exited, so a grandchild that keeps the
pipe open cannot hold a stop or a shutdown forever.

Every pipe of a loop sits in one private epoll (the ReadPool's) for its whole life; the event loop watches
only that epoll's fd. A round reads the pipes that are ready (one epoll_wait, no read that finds nothing),
then the whole pool rests REST seconds (one timer, the loop does not watch meanwhile); a pipe that gave a
lot is read again in the next loop iteration (hot). Registering with asyncio costs ~10 us of Python per
add_reader/remove_reader: per pipe and wake-up, that was the main cost of hundreds of small flooders.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
from collections.abc import Callable

from circus_linux.runtime.stream_lines import LineSplitter

log = logging.getLogger("circus_linux.streams")

# A few reads per wake-up, then back to the loop: one flooding worker must not starve the others.
READS_PER_WAKE = 4
# F_SETPIPE_SZ (fcntl(2)); a bigger pipe means fewer wake-ups per MB. Python 3.11 has no constant for it.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 256 * 1024
# A read takes the whole pipe: it then ends where the worker's write() ended, so a block of whole lines
# needs no slice and no join. os.read() allocates READ_SIZE and shrinks the bytes to what came; above glibc's
# mmap threshold (128 KiB, then moving with what was freed) that is an mmap, page faults, an mremap and an
# munmap per read, and whether a run paid them depended on the sizes of its first reads (2026-11-27: the
# same code at 355 or 700 MB/s). So circusd fixes the threshold above READ_SIZE (Arbiter.setup, through
# native.tune_malloc), and the trim threshold above what SINK_BOUND keeps queued, so the heap is not given
# back and faulted in again at every bound crossed. 2026-11-28, bench/compare.py python flooders, 128 MB:
# see bench/README.md.
READ_SIZE = PIPE_SIZE
MALLOC_MMAP_THRESHOLD = 1024 * 1024
MALLOC_TRIM_THRESHOLD = 4 * 1024 * 1024
# After a round that read anything, the pool rests REST seconds before the next one: a worker writing small
# pieces (coreutils write 8 KiB at a time) then costs one read per REST instead of one per write, and
# hundreds of them one round. A pipe that gave REST_BELOW bytes or more (its writer is fast and may fill
# it) is read again in the next loop iteration (hot).
REST_BELOW = 64 * 1024
REST = 0.005
# Only pipes behind a shut valve were ready: their release() wakes the pool; until then it looks at the
# other pipes this often (a sink stuck on a hung disk must not hold up another watcher's output).
HELD_REST = 0.05
# At the drain deadline, how many reads we still do before closing (a writer may never stop).
FINAL_READS = 64


def make_pipe() -> tuple[int, int]:
    """(read end, write end), both CLOEXEC; the spawner dup2()s the write end onto fd 1/2 of the worker."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # EPERM past the user's pipe quota: the default size still works
        fcntl.fcntl(r, F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(r, False)
    return r, w


class Valve:
    """Shared by the pipes feeding one output: while `shut`, the pool leaves them unread (in its epoll, full).

    One flag for every pipe of a sink over its bound: shutting and opening it costs O(1), where pausing each
    pipe (an epoll_ctl each way) cost O(N) per bound crossed, and reading one more block from each of N
    ready pipes before pausing it queued N blocks past the bound (500 flooders: 128 MB, out of every cache).
    """

    __slots__ = ("shut",)

    def __init__(self) -> None:
        self.shut = False


class ReadPool:
    """The pipes of one event loop, in one private epoll: read by rounds, with one timer for the rests."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rest: float = REST) -> None:
        self._loop = loop
        self.rest = rest
        self._ep: select.epoll | None = None  # open while it holds a pipe
        self._by_fd: dict[int, PipeReader] = {}
        self.hot: dict[PipeReader, None] = {}  # insertion-ordered set: read in the next loop iteration
        self._watching = False  # the loop watches our epoll fd
        self._timer: asyncio.TimerHandle | None = None  # resting: the next round
        self._soon: asyncio.Handle | None = None
        self._held = False  # the last round skipped pipes behind a shut valve: release() reads them

    def __contains__(self, reader: object) -> bool:
        fd = getattr(reader, "fd", None)
        return fd is not None and self._by_fd.get(fd) is reader

    @property
    def resting(self) -> bool:
        return self._timer is not None

    def register(self, reader: PipeReader) -> None:
        assert reader.fd is not None
        if self._ep is None:
            self._ep = select.epoll()
        self._ep.register(reader.fd, select.EPOLLIN)
        self._by_fd[reader.fd] = reader
        if self._timer is None:  # while resting, the next round sees the new pipe
            self._watch()

    def unregister(self, reader: PipeReader) -> None:
        """Out of the pool (pause, finish): before its fd is closed."""
        if reader.fd is not None and self._by_fd.get(reader.fd) is reader:
            del self._by_fd[reader.fd]
            assert self._ep is not None
            self._ep.unregister(reader.fd)
        self.hot.pop(reader, None)
        if not self._by_fd:
            self.close()

    def _watch(self) -> None:
        if not self._watching and self._ep is not None:
            self._watching = True
            self._loop.add_reader(self._ep.fileno(), self._round)

    def _unwatch(self) -> None:
        if self._watching and self._ep is not None:
            self._watching = False
            self._loop.remove_reader(self._ep.fileno())

    def _tick(self) -> None:
        self._timer = None
        self._round()

    def _round(self) -> None:
        """Read every ready pipe once (none behind a shut valve); rest if any had data or was held, else
        let the loop watch for the next data."""
        if self._ep is None:
            return
        got_any = held = False
        for fd, _events in self._ep.poll(0):
            reader = self._by_fd.get(fd)
            if reader is None:  # paused or finished by an earlier pipe's delivery
                continue
            if reader.valve.shut:
                held = True
                continue
            got = reader.read_some()
            got_any = got_any or got > 0
            if got >= REST_BELOW and self._by_fd.get(fd) is reader:
                self._heat(reader)
        if self._ep is None:
            return  # the last pipe ended
        self._held = held
        if got_any or held:
            # Held pipes keep the epoll readable: watching it would spin. release() ends the rest early;
            # the timer is for the pipes of other sinks meanwhile.
            self._unwatch()
            if self._timer is None:
                self._timer = self._loop.call_later(self.rest if got_any else HELD_REST, self._tick)
        else:
            self._watch()

    def release(self) -> None:
        """A valve opened: read its pipes in the next loop iteration, not at the end of a rest."""
        if self._held:
            self._held = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._watch()

    def _heat(self, reader: PipeReader) -> None:
        self.hot[reader] = None
        if self._soon is None:
            self._soon = self._loop.call_soon(self._run_hot)

    def _run_hot(self) -> None:
        self._soon = None
        batch, self.hot = self.hot, {}
        for reader in batch:
            fd = reader.fd
            if fd is None or self._by_fd.get(fd) is not reader or reader.valve.shut:
                continue
            if reader.read_some() >= REST_BELOW and self._by_fd.get(fd) is reader:
                self._heat(reader)

    def close(self) -> None:
        """No pipes left (or the loop is gone): close the epoll, cancel the timers."""
        if self._ep is not None and not self._loop.is_closed():
            self._unwatch()
        for handle in (self._timer, self._soon):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon = None
        self._watching = self._held = False
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        self._by_fd.clear()
        self.hot.clear()


_POOLS: dict[asyncio.AbstractEventLoop, ReadPool] = {}


def loop_pool(loop: asyncio.AbstractEventLoop) -> ReadPool:
    """The ReadPool of `loop` (one per loop: one epoll and one timer for every pipe)."""
    pool = _POOLS.get(loop)
    if pool is None:
        for old in [lp for lp in _POOLS if lp.is_closed()]:
            _POOLS.pop(old).close()  # test suites run many loops: forget the closed ones
        pool = _POOLS[loop] = ReadPool(loop)
    return pool


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
        pool: ReadPool | None = None,
        valve: Valve | None = None,
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
        self._pool = pool if pool is not None else loop_pool(self._loop)
        self.valve = valve if valve is not None else Valve()
        self._deadline: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._pool.register(self)

    def pause(self) -> None:
        """Backpressure: stop reading; the pipe fills and the worker blocks in write()."""
        if not self.paused and self.fd is not None:
            self.paused = True
            self._pool.unregister(self)

    def resume(self) -> None:
        if self.paused and self.fd is not None:
            self.paused = False
            self._pool.register(self)

    def read_some(self) -> int:
        """Up to READS_PER_WAKE reads; how many bytes they got (0: nothing now or the pipe ended)."""
        got = 0
        for _ in range(READS_PER_WAKE):
            n = self._read_once()
            got += n
            if n < READ_SIZE or self.paused:
                break
        return got

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
        self._pool.unregister(self)
        self.paused = True  # no delivery below may register it again
        for _ in range(FINAL_READS):
            if self._read_once() < READ_SIZE:
                break
        self.finish()

    def finish(self) -> None:
        """Flush the unterminated last line, stop watching and close the read end; idempotent."""
        if self.fd is None:
            return
        self._pool.unregister(self)
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
