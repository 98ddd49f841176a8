"""The block capture path: cutting at the last newline, the line bound proof, the logs ring, writev."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from circus_linux.runtime.stream_lines import (
    CONTINUED,
    MAX_LINE,
    LineSplitter,
    fits,
    join_lines,
    split_block,
)
from circus_linux.runtime.stream_ring import LineRing, count_newlines
from circus_linux.streams import Chunk
from circus_linux.streams.fdio import IOV_MAX, write_all


def test_a_block_is_cut_at_the_last_newline_and_the_partial_carried_over() -> None:
    s = LineSplitter()
    assert s.feed_block(b"a\nb") == b"a\n" and s.partial == b"b"
    assert s.feed_block(b"c\n\nd") == b"bc\n\n" and s.partial == b"d"
    assert s.feed_block(b"e") == b"" and s.partial == b"de"
    assert s.finish_block() == b"de\n" and s.finish_block() == b""


def test_a_block_of_whole_lines_is_handed_on_without_a_copy() -> None:
    data = b"x" * 99 + b"\n"
    data *= 2000
    assert LineSplitter().feed_block(data) is data


def test_the_64k_bound_holds_in_block_form() -> None:
    s = LineSplitter()
    long_line = b"y" * (3 * MAX_LINE) + b"\n"
    block = s.feed_block(b"short\n" + long_line + b"tail")
    lines = split_block(block)
    assert lines[0] == b"short" and all(len(line) <= MAX_LINE for line in lines)
    assert all(p.endswith(CONTINUED) for p in lines[1:-1]) and not lines[-1].endswith(CONTINUED)
    assert b"".join(p.removesuffix(CONTINUED) for p in lines[1:]) == b"y" * (3 * MAX_LINE)
    assert s.split == 1 and s.partial == b"tail"
    # a partial line never grows past the bound either, and is counted once
    for _ in range(5):
        s.feed_block(b"z" * 40_000)
        assert len(s.partial) <= MAX_LINE
    assert s.split == 2


def test_block_and_line_forms_give_the_same_bytes_and_counts() -> None:
    rnd = random.Random(7)
    for max_line in (7, 8, 16, 33, 64):
        a, b = LineSplitter(max_line), LineSplitter(max_line)
        lines: list[bytes] = []
        blocks: list[bytes] = []
        for _ in range(300):
            density = rnd.choice((0.0, 0.02, 0.1, 0.5))
            data = bytes(10 if rnd.random() < density else 120 for _ in range(rnd.randint(0, 300)))
            lines += a.feed(data)
            blocks.append(b.feed_block(data))
            assert a.partial == b.partial
        lines += a.finish()
        blocks.append(b.finish_block())
        assert join_lines(lines) == b"".join(blocks) and a.split == b.split


def test_fits_never_passes_a_block_with_a_long_line() -> None:
    rnd = random.Random(11)
    proved = 0
    for _ in range(5000):
        max_line = rnd.choice((7, 8, 9, 16, 33))
        partial = b"p" * rnd.randint(0, max_line)
        density = rnd.choice((0.03, 0.1, 0.3))
        data = bytearray(10 if rnd.random() < density else 120 for _ in range(200))
        data[-1] = 10
        end = len(data) - 1
        longest = max(len(line) for line in (partial + bytes(data[:end])).split(b"\n"))
        ok = fits(partial, bytes(data), end, max_line)
        assert not (ok and longest > max_line)
        proved += ok
    assert proved > 200  # it does prove many (the 64 KiB case: the no-copy test above)


def test_a_chunk_made_of_a_block_gives_its_lines_and_the_other_way() -> None:
    block = Chunk("w", "stdout", 1, 1, 0.0, block=b"a\n\nb\n")
    assert list(block.lines) == [b"a", b"", b"b"] and block.nbytes() == 5 and block.count() == 3
    lines = Chunk("w", "stdout", 1, 1, 0.0, [b"a", b"", b"b"])
    assert lines.payload() == b"a\n\nb\n" and lines.nbytes() == 5


def test_the_ring_answers_for_the_last_lines_only_and_filters_by_wid() -> None:
    ring = LineRing(size=10, budget=64)
    for i in range(30):
        ring.add(float(i), 100 + i % 2, 1 + i % 2, "stdout", b"%d a\n%d b\n" % (i, i), seq=i + 1)
    got = ring.last(100)
    expected = [b"%d %s" % (i, x) for i in range(25, 30) for x in (b"a", b"b")]
    assert [line for *_, line, _seq in got] == expected
    assert {(w, pid) for _t, pid, w, _k, _l, _s in got} == {(1, 100), (2, 101)}
    # Each line is numbered (its block's seq, its index in the block): what `logs -f` orders and dedupes by.
    assert [seq for *_, seq in got] == [(i + 1, j) for i in range(25, 30) for j in (0, 1)]
    assert [line for *_, line, _seq in ring.last(3, wid=1)] == [b"26 b", b"28 a", b"28 b"]
    assert ring.last(0) == []
    # The ring's line budget may cut into its oldest block: the indexes stay those of the block's lines.
    cut = LineRing(size=3, budget=1 << 20)
    cut.add(0.0, 1, 1, "stdout", b"a\nb\nc\n", seq=7)
    cut.add(0.0, 1, 1, "stdout", b"d\n", seq=8)
    assert [(line, seq) for *_, line, seq in cut.last(10)] == [(b"b", (7, 1)), (b"c", (7, 2)), (b"d", (8, 0))]


def test_the_ring_keeps_at_most_max_bytes_whatever_its_line_count() -> None:
    ring = LineRing(size=1000, budget=64 * 1024, max_bytes=256 * 1024)
    long = b"x" * 60_000 + b"\n"
    for i in range(200):
        ring.add(0.0, 1, 1, "stdout", long, seq=i + 1)
        assert sum(len(e.block) for e in ring._blocks) <= 2 * 256 * 1024 + len(long)
    got = ring.last(1000)
    assert 4 <= len(got) < 10 and got[-1][-1] == (200, 0)  # the newest lines, fewer than asked
    huge = LineRing(size=10, budget=1024, max_bytes=1024)
    for i in range(3):
        huge.add(0.0, 1, 1, "stdout", b"y" * 5000 + b"\n", seq=i + 1)
    assert [seq for *_, seq in huge.last(10)] == [(3, 0)]  # pruned: the newest block stays, alone


def test_the_ring_forgets_old_blocks_but_keeps_enough_lines() -> None:
    ring = LineRing(size=100, budget=1000)
    for i in range(1000):
        ring.add(0.0, 1, 1, "stdout", b"line %d\n" % i)
        assert len(ring.last(100)) == min(i + 1, 100)
    assert sum(len(e.block) for e in ring._blocks) < 3000  # bounded, not 1000 blocks
    assert count_newlines(b"a\n" * 100_000, 10) >= 10


def test_write_all_writes_more_buffers_than_iov_max_through_short_writes() -> None:
    r, w = os.pipe()  # a pipe: writev returns short counts once it is full
    buffers = [bytes([65 + i % 26]) * (1 + i % 7) for i in range(IOV_MAX * 2 + 5)] + [b"z" * 300_000]
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert write_all(w, buffers) == sum(len(b) for b in buffers)
    finally:
        os.close(w)
        reader.join(10)
        os.close(r)
    assert bytes(got) == b"".join(buffers)


def test_write_all_cuts_calls_after_a_newline_and_at_most_max_write_bytes(
    tmp_path: Path, write_calls: list[bytes]
) -> None:
    # What each write(2)/writev(2) carried: every call ends at a newline, and only a call holding one line
    # longer than max_write is longer than max_write. The file gets every byte, in order.
    rng = random.Random(7)
    for trial in range(200):
        max_write = rng.choice([16, 1000, 32 * 1024])
        buffers = [
            b"\n".join(b"x" * rng.choice([0, 5, 99, 1000, 40_000, 70_000]) for _ in range(rng.randint(1, 30)))
            + b"\n"
            for _ in range(rng.randint(0, 12))
        ]
        path = tmp_path / f"out{trial}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        write_calls.clear()
        try:
            assert write_all(fd, buffers, max_write) == sum(len(b) for b in buffers)
        finally:
            os.close(fd)
        assert path.read_bytes() == b"".join(buffers)
        for call in write_calls:
            assert call.endswith(b"\n")
            assert len(call) <= max_write or call.count(b"\n") == 1
