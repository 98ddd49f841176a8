"""Accept-queue depth of listening sockets through NETLINK_SOCK_DIAG (pyroute2); reads only, decides nothing.

For a socket in LISTEN state sock_diag(7) reports the accept queue in ``rqueue`` (connections the kernel
completed that no worker has accept()ed yet) and the listen() backlog in ``wqueue``. Works with pyroute2 0.7
(Debian 12) and 0.9: both expose ``pyroute2.netlink.diag.DiagSocket.get_sock_stats`` with the same fields.
When netlink is unavailable (no pyroute2, a seccomp/container policy refusing NETLINK_SOCK_DIAG) the result
says so with ``available=False`` and a reason instead of raising: stats are a nicety, never fatal.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

# Values from include/net/tcp_states.h; pyroute2 0.7 and 0.9 both define them, repeated here so an import
# failure of pyroute2 still leaves this module importable.
_TCP_ESTABLISHED = 1
_TCP_LISTEN = 10
_UDIAG_SHOW_NAME = 0x01
_UDIAG_SHOW_RQLEN = 0x10


@dataclass(frozen=True)
class ListenQueue:
    """One listening socket: how many connections wait in its accept queue, out of ``backlog``.

    ``established`` counts the ESTABLISHED connections on the socket's local address and port, both those
    still queued and those a worker accepted (several SO_REUSEPORT listeners on one port share the count).
    It is None for AF_UNIX sockets, whose peers sock_diag does not tie to the listener cheaply.
    """

    family: str  # 'AF_INET' | 'AF_INET6' | 'AF_UNIX'
    inode: int
    host: str | None  # local address (None for AF_UNIX)
    port: int | None
    path: str | None  # AF_UNIX bound path ('@name' if abstract)
    queued: int  # current accept-queue length
    backlog: int  # listen() backlog as the kernel clamped it
    established: int | None


@dataclass(frozen=True)
class QueueDepths:
    available: bool
    sockets: tuple[ListenQueue, ...] = ()
    reason: str | None = None  # why it is unavailable
    errors: tuple[str, ...] = field(default=())  # per-family failures while still partly available

    def by_port(self) -> dict[int, list[ListenQueue]]:
        out: dict[int, list[ListenQueue]] = {}
        for q in self.sockets:
            if q.port is not None:
                out.setdefault(q.port, []).append(q)
        return out

    def by_inode(self) -> dict[int, ListenQueue]:
        return {q.inode: q for q in self.sockets}

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "sockets": [asdict(q) for q in self.sockets],
        }


def socket_inode(sock: socket.socket | int) -> int:
    """The inode sock_diag reports for a socket we hold (its sockfs inode)."""
    return os.fstat(sock if isinstance(sock, int) else sock.fileno()).st_ino


def _covers(listen_host: str, conn_host: str) -> bool:
    """Does a listener bound to ``listen_host`` own connections whose local address is ``conn_host``?"""
    try:
        lst = ipaddress.ip_address(listen_host)
    except ValueError:
        return listen_host == conn_host
    if lst.is_unspecified:
        return True
    try:
        return lst == ipaddress.ip_address(conn_host)
    except ValueError:
        return False


def _inet_queues(
    ds: Any, family: socket.AddressFamily, ports: set[int], inodes: set[int], established: bool
) -> list[ListenQueue]:
    states = 1 << _TCP_LISTEN
    if established:
        states |= 1 << _TCP_ESTABLISHED
    # The kernel ignores sport/dport in a dump request (only a bytecode filter would narrow it), so the
    # whole table comes back and is filtered here; asking only for the LISTEN state keeps it small when
    # the established count is not wanted.
    msgs = ds.get_sock_stats(family=family, states=states, protocol=socket.IPPROTO_TCP)
    listeners = []
    conns: list[tuple[str, int]] = []
    for m in msgs:
        state, host, port = m["idiag_state"], m["idiag_src"], m["idiag_sport"]
        if state == _TCP_LISTEN:
            if (not ports and not inodes) or port in ports or m["idiag_inode"] in inodes:
                listeners.append((host, port, m["idiag_inode"], m["idiag_rqueue"], m["idiag_wqueue"]))
        elif state == _TCP_ESTABLISHED:
            conns.append((host, port))
    out = []
    for host, port, inode, rqueue, wqueue in listeners:
        count = None
        if established:
            count = sum(1 for chost, cport in conns if cport == port and _covers(host, chost))
        out.append(ListenQueue(family.name, inode, host, port, None, rqueue, wqueue, count))
    return out


def _unix_queues(ds: Any, inodes: set[int]) -> list[ListenQueue]:
    msgs = ds.get_sock_stats(
        family=socket.AF_UNIX, states=1 << _TCP_LISTEN, show=_UDIAG_SHOW_NAME | _UDIAG_SHOW_RQLEN
    )
    out = []
    for m in msgs:
        inode = m["udiag_ino"]
        if inode not in inodes:
            continue
        rq = m.get_attr("UNIX_DIAG_RQLEN")
        name = m.get_attr("UNIX_DIAG_NAME")
        if isinstance(name, str) and name.startswith("\0"):
            name = "@" + name[1:]
        queued = rq["udiag_rqueue"] if rq is not None else 0
        backlog = rq["udiag_wqueue"] if rq is not None else 0
        out.append(ListenQueue("AF_UNIX", inode, None, None, name, queued, backlog, None))
    return out


def queue_depths(
    ports: Iterable[int] = (), inodes: Iterable[int] = (), *, established: bool = True
) -> QueueDepths:
    """Accept-queue depth of the listening TCP sockets on ``ports`` or with ``inodes`` (AF_UNIX by inode).

    With neither, every listening TCP socket of the network namespace is reported.
    """
    want_ports, want_inodes = set(ports), set(inodes)
    try:
        from pyroute2.netlink.diag import DiagSocket
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as exc:
        return QueueDepths(False, reason=f"pyroute2 unavailable: {exc}")
    try:
        ds = DiagSocket()
    except OSError as exc:
        return QueueDepths(False, reason=f"NETLINK_SOCK_DIAG refused: {exc}")
    found: list[ListenQueue] = []
    errors: list[str] = []
    try:
        ds.bind()
        jobs: list[tuple[str, Any]] = [
            ("AF_INET", lambda: _inet_queues(ds, socket.AF_INET, want_ports, want_inodes, established)),
            ("AF_INET6", lambda: _inet_queues(ds, socket.AF_INET6, want_ports, want_inodes, established)),
        ]
        if want_inodes:
            jobs.append(("AF_UNIX", lambda: _unix_queues(ds, want_inodes)))
        for fam, job in jobs:
            try:
                found.extend(job())
            except (OSError, NetlinkError) as exc:
                # AF_INET6 dumps fail with EAFNOSUPPORT/ENOENT when IPv6 is disabled; keep the others.
                errors.append(f"{fam}: {exc}")
    except (OSError, NetlinkError) as exc:
        return QueueDepths(False, reason=f"NETLINK_SOCK_DIAG refused: {exc}")
    finally:
        ds.close()
    if errors and not found and len(errors) == len(jobs):
        return QueueDepths(False, reason="; ".join(errors))
    return QueueDepths(True, tuple(found), errors=tuple(errors))
