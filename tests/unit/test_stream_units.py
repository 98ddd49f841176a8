"""Output streams without a daemon: line splitting, journald header and fields, file rotation, options."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from circus_linux.config import StreamConfig, loads
from circus_linux.runtime.stream_lines import CONTINUED, LineSplitter
from circus_linux.runtime.streams import apply_stream_options
from circus_linux.streams import Chunk, is_direct, make_stream
from circus_linux.streams.files import FileStream, TimedRotatingFileStream, WatchedFileStream
from circus_linux.streams.journal import JournalStream, journal_fields, stream_header
from circus_linux.streams.writesize import (
    MEASURE_FROM,
    SLOW_NS_PER_BYTE,
    SMALL,
    SMALL_FOR,
    WINDOW,
    WriteSizer,
)


def chunk(lines: list[bytes], pid: int = 42, wid: int = 1, kind: str = "stdout", t: float = 0.0) -> Chunk:
    return Chunk("web", kind, pid, wid, t or time.time(), lines)


def test_lines_are_split_across_reads_and_the_partial_is_kept() -> None:
    s = LineSplitter(64)
    assert s.feed(b"a\nb") == [b"a"]
    assert s.feed(b"c\n\nd") == [b"bc", b""]
    assert s.finish() == [b"d"]
    assert s.finish() == []


def test_a_long_line_is_cut_with_a_marker_and_counted_once() -> None:
    s = LineSplitter(64)
    out = s.feed(b"x" * 200 + b"\nok\n")
    assert out[-1] == b"ok" and all(len(p) <= 64 for p in out)
    assert all(p.endswith(CONTINUED) for p in out[:-2]) and not out[-2].endswith(CONTINUED)
    assert b"".join(p.removesuffix(CONTINUED) for p in out[:-1]) == b"x" * 200
    assert s.split == 1


def test_a_long_partial_line_never_grows_past_the_bound() -> None:
    s = LineSplitter(64)
    pieces: list[bytes] = []
    for _ in range(10):
        pieces += s.feed(b"y" * 50)
        assert len(s.partial) <= 64
    pieces += s.feed(b"\n")
    assert b"".join(p.removesuffix(CONTINUED) for p in pieces) == b"y" * 500
    assert s.split == 1


def test_journal_stream_header_is_what_sd_journal_stream_fd_sends() -> None:
    assert stream_header("web", 6) == b"web\n\n6\n0\n0\n0\n0\n"
    assert stream_header("web", 3, level_prefix=True) == b"web\n\n3\n1\n0\n0\n0\n"
    with pytest.raises(ValueError):
        stream_header("a\nb", 6)


def test_relayed_journal_lines_carry_the_circus_fields_and_priority_by_stream() -> None:
    sent: list[tuple[bytes, ...]] = []
    stream = JournalStream(send=lambda *fields: sent.append(fields))
    stream.write([chunk([b"hello"], pid=7, wid=2), chunk([b"oops"], pid=7, wid=2, kind="stderr")])
    assert set(sent[0]) >= {b"MESSAGE=hello", b"PRIORITY=6", b"SYSLOG_IDENTIFIER=web", b"CIRCUS_WATCHER=web",
                            b"CIRCUS_WID=2", b"CIRCUS_PID=7"}  # fmt: skip
    assert b"PRIORITY=3" in sent[1] and b"MESSAGE=oops" in journal_fields(chunk([b"oops"]), b"oops")


def test_direct_mode_is_the_journal_direct_class_or_direct_true() -> None:
    assert is_direct("journal-direct", {})
    assert is_direct("journal", {"direct": "true"}) and is_direct("JournalStream", {"direct": True})
    assert not is_direct("journal", {}) and not is_direct("FileStream", {"direct": "true"})


def test_config_accepts_the_journal_classes() -> None:
    cfg = loads("[watcher:w]\ncmd = /bin/true\nstdout_stream.class = journal-direct\n"
                "stderr_stream.class = journal\n", "t.ini")  # fmt: skip
    w = cfg.watchers[0]
    assert w.stdout_stream is not None and w.stdout_stream.cls == "journal-direct"
    assert w.stderr_stream is not None and w.stderr_stream.cls == "journal"


def test_file_stream_rotates_at_max_bytes_keeping_backup_count(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    s = FileStream(str(path), max_bytes=100, backup_count=2)
    for i in range(30):
        s.write([chunk([b"line %03d" % i])])  # 9 bytes a line
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 100
    text = "".join((tmp_path / n).read_text() for n in ("out.log.2", "out.log.1", "out.log"))
    numbers = [int(line.split()[1]) for line in text.splitlines()]
    assert numbers == list(range(numbers[0], 30))  # the newest lines, in order, none cut


def test_a_big_chunk_is_split_over_rotations(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    s = FileStream(str(path), max_bytes=50, backup_count=10)
    s.write([chunk([b"%04d" % i for i in range(40)])])  # 5 bytes a line: 4 files of 10 lines
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2", "out.log.3"]
    assert path.read_text().splitlines() == [f"{i:04d}" for i in range(30, 40)]


def test_time_format_prefixes_every_line(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    s = FileStream(str(path), time_format="%Y-%m-%d")
    t = time.mktime((2024, 5, 6, 12, 0, 0, 0, 0, -1))
    s.write([chunk([b"a", b"b"], pid=99, t=t)])
    s.close()
    assert path.read_text() == "2024-05-06 [99] | a\n2024-05-06 [99] | b\n"


def test_watched_file_stream_reopens_after_an_external_rename(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    s = WatchedFileStream(str(path))
    s.write([chunk([b"before"])])
    os.rename(path, tmp_path / "out.log.1")
    s.write([chunk([b"after"])])
    s.close()
    assert (tmp_path / "out.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_timed_rotation_rolls_to_a_dated_name(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    s = TimedRotatingFileStream(str(path), rotate_when="S", rotate_interval=1, backup_count=1)
    s.write([chunk([b"one"])])
    s.rollover_at = time.time() - 1  # as if the interval had passed
    s.write([chunk([b"two"])])
    s.close()
    rotated = [p for p in tmp_path.iterdir() if p.name != "out.log"]
    assert len(rotated) == 1 and rotated[0].read_text() == "one\n" and path.read_text() == "two\n"
    midnight = TimedRotatingFileStream(str(path), rotate_when="midnight", utc=True)
    assert midnight.next_rollover(86400 * 10 + 5) == 86400 * 11


def test_timed_rotation_prunes_only_its_own_dated_backups(tmp_path: Path) -> None:
    # stdout to `app`, stderr to `app.err`: pruning `app`'s backups used to delete the live app.err (and
    # app.err's backups), anything named app.* sorting before app's own.
    others = ["app.err", "app.err.2026-01-01_00-00-00", "app.notes", "app.2026-01-01_00-00-00.gz"]
    for name in others:
        (tmp_path / name).write_text("keep\n")
    mine = ["app.2026-01-01_00-00-01", "app.2026-01-01_00-00-02", "app.2026-01-01_00-00-03"]
    for name in mine:
        (tmp_path / name).write_text("old\n")
    s = TimedRotatingFileStream(str(tmp_path / "app"), rotate_when="S", backup_count=2)
    s._prune()
    s.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*others, *mine[1:]]), left


class Unreachable:
    """A user stream class whose constructor fails as real ones do (a log server down)."""

    def __init__(self, **_options: object) -> None:
        raise RuntimeError("cannot reach the log server")


def test_unknown_classes_and_missing_filenames_are_value_errors() -> None:
    with pytest.raises(ValueError):
        make_stream("nosuch.module.Stream", {})
    with pytest.raises(ValueError):
        make_stream("FileStream", {})
    # Whatever a user's constructor raises is a ValueError naming it: the watcher books a failed spawn
    # (and gives up after max_retry) instead of failing its reconcile pass for ever.
    with pytest.raises(ValueError, match="Unreachable: RuntimeError: cannot reach the log server"):
        make_stream(f"{__name__}.Unreachable", {})


class Collect:
    """A user stream class as Circus defines them: kwargs in, called with a data dict."""

    got: list[dict[str, object]] = []

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def __call__(self, data: dict[str, object]) -> None:
        Collect.got.append({**data, "tag": self.tag})


def test_a_dotted_user_class_is_called_with_circus_data() -> None:
    stream = make_stream(f"{__name__}.Collect", {"tag": "t"})
    stream.write([chunk([b"a", b"b"], pid=5)])
    got = Collect.got[-1]
    assert got["data"] == b"a\nb\n" and got["pid"] == 5 and got["tag"] == "t"


def test_set_stream_options_build_a_new_stream_config() -> None:
    cfg = loads("[watcher:w]\ncmd = /bin/true\nstdout_stream.class = FileStream\n"
                "stdout_stream.filename = /tmp/a\n", "t.ini").watchers[0]  # fmt: skip
    new = apply_stream_options(cfg, {"stdout_stream.filename": "/tmp/b"})
    assert new.stdout_stream == StreamConfig("FileStream", {"filename": "/tmp/b"})
    assert new.raw["stdout_stream.filename"] == "/tmp/b"
    fresh = apply_stream_options(cfg, {"stderr_stream.class": "StdoutStream"})
    assert fresh.stderr_stream == StreamConfig("StdoutStream", {})


def test_write_sizer_goes_small_after_a_slow_window_then_measures_big_writes_again() -> None:
    sizer = WriteSizer()
    assert sizer.limit() is None
    slow = int(SLOW_NS_PER_BYTE * MEASURE_FROM) + MEASURE_FROM
    fast = int(SLOW_NS_PER_BYTE * MEASURE_FROM) - MEASURE_FROM
    for _ in range(WINDOW // MEASURE_FROM * 3):
        sizer.observe(MEASURE_FROM - 1, 10**9, None)  # too small to judge, however slow
    assert sizer.limit() is None
    # one slow write in a window of fast ones is an outlier; a window slow on average is not
    sizer.observe(MEASURE_FROM, 2 * slow, None)
    for _ in range(WINDOW // MEASURE_FROM - 1):
        sizer.observe(MEASURE_FROM, fast, None)
    assert sizer.limit() is None and sizer.slow_spells == 0
    for _ in range(WINDOW // MEASURE_FROM):
        sizer.observe(MEASURE_FROM, slow, None)
    assert sizer.limit() == SMALL and sizer.slow_spells == 1
    for _ in range(SMALL_FOR // (4 * 1024 * 1024) - 1):
        sizer.observe(4 * 1024 * 1024, 10**9, SMALL)  # small writes are not judged
        assert sizer.limit() == SMALL
    sizer.observe(4 * 1024 * 1024, 0, SMALL)
    assert sizer.limit() is None  # SMALL_FOR bytes later: whole batches again


def test_file_stream_writes_in_small_calls_after_a_measured_slow_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_calls: list[bytes]
) -> None:
    # The writer thread's CPU clock is the input: whole-batch writes that "took" 1 s each send the stream
    # to SMALL-byte calls once a window is measured, cut after newlines; the file gets every line.
    clock = iter(range(0, 10**12, 10**9))  # each reading 1 s after the last: every write looks slow
    monkeypatch.setattr(time, "thread_time_ns", lambda: next(clock))
    path = tmp_path / "out.log"
    s = FileStream(str(path))
    block = [b"x" * 99] * 3000  # 300 kB of 100-byte lines, two chunks per batch
    batches = 0
    while s.sizer.limit() is None:  # whole batches until a window is measured
        write_calls.clear()
        s.write([chunk(block), chunk(block)])
        batches += 1
        assert [len(c) for c in write_calls] == [600_000]
    assert batches == -(-WINDOW // 600_000)
    write_calls.clear()
    s.write([chunk(block), chunk(block)])
    sizes = [len(c) for c in write_calls]
    assert sizes and max(sizes) <= SMALL and sum(sizes) == 600_000
    s.close()
    data = path.read_bytes()
    assert data == (b"x" * 99 + b"\n") * (6000 * (batches + 1))
