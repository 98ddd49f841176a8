"""One output sink: a Stream driven by its own writer thread behind a queue; the loop never waits on it.

The queue itself is unbounded, but every byte in it is charged to the reader (one worker's pipe) that
put it there, and readers stop reading or drop past their own bound: the bound lives per process.
The writer hands back what it wrote as credits in a deque the loop collects (settle()) when it next looks
at the bounds; it wakes the loop for them only when the loop asked (`wanted`: a reader waits on a bound).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from circus_linux.streams import Chunk, Stream

log = logging.getLogger("circus_linux.streams")

# Most items one write() call gets: big enough to amortise the syscall, small enough to report progress.
BATCH = 256
# A batch goes to the writer as soon as it holds this much, not only at the end of the loop iteration.
# The writer's copy into the page cache is most of what logging costs, and it is cheap only while the
# bytes the loop just read are still in the CPU's caches: handed over at the end of an iteration in which
# 50 pipes were read (MBs), they had gone cold, and perf put 58 % of circusd's CPU in that one copy
# (50 Python flooders: 2.6 -> 1.1 ms/MB, 320 -> 1020 MB/s when the batch was capped at 256 KiB). Half a MiB
# still fits the 1 MiB L2 of the project's VM, and halves the writer's wake-ups against 256 KiB: 2026-11-28,
# the writer thread's CPU per MB fell from 0.42 to 0.31 (175 coreutils flooders, medians of 5 runs).
PUSH_BYTES = 512 * 1024
_CLOSE = object()


class Sink:
    """Feeds `stream` from a thread. submit()/flush()/close() are called from the event loop only."""

    def __init__(
        self,
        stream: Stream,
        name: str,
        loop: asyncio.AbstractEventLoop,
        on_written: Callable[[Sink, dict[Any, int]], None],
    ) -> None:
        self.stream = stream
        self.name = name
        self._loop = loop
        self._on_written = on_written
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.queued = 0  # bytes submitted and not written yet (kept by the loop: submit and the credits)
        self.written_bytes = 0  # bytes, not lines: counting lines would cost more than writing them
        self.lost_lines = 0  # lines whose write failed (counted then: failures are rare)
        self._last_error = 0.0
        self.closed = False
        self._batch: list[tuple[Chunk, Any, int]] = []  # submitted in this loop iteration, not queued yet
        self._batch_bytes = 0
        # Written and not yet subtracted: appended by the writer, popped by the loop (deque: thread-safe).
        self._credits: collections.deque[dict[Any, int]] = collections.deque()
        # Set by the loop when something waits for credit (a paused reader): the writer then wakes the loop
        # for its next credit. Otherwise credits wait for the next settle(), and a flood costs no wake-up
        # of the loop per batch written.
        self.wanted = False
        self.thread = threading.Thread(target=self._run, name=f"stream:{name}", daemon=True)
        self.thread.start()

    def submit(self, chunk: Chunk, owner: Any, nbytes: int) -> None:
        self.queued += nbytes
        # Chunks of one loop iteration (every pipe that was ready) go to the writer as one item: one
        # wake-up of the writer thread per iteration instead of one per read; or sooner, at PUSH_BYTES.
        if not self._batch:
            self._loop.call_soon(self._push)
        self._batch.append((chunk, owner, nbytes))
        self._batch_bytes += nbytes
        if self._batch_bytes >= PUSH_BYTES:
            self._push()

    def _push(self) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []
            self._batch_bytes = 0

    def flush(self) -> asyncio.Future[None]:
        """A future done once everything submitted before this call has been written."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._push()
        self._queue.put(fut)
        return fut

    def close(self) -> None:
        """Write what is queued, then close the stream and end the thread."""
        if not self.closed:
            self.closed = True
            self._push()
            self._queue.put(_CLOSE)

    async def wait_closed(self, timeout: float) -> bool:
        await asyncio.to_thread(self.thread.join, timeout)
        return not self.thread.is_alive()

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._handle(items):
                return

    def _handle(self, items: list[Any]) -> bool:
        chunks: list[Chunk] = []
        charged: dict[Any, int] = {}
        for item in items:
            if isinstance(item, list):
                for chunk, owner, nbytes in item:
                    chunks.append(chunk)
                    charged[owner] = charged.get(owner, 0) + nbytes
                continue
            # A flush or close marker: everything queued before it must be written first, and credited
            # (a settle() after the flush sees every byte written before it).
            self._write(chunks)
            self._settle(charged)
            chunks, charged = [], {}
            if item is _CLOSE:
                self._close_stream()
                return False
            self._call(_resolve, item)
        self._write(chunks)
        self._settle(charged)
        return True

    def _settle(self, charged: dict[Any, int]) -> None:
        if charged:
            self._credits.append(charged)
            # A closed sink (replaced by a live `set` of the stream) is no longer settled by the reads of
            # its pipes: its credits must reach the loop by themselves, or its readers' queued bytes stay
            # counted for good (and a pipe paused on them never resumes).
            if self.wanted or self.closed:
                self.wanted = False
                self._call(_settle_sink, self)

    def settle(self) -> None:
        """In the loop: what the writer wrote (or lost) no longer counts as queued; on_written per credit.

        on_written may set `wanted` again (a reader still waits): a credit the writer appends after that
        wakes the loop, one appended before it is still popped by this loop.
        """
        while self._credits:
            charged = self._credits.popleft()
            self.queued -= sum(charged.values())
            self._on_written(self, charged)

    def _call(self, fn: Callable[..., Any], arg: Any) -> None:
        # RuntimeError: the loop is closed, circusd is exiting and nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, arg)

    def _write(self, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        try:
            self.stream.write(chunks)
        except Exception as exc:  # user stream classes can raise anything; a sink must outlive a bad line
            self.lost_lines += sum(c.count() for c in chunks)
            now = time.monotonic()
            if now - self._last_error > 5.0:
                self._last_error = now
                log.error("stream %s: write failed, %d lines lost: %s", self.name, self.lost_lines, exc)
            return
        self.written_bytes += sum(c.nbytes() for c in chunks)

    def _close_stream(self) -> None:
        try:
            self.stream.close()
        except Exception as exc:  # same reason as in _write
            log.error("stream %s: close failed: %s", self.name, exc)


def _settle_sink(sink: Sink) -> None:
    sink.settle()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
