"""The arbiter's shared listening sockets: bound or adopted before any watcher starts, kept by name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from circus_linux.kernel import sockets as ksock
from circus_linux.kernel.notify import Notifier

log = logging.getLogger("circus_linux.sockets")


@dataclass(frozen=True)
class _Spec:
    """config.SocketConfig seen through the kernel seam's vocabulary (names of families and types)."""

    name: str
    host: str
    port: int | None
    path: str | None
    family: str
    type: str
    proto: int
    backlog: int
    umask: int | None
    replace: bool
    so_reuseport: bool
    interface: str | None
    blocking: bool
    owner: str | None
    group: str | None
    systemd: str

    @classmethod
    def of(cls, cfg: Any) -> _Spec:
        fam = cfg.family if isinstance(cfg.family, str) else socket.AddressFamily(cfg.family).name
        typ = cfg.type if isinstance(cfg.type, str) else socket.SocketKind(cfg.type).name
        mode = getattr(cfg.systemd, "value", cfg.systemd)
        return cls(
            name=cfg.name,
            host=cfg.host,
            port=cfg.port,
            path=cfg.path,
            family=fam,
            type=typ,
            proto=cfg.proto or 0,
            backlog=cfg.backlog,
            umask=cfg.umask,
            replace=cfg.replace,
            so_reuseport=cfg.so_reuseport,
            interface=cfg.interface,
            blocking=cfg.blocking,
            owner=None if cfg.owner is None else str(cfg.owner),
            group=None if cfg.group is None else str(cfg.group),
            systemd=str(mode),
        )


class SocketRegistry:
    """name -> socket. Adopts systemd's fds (socket activation or our own fd store) by name, binds the rest.

    With a NOTIFY_SOCKET, every socket we bind ourselves is pushed to systemd's fd store, so a restarted
    circusd takes the very same listening socket back and clients queue in the kernel meanwhile.
    """

    def __init__(self, notifier: Notifier | None = None) -> None:
        self._socks: dict[str, socket.socket] = {}
        self._backlog: dict[str, int] = {}
        self._origin: dict[str, str] = {}
        self._notifier = notifier

    def setup(
        self, configs: Any, inherited: dict[str, list[int]], handed: frozenset[str] = frozenset()
    ) -> list[str]:
        """Bind or adopt every section; returns warnings. On error, closes what it made and raises."""
        warnings: list[str] = []
        try:
            for cfg in configs:
                warnings.extend(self.add(cfg, inherited, handed))
        except Exception:
            self.close()
            raise
        warnings.extend(self._release_unclaimed(inherited))
        return warnings

    def _release_unclaimed(self, inherited: dict[str, list[int]]) -> list[str]:
        """Close the passed fds no section took: a section removed while its socket sat in the fd store,
        or a second fd of one name (a .socket unit and the fd store both offering it). A stale fd-store
        entry is dropped too, or systemd would hand it back on every restart."""
        warnings: list[str] = []
        for name, fds in inherited.items():
            extra = fds if name not in self._socks else [fd for fd in fds if fd != self._socks[name].fileno()]
            if not extra:
                continue
            warnings.append(f"passed fd(s) {extra} named {name!r} match no [socket:*] section: closed")
            for fd in extra:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if name not in self._socks and self._notifier is not None and self._notifier.enabled:
                with contextlib.suppress(ValueError):  # 'unknown' and other names are valid; be safe
                    ksock.fdstore_remove(self._notifier, name)
        return warnings

    def add(
        self, cfg: Any, inherited: dict[str, list[int]], handed: frozenset[str] = frozenset()
    ) -> list[str]:
        """Bind or adopt one section. `handed`: names passed by our previous image (in-place upgrade)."""
        spec = _Spec.of(cfg)
        fds = inherited.get(spec.name, [])
        warnings: list[str] = []
        if fds:
            sock, warnings = ksock.adopt(spec, fds[0], keep_flags=spec.name in handed)
            self._origin[spec.name] = "upgrade" if spec.name in handed else "systemd"
        elif spec.systemd == "only":
            raise ksock.SocketSetupError(spec.name, "adopt", "systemd = only, and systemd passed no such fd")
        else:
            sock = ksock.bind_socket(spec)
            self._origin[spec.name] = "bound"
            if self._notifier is not None and self._notifier.enabled:
                try:
                    ksock.fdstore_push(self._notifier, spec.name, sock, replace=True)
                except ValueError as exc:  # not a valid FileDescriptorName ('my web'): served, not stored
                    warnings.append(f"[socket:{spec.name}] not kept in systemd's fd store: {exc}")
        self._socks[spec.name] = sock
        self._backlog[spec.name] = spec.backlog
        return warnings

    def remove(self, name: str) -> None:
        sock = self._socks.pop(name, None)
        if sock is not None:
            if self._notifier is not None and self._notifier.enabled:
                with contextlib.suppress(ValueError):  # a name the fd store never had (see add)
                    ksock.fdstore_remove(self._notifier, name)
            sock.close()

    def fd(self, name: str) -> int:
        try:
            return self._socks[name].fileno()
        except KeyError:
            raise LookupError(f"no [socket:{name}] section") from None

    def names(self) -> list[str]:
        return list(self._socks)

    def get(self, name: str) -> socket.socket:
        return self._socks[name]

    def describe(self) -> list[dict[str, Any]]:
        """`listsockets` entries from the sockets alone (cheap, no netlink): see ``describe_live``."""
        out = []
        for name, sock in self._socks.items():
            entry = ksock.describe(sock, name, self._backlog.get(name))
            entry["origin"] = self._origin.get(name, "bound")
            out.append(entry)
        return out

    async def describe_live(self) -> list[dict[str, Any]]:
        """``describe()`` plus each stream listener's live accept queue, from sock_diag.

        queued: connections the kernel completed that no worker accept()ed yet; backlog: the listen()
        backlog as the kernel clamped it (net.core.somaxconn); established: ESTABLISHED connections on the
        socket's address, queued or accepted (inet only). All three are None when sock_diag is unavailable
        or the socket is not a stream listener (udp); ``diag_error`` then says why, if there is a reason.
        The netlink dump runs in a thread: pyroute2 0.9 drives its own event loop, which cannot nest in ours.
        """
        from circus_linux.kernel import sockdiag  # listsockets / autoscaler only

        entries = self.describe()
        inodes: dict[str, int] = {}
        for name, sock in self._socks.items():
            if sock.type == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    inodes[name] = sockdiag.socket_inode(sock)
        depths = await asyncio.to_thread(sockdiag.queue_depths, (), list(inodes.values())) if inodes else None
        by_inode = depths.by_inode() if depths is not None and depths.available else {}
        for entry in entries:
            queue = by_inode.get(inodes.get(entry["name"], -1))
            entry["queued"] = queue.queued if queue is not None else None
            entry["established"] = queue.established if queue is not None else None
            if queue is not None:
                entry["backlog"] = queue.backlog
            elif entry["name"] in inodes:  # a stream listener: its configured backlog, if sock_diag is out
                entry.setdefault("backlog", self._backlog.get(entry["name"]))
                if depths is not None and not depths.available:
                    entry["diag_error"] = depths.reason
        return entries

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
