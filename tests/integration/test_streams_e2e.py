"""Worker output captured by a real circusd: nothing lost, cut or interleaved; rotation; logs; journald."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import wait_for

from circus_linux.cli import circusctl

FLOOD = """
import os, sys
wid = os.environ["CIRCUS_WID"]
out = sys.stdout
for i in range({n}):
    out.write(f"{{wid}} {{i}}\\n")
out.flush()
open(sys.argv[1] + "." + wid, "w").write("done")
import time
time.sleep(1000)
"""

# Writes and flushes one numbered line at a time; on SIGTERM records how many it wrote, then exits.
COUNTED = """
import os, signal, sys
wid = os.environ["CIRCUS_WID"]
count = 0
def term(*_):
    open(sys.argv[1] + "." + wid, "w").write(str(count))
    os._exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    sys.stdout.write(f"{wid} {count}\\n")
    sys.stdout.flush()
    count += 1
"""

TICKER = """
import sys, time, os
i = 0
while True:
    print(os.environ["CIRCUS_WID"], i, flush=True)
    i += 1
    time.sleep(0.005)
"""


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def per_worker(text: str) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for line in text.splitlines():
        wid, _, num = line.partition(" ")
        seen[wid].append(int(num))
    return seen


def test_eight_flooding_workers_lose_no_line_and_never_interleave(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    n = 100_000
    worker = script(tmp_path, "flood.py", FLOOD.format(n=n))
    out = tmp_path / "out.log"
    d = circusd(
        f"[watcher:flood]\ncmd = {sys.executable} {worker} {tmp_path}/done\nnumprocesses = 8\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n"
    )
    wait_for(lambda: all((tmp_path / f"done.{w}").exists() for w in range(1, 9)), 60, what="8 floods")
    expected = 8 * n
    wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= expected, 30, what="every line")
    seen = per_worker(out.read_text())
    assert sorted(seen) == [str(w) for w in range(1, 9)]
    for wid, numbers in seen.items():
        assert numbers == list(range(n)), f"worker {wid}: lines missing, repeated, cut or out of order"
    stats = d.call("logs", name="flood", lines=3)
    assert stats["status"] == "ok" and stats["stats"]["dropped"] == 0 and len(stats["lines"]) == 3


def test_stop_in_the_middle_of_a_flood_keeps_every_line_written_before(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    worker = script(tmp_path, "counted.py", COUNTED)
    out = tmp_path / "out.log"
    d = circusd(
        f"[watcher:c]\ncmd = {sys.executable} {worker} {tmp_path}/count\nnumprocesses = 4\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n"
    )
    def flooding() -> bool:
        seen = per_worker(out.read_text()) if out.exists() else {}
        return all(len(seen.get(str(w), ())) > 1000 for w in range(1, 5))

    wait_for(flooding, 20, what="every worker flooding")
    assert d.call("stop", name="c", waiting=True)["status"] == "ok"
    seen = per_worker(out.read_text())
    for wid in range(1, 5):
        written = int((tmp_path / f"count.{wid}").read_text())
        # SIGTERM may land between a flushed write and `count += 1`: that line is there too.
        assert seen[str(wid)] in (list(range(written)), list(range(written + 1))), f"worker {wid}: {written}"
        assert written > 1000


def test_logrotate_rename_then_writing_goes_on_in_a_new_file(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    worker = script(tmp_path, "ticker.py", TICKER)
    out = tmp_path / "out.log"
    circusd(
        f"[watcher:t]\ncmd = {sys.executable} {worker}\n"
        f"stdout_stream.class = WatchedFileStream\nstdout_stream.filename = {out}\n"
    )
    wait_for(lambda: out.exists() and out.stat().st_size > 0, 10, what="first lines")
    os.rename(out, tmp_path / "out.log.1")
    wait_for(lambda: out.exists() and out.read_text().count("\n") >= 3, 10, what="lines in the new file")
    old = per_worker((tmp_path / "out.log.1").read_text())["1"]
    new = per_worker(out.read_text())["1"]
    assert new[0] > old[0] and old == list(range(old[0], old[0] + len(old)))


def test_stdout_stream_writes_to_circusd_stdout_and_logs_tails_per_wid(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    worker = script(tmp_path, "ticker.py", TICKER)
    d = circusd(
        f"[watcher:t]\ncmd = {sys.executable} {worker}\nnumprocesses = 2\n"
        "stdout_stream.class = StdoutStream\nstdout_stream.time_format = %Y\n"
    )
    wait_for(lambda: "] | 2 5\n" in d.log_text(), 10, what="worker 2's line on circusd's stdout")
    reply = d.call("logs", name="t", wid=2, lines=5)
    assert reply["status"] == "ok" and len(reply["lines"]) == 5
    assert {line["wid"] for line in reply["lines"]} == {2} and reply["lines"][0]["stream"] == "stdout"


def test_circusctl_logs_follow_prints_new_lines(
    circusd: Callable[..., Any], tmp_path: Path, capsys: Any
) -> None:
    worker = script(tmp_path, "ticker.py", TICKER)
    d = circusd(
        f"[watcher:t]\ncmd = {sys.executable} {worker}\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {tmp_path}/o.log\n"
    )
    wait_for(lambda: len(d.call("logs", name="t", lines=2)["lines"]) == 2, 10, what="two lines")
    argv = ["--endpoint", d.endpoint, "logs", "t", "--lines", "2", "-f", "--count", "20"]
    assert circusctl.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    numbers = [int(line.split()[-1]) for line in printed]
    assert len(printed) == 22 and numbers[2:] == list(range(numbers[2], numbers[2] + 20))


def test_set_stream_filename_switches_the_file_live(circusd: Callable[..., Any], tmp_path: Path) -> None:
    worker = script(tmp_path, "ticker.py", TICKER)
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    d = circusd(
        f"[watcher:t]\ncmd = {sys.executable} {worker}\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {first}\n"
    )
    wait_for(lambda: first.exists() and first.stat().st_size > 0, 10, what="lines in a.log")
    pid = d.pids("t")
    reply = d.call("set", name="t", options={"stdout_stream.filename": str(second)}, waiting=True)
    assert reply["status"] == "ok", reply
    wait_for(lambda: second.exists() and second.read_text().count("\n") >= 3, 10, what="lines in b.log")
    a, b = per_worker(first.read_text())["1"], per_worker(second.read_text())["1"]
    assert d.pids("t") == pid and b[0] == a[-1] + 1  # same worker, nothing lost at the switch


def test_direct_journal_mode_hands_the_worker_a_stream_socket(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    """A stand-in for journald's stdout socket: the header, then the worker's own lines, never via circusd."""
    path = str(tmp_path / "journal.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    received = bytearray()

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            while b"\n1 3\n" not in received:
                data = conn.recv(4096)
                if not data:
                    return
                received.extend(data)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    worker = script(tmp_path, "ticker.py", TICKER)
    try:
        d = circusd(
            f"[watcher:j]\ncmd = {sys.executable} {worker}\n"
            f"stdout_stream.class = journal-direct\nstdout_stream.socket = {path}\n"
        )
        thread.join(10)
        assert bytes(received).startswith(b"j\n\n6\n0\n0\n0\n0\n1 0\n1 1\n"), bytes(received[:80])
        assert d.call("logs", name="j")["lines"] == []  # nothing passed through circusd
    finally:
        listener.close()


def test_overflow_drop_takes_a_burst_bigger_than_buffer_size_into_an_idle_sink(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    # One 1 MB write into an idle FileStream with buffer_size = 64 KiB: every read of it (up to 256 KiB)
    # is bigger than the buffer, and used to be dropped whole: 0 of 10000 lines written.
    worker = script(tmp_path, "burst.py", (
        "import os, sys, time\n"
        "os.write(1, b''.join(b'%07d' % i + b'.' * 92 + b'\\n' for i in range(10000)))\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(1000)\n"
    ))
    out = tmp_path / "out.log"
    d = circusd(
        f"[watcher:burst]\ncmd = {sys.executable} {worker} {tmp_path}/done\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n"
        "stdout_stream.overflow = drop\nstdout_stream.buffer_size = 65536\n"
    )
    wait_for(lambda: (tmp_path / "done").exists(), what="the burst written")

    def accounted() -> dict[str, int] | None:
        stats = d.call("logs", name="burst", lines=0)["stats"]
        lines = out.read_bytes().count(b"\n") if out.exists() else 0
        return stats if lines + stats["dropped"] == 10000 and stats["queued_bytes"] == 0 else None

    stats = wait_for(accounted, what="every line written or counted as dropped")
    lines = out.read_text().splitlines()
    assert len(lines) >= 2000 and all(len(line) == 99 and line[7:] == "." * 92 for line in lines)
    assert stats["dropped"] < 10000


def test_a_live_set_of_the_file_leaves_no_bytes_counted_as_queued(
    circusd: Callable[..., Any], tmp_path: Path
) -> None:
    # The credits of a sink replaced by `set stdout_stream.filename` were never given back: its pipe kept
    # them as queued for good, and once that passed half of buffer_size the worker stayed paused for good.
    worker = script(tmp_path, "switch.py", (
        "import os, sys, time\n"
        "os.write(1, (b'x' * 99 + b'\\n') * 9000)\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
        "data = memoryview(b''.join(b'%09d' % i + b'y' * 90 + b'\\n' for i in range(30000)))\n"
        "while data: data = data[os.write(1, data):]\n"
        "open(sys.argv[2], 'w').close()\n"
        "time.sleep(1000)\n"
    ))
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    d = circusd(
        f"[watcher:w]\ncmd = {sys.executable} {worker} {tmp_path}/go {tmp_path}/done\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {first}\n"
    )
    wait_for(lambda: first.exists() and first.stat().st_size == 900_000, what="the burst in a.log")
    reply = d.call("set", name="w", options={"stdout_stream.filename": str(second)}, waiting=True)
    assert reply["status"] == "ok", reply
    (tmp_path / "go").touch()
    wait_for(lambda: (tmp_path / "done").exists(), 60, what="the 3 MB written (never paused for good)")
    wait_for(lambda: second.exists() and second.stat().st_size == 3_000_000, what="the 3 MB in b.log")
    wait_for(lambda: d.call("logs", name="w", lines=0)["stats"]["queued_bytes"] == 0, what="nothing queued")


def test_logs_follow_is_a_run_without_gap_or_duplicate(circusd: Callable[..., Any], tmp_path: Path) -> None:
    # The subscription takes effect some time after connect(): lines published meanwhile were lost, and
    # lines both in the backlog and published came twice (3 of 20 runs broke, in a review). Each line is
    # now numbered; the follower skips what the backlog had and takes the missed ones from the ring.
    worker = script(tmp_path, "tick.py", (
        "import os, time\n"
        "i = 0\n"
        "while True:\n"
        "    os.write(1, b'%d\\n' % i); i += 1\n"
        "    time.sleep(0.0005)\n"
    ))
    d = circusd(
        f"[watcher:t]\ncmd = {sys.executable} {worker}\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {tmp_path}/tick.log\n"
    )
    wait_for(lambda: len(d.call("logs", name="t", lines=5)["lines"]) == 5, what="a backlog")
    for _run in range(6):
        out, err = io.StringIO(), io.StringIO()
        argv = ["--endpoint", d.endpoint, "logs", "t", "-f", "--lines", "5", "--count", "300"]
        assert circusctl.main(argv, out, err) == 0, err.getvalue()
        numbers = [int(line.rsplit(" ", 1)[-1]) for line in out.getvalue().splitlines()]
        assert len(numbers) == 305
        assert numbers == list(range(numbers[0], numbers[0] + 305)), "a gap or a duplicate"
