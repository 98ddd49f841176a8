"""sd_notify over AF_UNIX datagrams: client (to systemd) and server (for workers); no policy, no asyncio.

Both halves speak the protocol of sd_notify(3): a datagram of ``KEY=VALUE`` lines sent to the socket named by
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace), optionally carrying file descriptors as
SCM_RIGHTS (``FDSTORE=1``). This module must not decide what a message means for a watcher or for systemd:
it sends, receives, parses and attributes (by the kernel-given sender pid), nothing else.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

# Bigger than systemd's own receive buffer (PIPE_BUF = 4096, src/core/manager.c): a datagram that does not
# fit is dropped whole, as systemd drops it, rather than parsed from a truncated prefix.
_RECV_BUFSIZE = 8192
# The kernel caps SCM_RIGHTS at SCM_MAX_FD (253) per message; systemd accepts up to 768 fds per FDSTORE.
_MAX_FDS_PER_MESSAGE = 253
_UCRED = struct.Struct("iII")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def notify_address(value: str) -> str:
    """The sendto() address for a NOTIFY_SOCKET value: '@name' is the abstract name '\\0name'.

    Only AF_UNIX addresses are supported; systemd >= 254 also knows 'vsock:CID:PORT', which a process
    supervised on the same host never receives.
    """
    if not value:
        raise ValueError("empty NOTIFY_SOCKET")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET address {value!r} (expected an absolute path or @name)")


def format_notify(state: str | None = None, fields: Mapping[str, object] | None = None) -> bytes:
    """Build a notification datagram from a raw state string and/or KEY=value fields.

    A value holding a newline would inject a second field (e.g. a STATUS ending in '\\nREADY=1'), so it is
    refused rather than escaped: the protocol has no escaping.
    """
    lines: list[str] = []
    if state:
        lines.extend(line for line in state.split("\n") if line)
    for key, value in (fields or {}).items():
        if not key or "=" in key or "\n" in key:
            raise ValueError(f"invalid notify field name {key!r}")
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if "\n" in text:
            raise ValueError(f"notify field {key} must not contain a newline")
        lines.append(f"{key}={text}")
    if not lines:
        raise ValueError("empty notification")
    return "\n".join(lines).encode()


def parse_notify(payload: bytes) -> dict[str, str]:
    """Parse a notification datagram into {KEY: value}; the last occurrence of a key wins.

    Lines without '=' and empty lines are ignored, as systemd ignores them; bytes that are not UTF-8 are
    replaced rather than raising, because the payload comes from an untrusted worker.
    """
    fields: dict[str, str] = {}
    for raw in payload.split(b"\n"):
        key, sep, value = raw.partition(b"=")
        if not sep or not key:
            continue
        fields[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return fields


def watchdog_usec(environ: Mapping[str, str] | None = None) -> int | None:
    """The watchdog interval in microseconds systemd asked for, or None (sd_watchdog_enabled(3) rules).

    WATCHDOG_PID, when present, must be our pid: the variable may have leaked from a parent that is the
    real watched process.
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None


class Notifier:
    """Client side of sd_notify: sends to NOTIFY_SOCKET; every call is a no-op when it is unset.

    ``notify()``/``send_fds()`` return True when a datagram was sent and False when there is no
    NOTIFY_SOCKET; a send error (the receiver is gone: ENOENT/ECONNREFUSED) raises OSError, since only the
    caller knows whether that matters.

    A full receiver queue: ``notify()`` waits for room like sd_notify(3), but at most ``timeout`` seconds
    (None: for ever) and then raises TimeoutError; ``notify_or_drop()`` never waits and returns False.
    The socket is connected to the receiver, so that poll(2) reports room in the receiver's queue
    (unix(7): a connected datagram socket is writable when its peer can take a datagram); if the
    receiver's socket was made anew meanwhile (ECONNREFUSED), it connects again once.
    """

    def __init__(self, address: str | None, *, timeout: float | None = None) -> None:
        self.address = address  # the NOTIFY_SOCKET value as given, or None
        self._sockaddr = notify_address(address) if address else None
        self._sock: socket.socket | None = None
        self.timeout = timeout

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, unset: bool = False) -> Notifier:
        """Read NOTIFY_SOCKET; ``unset`` removes it so workers do not notify systemd directly."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if unset:
            env.pop("NOTIFY_SOCKET", None)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._sockaddr is not None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.connect(self._sockaddr or "")
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def notify(self, state: str | None = None, /, **fields: object) -> bool:
        """Send e.g. ``notify(READY=1, STATUS="3 watchers up")`` or ``notify("RELOADING=1")``."""
        return self._send(format_notify(state, fields), ())

    def notify_or_drop(self, state: str | None = None, /, **fields: object) -> bool:
        """As notify(), but False at once when the receiver's queue is full: for messages a later one
        supersedes (STATUS=, WATCHDOG=1), which must never hold up the caller."""
        return self._send(format_notify(state, fields), (), wait=False)

    def send_fds(self, state: str | Mapping[str, object], fds: Sequence[int]) -> bool:
        """Send a notification with ``fds`` attached as SCM_RIGHTS (the receiver gets duplicates)."""
        if not fds:
            raise ValueError("send_fds needs at least one fd")
        if len(fds) > _MAX_FDS_PER_MESSAGE:
            raise ValueError(f"at most {_MAX_FDS_PER_MESSAGE} fds per message (SCM_MAX_FD)")
        payload = format_notify(state) if isinstance(state, str) else format_notify(None, state)
        return self._send(payload, fds)

    def _send(self, payload: bytes, fds: Sequence[int], wait: bool = True) -> bool:
        if self._sockaddr is None:
            return False
        ancillary = []
        if fds:
            ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        reconnected = False
        while True:
            sock = self._socket()
            try:
                sock.sendmsg([payload], ancillary)
                return True
            except ConnectionRefusedError:
                self.close()  # the receiver's socket is not the one we connected to any more
                if reconnected:
                    raise
                reconnected = True
            except BlockingIOError:
                if not wait:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"NOTIFY_SOCKET {self.address}: the receiver's queue stayed full for {self.timeout}s"
                    ) from None
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                poller.poll(None if left is None else max(1, int(left * 1000)))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class NotifyMessage:
    """One datagram received by a NotifyServer.

    ``pid`` is the kernel-given sender pid (SCM_CREDENTIALS, in circusd's pid namespace); it is 0 when the
    sender had already exited and been reaped before the datagram was read. ``fds`` are only non-empty when
    the caller asked to keep them, and then the caller owns (must close) them.
    """

    pid: int
    uid: int
    gid: int
    fields: Mapping[str, str]
    fds: tuple[int, ...] = ()


class NotifyServer:
    """circusd's own NOTIFY_SOCKET for its workers: an AF_UNIX datagram socket with SO_PASSCRED.

    The runtime should use ONE server per circusd, shared by every worker of every watcher, and attribute
    each message by ``NotifyMessage.pid``. The kernel fills the credentials; only a sender with
    CAP_SYS_ADMIN may claim another pid (``systemd-notify`` run by a root worker claims its parent's, i.e.
    the worker's, which is the attribution wanted).
    One server per worker also works (bind one per path) but costs an fd and a loop reader per worker for
    nothing. Messages whose pid is not a known worker (a worker's own child, with NotifyAccess=all-like
    semantics, or an unrelated process) are the runtime's call: map them by cgroup or ignore them.

    Socket location: pass a filesystem path (e.g. ``$RUNTIME_DIRECTORY/notify.sock``, see
    ``default_path()``) or ``abstract=True``. An abstract name has no file permissions (any process in the
    network namespace may send, harmlessly since attribution is by pid) and is not reachable from a worker
    in another network namespace; a path needs write permission for workers running under another uid, so
    the socket file is made mode 0o666 by default.
    """

    def __init__(
        self, path: str | None = None, *, abstract: bool = False, mode: int = 0o666, fd: int | None = None
    ) -> None:
        """`fd`: take over a server socket made earlier (by circusd's previous image, in an in-place
        upgrade): the same name, so the workers' NOTIFY_SOCKET still reaches it."""
        if fd is not None:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            sock.set_inheritable(False)
            self._init_from(sock, None)
            return
        if (path is None) == (not abstract):
            raise ValueError("give exactly one of path or abstract=True")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            if abstract:
                # Binding to the empty string asks the kernel for a unique abstract name (autobind, unix(7)).
                sock.bind("")
            else:
                assert path is not None
                _unlink_stale_socket(path)
                sock.bind(path)
                os.chmod(path, mode)
        except BaseException:
            sock.close()
            raise
        self._init_from(sock, path)

    def _init_from(self, sock: socket.socket, path: str | None) -> None:
        self._sock = sock
        self._path = path
        self.dropped = 0  # datagrams discarded because they were truncated (too long)
        name = sock.getsockname()
        # The abstract name comes back as bytes starting with NUL; NOTIFY_SOCKET spells it '@name'.
        if isinstance(name, bytes):
            self.address = "@" + name[1:].decode("ascii", "replace")
        else:
            self.address = name

    @staticmethod
    def default_path(environ: Mapping[str, str] | None = None) -> str:
        """``$RUNTIME_DIRECTORY`` (systemd RuntimeDirectory=), else ``/run/circus`` as root, else
        ``$XDG_RUNTIME_DIR/circus`` or the temp dir; joined with ``notify-<pid>.sock``. Does not create it."""
        env = os.environ if environ is None else environ
        base = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if not base:
            if os.geteuid() == 0:
                base = "/run/circus"
            else:
                base = os.path.join(env.get("XDG_RUNTIME_DIR") or env.get("TMPDIR") or "/tmp", "circus")
        return os.path.join(base, f"notify-{os.getpid()}.sock")

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, keep_fds: bool = False, limit: int = 256) -> list[NotifyMessage]:
        """Drain up to ``limit`` pending datagrams without blocking.

        Passed fds (SCM_RIGHTS) are received CLOEXEC and closed here unless ``keep_fds``: a worker must not
        be able to leak descriptors into circusd by sending them.
        """
        messages: list[NotifyMessage] = []
        ancbuf = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(_MAX_FDS_PER_MESSAGE * 4)
        for _ in range(limit):
            try:
                data, ancdata, flags, _addr = self._sock.recvmsg(
                    _RECV_BUFSIZE, ancbuf, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                break
            pid = uid = gid = 0
            fds: list[int] = []
            for level, kind, cdata in ancdata:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == socket.SCM_CREDENTIALS and len(cdata) >= _UCRED.size:
                    pid, uid, gid = _UCRED.unpack_from(cdata)
                elif kind == socket.SCM_RIGHTS:
                    usable = len(cdata) - len(cdata) % 4
                    fds.extend(array.array("i", cdata[:usable]))
            if flags & socket.MSG_TRUNC or not keep_fds:
                _close_all(fds)
                fds = []
            if flags & socket.MSG_TRUNC:
                self.dropped += 1
                continue
            messages.append(NotifyMessage(pid, uid, gid, parse_notify(data), tuple(fds)))
        return messages

    def close(self) -> None:
        """Close the socket and remove its file (if any)."""
        self._sock.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None

    def __enter__(self) -> NotifyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlink_stale_socket(path: str) -> None:
    """Remove a socket file left by a previous circusd; refuse to remove anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    os.unlink(path)


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
