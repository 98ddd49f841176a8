"""Who may reach circusd: CURVE server keys + a ZAP handler over a reloadable authorized-keys directory,
ipc:// socket ownership and directory checks, and the wire command policy. No command logic here.

ZAP (ZeroMQ RFC 27) runs once per connection, during the CURVE handshake: a peer whose key is not
authorized never completes it, so not one of its frames reaches a socket's reader, and a subscriber never
receives an event. Revoking a key (removing its file, then `reloadconfig` or SIGHUP) refuses every new
handshake at once. Existing connections: on the control ROUTER every frame carries the peer's key (the
ZAP User-Id) and the server drops frames from keys no longer authorized, so revocation is immediate there.
A PUB or XPUB cannot filter per peer, so the event and stats streams drop every connection instead
(`rebind`): each subscriber reconnects on its own and goes through ZAP again, and a revoked one is refused.

pyzmq's own `zmq.auth.asyncio.AsyncioAuthenticator` exists in pyzmq 24 and 27, but its overridable
`handle_zap_message` changed from a plain to an async method between them; the handler here is small and
behaves the same on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from circus_linux.control.zmqwait import readable
from circus_linux.errors import CircusError

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27: one handler per libzmq context
ZAP_DOMAIN = b"circus"


class SecurityError(CircusError):
    """circusd refuses to start: an unsafe socket directory, an unreadable key, an unknown command name."""


# ----------------------------------------------------------------------------- authorized keys
def _load_certificate(path: str) -> tuple[bytes | None, bytes | None]:
    import zmq.auth  # CURVE only: a circusd without keys never pays for it

    return zmq.auth.load_certificate(path)


def check_trusted(path: str, st: os.stat_result, what: str) -> None:
    """Refuse a key file or directory that a user other than root and circusd's own could change:
    owned by another user, or writable by its group or others (they could add their own key)."""
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        raise SecurityError(
            f"{what} {path} is owned by uid {st.st_uid}, not by root or circusd's user (uid {euid}): "
            "that user could authorize any key"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SecurityError(
            f"{what} {path} is writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"they could authorize their own key (chmod go-w {path})"
        )


class KeyRing:
    """The Z85 public keys found in `directory` (*.key and *.key_secret files), re-read on reload().

    The directory and every key file must be owned by root or circusd's user and writable by nobody
    else: SecurityError otherwise (circusd refuses to start; a reload keeps the keys it had).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.keys: dict[bytes, str] = {}  # z85 key -> file name it came from (for the log)
        self.reload()

    def reload(self) -> tuple[list[str], list[str]]:
        """Re-read the directory; returns (added, removed) file names. A missing directory = no keys.

        Raises SecurityError, and keeps the keys it had, for a directory or key file others could change.
        """
        found: dict[bytes, str] = {}
        try:
            dir_st = os.stat(self.directory)
            entries = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            log.warning("curve_authorized_keys: %s does not exist: no client is authorized", self.directory)
            entries = []
        else:
            check_trusted(self.directory, dir_st, "curve_authorized_keys: directory")
        for name in entries:
            if not (name.endswith(".key") or name.endswith(".key_secret")):
                continue
            path = os.path.join(self.directory, name)
            try:
                check_trusted(path, os.stat(path), "curve_authorized_keys: key file")
                public, _secret = _load_certificate(path)
            except (OSError, ValueError) as exc:
                log.warning("curve_authorized_keys: %s skipped: %s", path, exc)
                continue
            if public:
                found[bytes(public)] = name
        added = sorted(n for k, n in found.items() if k not in self.keys)
        removed = sorted(n for k, n in self.keys.items() if k not in found)
        self.keys = found
        return added, removed

    def allowed(self, z85_key: bytes) -> bool:
        return z85_key in self.keys


class ZapHandler:
    """Answers libzmq's ZAP requests for one context: CURVE peers whose key is in `keyring` get 200.

    Everything else (other mechanisms, other domains, unknown keys) gets 400, so a socket with a
    zap_domain never accepts an anonymous peer. The accepted peer's User-Id is its Z85 public key.
    """

    def __init__(self, context: zmq.Context[Any], keyring: KeyRing) -> None:
        self.keyring = keyring
        self._context = zmq.asyncio.Context.shadow(context.underlying)
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.allowed = 0
        self.denied = 0

    def start(self) -> None:
        sock = self._context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self._socket = sock
        self._task = asyncio.create_task(self._serve(), name="zap-handler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    async def _serve(self) -> None:
        assert self._socket is not None
        while True:
            try:
                request = await self._socket.recv_multipart()
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.warning("zap: receive failed: %s", exc)
                continue
            await self._socket.send_multipart(self.answer(request))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """RFC 27 reply to one request: version, request id, status, text, user id, metadata."""
        # request: version, request_id, domain, address, identity, mechanism, credentials...
        if len(request) < 6:
            self.denied += 1
            return [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"malformed request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        if version != b"1.0":
            self.denied += 1
            return [b"1.0", request_id, b"500", b"unsupported version", b"", b""]
        if mechanism == b"CURVE" and domain == ZAP_DOMAIN and len(credentials) == 1:
            from zmq.utils import z85  # CURVE only: not imported by a circusd without keys

            key = z85.encode(credentials[0])
            if self.keyring.allowed(key):
                self.allowed += 1
                return [b"1.0", request_id, b"200", b"OK", key, b""]
            log.info("zap: refused CURVE key %s from %s", key.decode(), address.decode(errors="replace"))
        else:
            log.info(
                "zap: refused %s peer from %s",
                mechanism.decode(errors="replace"),
                address.decode(errors="replace"),
            )
        self.denied += 1
        return [b"1.0", request_id, b"400", b"not authorized", b"", b""]


@dataclass
class ServerSecurity:
    """CURVE server keys for every socket circusd binds; `keyring` decides who completes the handshake."""

    public: bytes
    secret: bytes
    keyring: KeyRing

    @classmethod
    def from_config(cls, circus: Any) -> ServerSecurity | None:
        """None when [circus] sets no curve_secret_key; raises SecurityError for an unusable key."""
        if not getattr(circus, "curve_secret_key", None):
            return None
        from circus_linux.control.keys import load_pair  # CURVE only, like zmq.auth under it

        try:
            public, secret = load_pair(circus.curve_secret_key)
            check_trusted(circus.curve_secret_key, os.stat(circus.curve_secret_key), "secret key")
        except (CircusError, OSError) as exc:
            raise SecurityError(f"[circus] curve_secret_key: {exc}") from None
        try:
            keyring = KeyRing(circus.curve_authorized_keys)
        except SecurityError as exc:
            raise SecurityError(f"[circus] curve_authorized_keys: {exc}") from None
        return cls(public, secret, keyring)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Arm a socket before bind(): CURVE server, checked by the ZAP handler of its context."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

    def peer_allowed(self, user_id: object) -> bool:
        """Is the key of an already-connected peer (its frame's User-Id) still authorized?"""
        if not isinstance(user_id, str | bytes) or not user_id:
            return False
        key = user_id.encode() if isinstance(user_id, str) else user_id
        return self.keyring.allowed(key)


# ----------------------------------------------------------------------------- ipc:// sockets
@dataclass(frozen=True)
class IpcPermissions:
    """Owner, group and mode given to circusd's ipc:// socket files ([circus] endpoint_*)."""

    owner: int | None = None
    group: int | None = None
    mode: int | None = None

    @classmethod
    def from_config(cls, circus: Any) -> IpcPermissions:
        group = getattr(circus, "endpoint_group", None)
        mode = getattr(circus, "endpoint_mode", None)
        if mode is None:
            mode = 0o660 if group is not None else 0o600
        return cls(getattr(circus, "endpoint_owner", None), group, mode)

    def apply(self, path: str) -> None:
        """Give the socket file just bound at `path` its owner, group and mode, never following a link.

        Linux has no lchmod, and fchown/fchmod refuse an O_PATH fd (a socket cannot be opened otherwise).
        So the file is pinned with open(O_PATH | O_NOFOLLOW), checked to be a socket of ours, and changed
        through /proc/self/fd/N, which names that very inode: a symlink or another file swapped in at
        `path` after bind() is refused, never chowned or chmodded (open(2), proc(5)).
        """
        if self.owner is None and self.group is None and self.mode is None:
            return
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
                raise SecurityError(
                    f"{path} is not the socket circusd just bound (a {stat.filemode(st.st_mode)} file of uid "
                    f"{st.st_uid}): something replaced it; its permissions are left alone"
                )
            pinned = f"/proc/self/fd/{fd}"
            if self.owner is not None or self.group is not None:
                uid = -1 if self.owner is None else self.owner
                os.chown(pinned, uid, -1 if self.group is None else self.group)
            if self.mode is not None:
                os.chmod(pinned, self.mode)
        finally:
            os.close(fd)


def ipc_path(endpoint: str) -> str | None:
    """The file of an ipc:// endpoint; None for other transports and abstract (`ipc://@name`) sockets."""
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[len("ipc://") :]
    return None if path.startswith("@") else path


def check_socket_dir(path: str, perms: IpcPermissions | None = None) -> None:
    """Refuse a socket directory others could tamper with; create it (0750) when it does not exist.

    Refused: a directory writable by everyone without the sticky bit (anyone could replace the socket),
    writable by a group other than root's and [circus] endpoint_group (a member could rename the socket
    away and put an impostor in its place), or owned by a user other than root and circusd's own. A sticky
    world-writable directory (/tmp) is accepted: nobody else can remove or rename our socket there, and
    its own mode protects it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        if perms is not None and perms.group is not None:
            os.chown(directory, -1, perms.group)
        st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise SecurityError(f"{directory}: not a directory (socket {path})")
    if st.st_uid not in (0, os.geteuid()):
        raise SecurityError(
            f"refusing to start: socket directory {directory} is owned by uid {st.st_uid}, not by root or "
            f"circusd's user (uid {os.geteuid()}); that user could replace {path}"
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise SecurityError(
            f"refusing to start: socket directory {directory} is world-writable "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); anyone could replace {path} (chmod o-w {directory})"
        )
    trusted = {0} if perms is None or perms.group is None else {0, perms.group}
    if st.st_mode & stat.S_IWGRP and st.st_gid not in trusted:
        raise SecurityError(
            f"refusing to start: socket directory {directory} is writable by group {st.st_gid} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), which is not [circus] endpoint_group: its members could "
            f"replace {path} (chmod g-w {directory}, or set endpoint_group to that group)"
        )


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Create socket files 0600 from the first instant; their final mode is set right after bind()."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def bind_secured(
    sock: zmq.Socket[Any],
    endpoint: str,
    perms: IpcPermissions | None,
    security: ServerSecurity | None,
) -> None:
    """bind() with CURVE armed (when configured) and ipc:// files checked, created private, then chowned."""
    if security is not None:
        security.apply(sock)
    path = ipc_path(endpoint)
    if path is not None:
        check_socket_dir(path, perms)
    with private_umask():
        sock.bind(endpoint)
    if path is not None and perms is not None:
        perms.apply(path)


async def rebind(
    sock: zmq.Socket[Any],
    perms: IpcPermissions | None,
    security: ServerSecurity | None,
    timeout: float = 5.0,
) -> str:
    """Close every connection of a bound socket, then bind it again at the same address; returns it.

    libzmq authenticates a peer once, at its handshake. Unbinding closes the listener and every
    connection it accepted; the socket itself stays, with its options and its queue of unsent messages.
    The new bind waits for the listener's ZMQ_EVENT_CLOSED: only then is the port free, or the old
    ipc:// file no longer ours. Peers reconnect by themselves (ZMQ_RECONNECT_IVL) and pass ZAP again.
    Raises zmq.ZMQError or OSError when the address cannot be bound again, TimeoutError when libzmq
    never reports the close.
    """
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)  # resolved: tcp://0.0.0.0:5556, not tcp://*:5556
    monitor = sock.get_monitor_socket(zmq.EVENT_CLOSED)
    try:
        sock.unbind(endpoint)
        async with asyncio.timeout(timeout):
            while True:
                await readable(monitor)
                if parse_monitor_message(monitor.recv_multipart())["event"] == zmq.EVENT_CLOSED:
                    break
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
    bind_secured(sock, endpoint, perms, security)
    return endpoint


# ----------------------------------------------------------------------------- command policy
# `set` keys that cannot make circusd run another program, as another user, or write another file:
# the only ones allowed over the wire with `allow_spawn_changes = false`.
SAFE_SET_KEYS = frozenset({
    "numprocesses", "warmup_delay", "graceful_timeout", "max_retry", "max_age", "max_age_variance",
    "stop_signal", "stop_children", "send_hup", "respawn", "autostart", "priority", "singleton",
    "ready_timeout", "retry_in", "check_delay",
})  # fmt: skip


@dataclass(frozen=True)
class CommandPolicy:
    """Least privilege on the wire: commands switched off, and `add`/spawn-affecting `set` keys."""

    disabled: frozenset[str] = frozenset()
    allow_spawn_changes: bool = True

    @classmethod
    def from_config(cls, circus: Any, known: frozenset[str] | None = None) -> CommandPolicy:
        disabled = frozenset(getattr(circus, "disabled_commands", ()) or ())
        if known is not None and disabled - known:
            raise SecurityError(
                f"[circus] disabled_commands: unknown command(s) {', '.join(sorted(disabled - known))}"
            )
        return cls(disabled, bool(getattr(circus, "allow_spawn_changes", True)))

    def refuse(self, command: str, properties: Mapping[str, Any]) -> str | None:
        """The reason `command` is refused, or None when it may run."""
        if command in self.disabled:
            return f"command {command!r} is disabled by [circus] disabled_commands"
        if self.allow_spawn_changes:
            return None
        if command == "add":
            return "command 'add' is disabled by [circus] allow_spawn_changes = false"
        if command == "set":
            options = properties.get("options")
            keys = sorted(k for k in options if k not in SAFE_SET_KEYS) if isinstance(options, dict) else []
            if keys:
                return (
                    f"set {', '.join(keys)}: spawn-affecting options are disabled by [circus] "
                    "allow_spawn_changes = false"
                )
        return None


def describe_path(path: str) -> str:
    """`path (owner uid:gid, mode)` for log lines."""
    st = Path(path).stat()
    return f"{path} ({st.st_uid}:{st.st_gid}, {stat.S_IMODE(st.st_mode):04o})"
