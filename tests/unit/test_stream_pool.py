"""The shared read pool (every pipe in one private epoll, rests on one timer) and the sink's lazy credits."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from circus_linux.runtime.stream_reader import PipeReader, ReadPool, make_pipe
from circus_linux.runtime.stream_sink import Sink
from circus_linux.streams import Chunk, Stream


async def _until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def test_one_pool_reads_many_pipes_whole_lines_in_order_and_pauses() -> None:
    async def main() -> None:
        pool = ReadPool(asyncio.get_running_loop(), rest=0.002)
        got: dict[int, list[bytes]] = {}
        done: list[int] = []
        pipes = [make_pipe() for _ in range(20)]
        readers = []
        for i, (r, _w) in enumerate(pipes):
            reader = PipeReader(
                r, "w", "stdout", 1000 + i, i, 64,
                lambda rd, block: got.setdefault(rd.wid, []).append(block),
                lambda rd: done.append(rd.wid),
                pool=pool,
            )  # fmt: skip
            reader.start()
            readers.append(reader)
        assert all(r in pool for r in readers)
        # Lines written in pieces that cut them anywhere: each pipe's lines come out whole and in order.
        expected = {i: b"".join(b"%d-%d\n" % (i, n) for n in range(300)) for i in range(len(pipes))}
        for start in range(0, max(map(len, expected.values())), 7):
            for i, (_r, w) in enumerate(pipes):
                piece = expected[i][start : start + 7]
                if piece:
                    os.write(w, piece)
            await asyncio.sleep(0)
        await _until(lambda: all(b"".join(got.get(i, [])) == expected[i] for i in expected), "every line")
        # Quiet again: the pool stops resting and the loop watches its epoll.
        await _until(lambda: not pool.resting, "the pool back to waiting")
        # Paused: out of the pool (the pipe fills, its writer blocks); resumed: read again.
        readers[0].pause()
        assert readers[0] not in pool
        os.write(pipes[0][1], b"late\n")
        readers[0].resume()
        await _until(lambda: got[0][-1].endswith(b"late\n"), "the line written while paused")
        for _r, w in pipes:
            os.close(w)
        await _until(lambda: len(done) == len(pipes), "EOF on every pipe")
        # No pipe left: the pool closed its epoll and cancelled its timers.
        assert all(r.fd is None for r in readers) and not pool.resting and not pool.hot
        assert pool._ep is None

    asyncio.run(main())


class _Recorder(Stream):
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, chunks: Sequence[Chunk]) -> None:
        self.data.extend(c.payload() for c in chunks)


def test_sink_credits_wake_the_loop_only_when_wanted() -> None:
    async def main() -> None:
        credits: list[dict[Any, int]] = []
        stream = _Recorder()
        sink = Sink(stream, "t", asyncio.get_running_loop(), lambda _s, charged: credits.append(charged))
        owner = object()
        sink.submit(Chunk("w", "stdout", 1, 1, 0.0, block=b"a\n"), owner, 2)
        await sink.flush()
        # Written, but nobody waits on the bound: the credit waits for the loop to collect it.
        assert stream.data == [b"a\n"] and sink.queued == 2 and credits == []
        sink.settle()
        assert sink.queued == 0 and credits == [{owner: 2}]
        # Something waits: the writer wakes the loop for the next credit by itself.
        sink.wanted = True
        sink.submit(Chunk("w", "stdout", 1, 1, 0.0, block=b"bc\n"), owner, 3)
        await _until(lambda: len(credits) == 2, "the credit a waiter asked for")
        assert sink.queued == 0 and not sink.wanted
        sink.close()
        assert await sink.wait_closed(5.0)

    asyncio.run(main())


class _Gated(Stream):
    """Blocks every write until `gate` is set: a sink slower than the worker."""

    def __init__(self) -> None:
        import threading

        self.gate = threading.Event()
        self.data: list[bytes] = []

    def write(self, chunks: Sequence[Chunk]) -> None:
        self.gate.wait(10.0)
        self.data.extend(c.payload() for c in chunks)


def test_a_slow_sink_pauses_the_pipe_at_its_bound_and_its_credit_resumes_it(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from circus_linux.config import StreamConfig
    from circus_linux.runtime.streams import BUFFER_SIZE, StreamHub

    async def main() -> None:
        hub = StreamHub(lambda _topic, _payload: None)
        cfg = SimpleNamespace(
            name="w", stdout_stream=StreamConfig("FileStream", {"filename": str(tmp_path / "out")}),
            stderr_stream=None, close_child_stdout=False, close_child_stderr=False,
        )  # fmt: skip
        cap = hub.prepare(cfg, 1)
        assert cap is not None
        sink = hub.outputs["w"].channels["stdout"].sink
        assert sink is not None
        gated = sink.stream = _Gated()
        w = os.dup(cap.stdio[1])
        cap.attach(4242, 1)
        (reader,) = hub.outputs["w"].readers
        os.set_blocking(w, False)
        sent = bytearray()
        n = 0
        # Write until the pipe is full: the reader must have stopped at its 1 MiB bound. Pieces under
        # PIPE_BUF (4096) are written whole or not at all, so every line written is whole.
        deadline = time.monotonic() + 10
        while True:
            piece = b"".join(b"line %08d %s\n" % (n + i, b"y" * 80) for i in range(40))
            try:
                os.write(w, piece)
            except BlockingIOError:
                if reader.paused:
                    break
                assert time.monotonic() < deadline, "the reader never paused"
                await asyncio.sleep(0.005)
                continue
            sent += piece
            n += 40
            await asyncio.sleep(0)
        assert reader.queued >= BUFFER_SIZE and hub.stats("w")["paused"] == 1
        gated.gate.set()  # the writer catches up: its credit must wake the loop and resume the pipe
        await _until(lambda: not reader.paused, "the pipe resumed by the writer's credit")
        os.close(w)
        hub.process_exited("w", 4242)
        assert await hub.drain("w", timeout=10)
        assert b"".join(gated.data) == bytes(sent)
        await hub.close()

    asyncio.run(main())


async def _feed(w: int, data: bytes) -> None:
    """Write all of `data` to the non-blocking pipe `w`, yielding while it is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(w, view[:4000]) :]  # under PIPE_BUF: whole lines or nothing
        except BlockingIOError:
            await asyncio.sleep(0.002)


def test_a_sink_over_its_bound_holds_every_pipe_of_its_output_and_no_other(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from circus_linux.config import StreamConfig
    from circus_linux.runtime.streams import SINK_BOUND, StreamHub

    def watcher(name: str) -> Any:
        return SimpleNamespace(
            name=name, stdout_stream=StreamConfig("FileStream", {"filename": str(tmp_path / name)}),
            stderr_stream=None, close_child_stdout=False, close_child_stderr=False,
        )  # fmt: skip

    async def main() -> None:
        hub = StreamHub(lambda _topic, _payload: None)
        writers: dict[str, list[int]] = {"a": [], "b": []}
        for name, count in (("a", 3), ("b", 1)):
            for wid in range(1, count + 1):
                cap = hub.prepare(watcher(name), wid)
                assert cap is not None
                w = os.dup(cap.stdio[1])
                os.set_blocking(w, False)
                writers[name].append(w)
                cap.attach(1000 * len(name) + wid, wid)
        sink_a = hub.outputs["a"].channels["stdout"].sink
        sink_b = hub.outputs["b"].channels["stdout"].sink
        assert sink_a is not None and sink_b is not None
        gated = sink_a.stream = _Gated()
        recorder = sink_b.stream = _Recorder()
        # Three workers of `a`, 1.2 MB each: more than the sink's 2 MiB bound and the three pipes hold
        # together, so the writers block.
        sent = {w: b"".join(b"a%d %06d %s\n" % (w, n, b"x" * 84) for n in range(12000)) for w in writers["a"]}
        feeds = [asyncio.ensure_future(_feed(w, data)) for w, data in sent.items()]
        await _until(lambda: hub.stats("a")["held"] == ["stdout"], "the valve of a's stdout shut", 10)
        assert hub.stats("a")["queued_bytes"] >= SINK_BOUND
        # While a's sink is stuck, b's pipe is still read and written.
        await _feed(writers["b"][0], b"b line\n" * 100)
        await _until(lambda: b"".join(recorder.data) == b"b line\n" * 100, "b's lines while a is held")
        # Held means unread: a's pipes stay full and their writers blocked.
        assert hub.stats("a")["held"] == ["stdout"] and not all(f.done() for f in feeds)
        gated.gate.set()  # the writer catches up: the valve opens and every line of `a` arrives, whole
        await asyncio.wait_for(asyncio.gather(*feeds), 20)
        for w in writers["a"] + writers["b"]:
            os.close(w)
        for name in ("a", "b"):
            for pid in list(hub.outputs[name].by_pid):
                hub.process_exited(name, pid)
            assert await hub.drain(name, timeout=10)
        assert hub.stats("a")["held"] == []
        lines = b"".join(gated.data).splitlines(keepends=True)
        for w, data in sent.items():
            assert b"".join(x for x in lines if x.startswith(b"a%d " % w)) == data
        await hub.close()

    asyncio.run(main())


def test_malloc_is_tuned_for_whole_pipe_reads() -> None:
    from circus_linux.kernel import native
    from circus_linux.runtime.stream_reader import MALLOC_MMAP_THRESHOLD, READ_SIZE

    assert READ_SIZE < MALLOC_MMAP_THRESHOLD  # a whole-pipe read is served from the heap
    # glibc (Debian's libc) takes the values; anything else says it did nothing.
    glibc = os.confstr("CS_GNU_LIBC_VERSION") is not None
    assert native.tune_malloc(MALLOC_MMAP_THRESHOLD, 4 * MALLOC_MMAP_THRESHOLD) is glibc
