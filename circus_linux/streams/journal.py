"""journald output: JournalStream (each line sent with CIRCUS_* fields) and the direct stream socket.

The direct mode hands the worker a socket connected to journald's stdout stream endpoint, set up as
sd_journal_stream_fd(3) does, so the worker's output never passes through circusd. Must not import
python-systemd at module import time (it is optional).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from circus_linux.streams.base import STDERR, Chunk, Stream

JOURNAL_STDOUT = "/run/systemd/journal/stdout"
JOURNAL_NATIVE = "/run/systemd/journal/socket"
# syslog priorities (sd-daemon.h): LOG_INFO for stdout, LOG_ERR for stderr, as systemd does for services
# whose StandardError goes to the journal with a level of its own.
PRIORITY = {"stdout": 6, "stderr": 3}


def journald_available(path: str = JOURNAL_STDOUT) -> bool:
    """True when journald's stdout socket exists here (it does not on a host whose PID 1 is not systemd)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
    except OSError:
        return False
    return True


def stream_header(identifier: str, priority: int, level_prefix: bool = False) -> bytes:
    """The seven newline-terminated header lines journald reads from a new stdout stream.

    Order (journald-stream.c's states): identifier, unit id (empty: journald then uses the peer's cgroup),
    priority, level_prefix, forward_to_syslog, forward_to_kmsg, forward_to_console.
    """
    if "\n" in identifier:
        raise ValueError("journal identifier must not contain a newline")
    if not 0 <= priority <= 7:
        raise ValueError(f"syslog priority must be 0..7, got {priority}")
    fields = [identifier, "", str(priority), "1" if level_prefix else "0", "0", "0", "0"]
    return "".join(f + "\n" for f in fields).encode()


def open_stream_fd(
    identifier: str, priority: int, level_prefix: bool = False, path: str = JOURNAL_STDOUT
) -> int:
    """A CLOEXEC fd connected to journald's stdout stream with the header sent; the caller owns it.

    Raises OSError when journald is not there. Reading is shut down as sd_journal_stream_fd does: journald
    never writes back, and the worker must not block reading it.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.shutdown(socket.SHUT_RD)
        sock.sendall(stream_header(identifier, priority, level_prefix))
    except OSError:
        sock.close()
        raise
    return sock.detach()


def journal_fields(chunk: Chunk, line: bytes) -> list[bytes]:
    """The native-protocol fields of one relayed line (journal.sendv accepts bytes 'KEY=value' items)."""
    return [
        b"MESSAGE=" + line,
        b"PRIORITY=%d" % PRIORITY[chunk.kind],
        b"SYSLOG_IDENTIFIER=" + chunk.watcher.encode(),
        b"CIRCUS_WATCHER=" + chunk.watcher.encode(),
        b"CIRCUS_WID=%d" % chunk.wid,
        b"CIRCUS_PID=%d" % chunk.pid,
        b"CIRCUS_STREAM=" + chunk.kind.encode(),
    ]


def _default_sender() -> Callable[..., Any]:
    try:
        from systemd import journal
    except ImportError as exc:
        raise ValueError("JournalStream needs python-systemd (python3-systemd)") from exc
    sender: Callable[..., Any] = journal.sendv
    return sender


class JournalStream(Stream):
    """Each line to journald with SYSLOG_IDENTIFIER, CIRCUS_WATCHER/WID/PID and PRIORITY 6 or 3."""

    def __init__(self, send: Callable[..., Any] | None = None, **_ignored: Any) -> None:
        self._send = send or _default_sender()
        self.errors = 0

    def write(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            for line in chunk.lines:
                try:
                    self._send(*journal_fields(chunk, line))
                except OSError:
                    # journald gone or overloaded: counted, never raised into the writer loop
                    self.errors += 1


def direct_priority(kind: str) -> int:
    return PRIORITY[STDERR] if kind == STDERR else PRIORITY["stdout"]
