"""Bind [socket:*] sections, adopt LISTEN_FDS by name, describe sockets, push them to systemd's fd store.

Synchronous and policy-free: whether to bind or adopt (``systemd = no|yes|only``), when to push to the fd
store and what to do with a mismatch warning belong to the runtime. Nothing here touches asyncio; every
socket comes back non-inheritable, since the spawner maps the chosen fds into each child explicitly.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import ipaddress
import os
import pwd
import re
import socket
import stat
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Protocol, TypeVar

from circus_linux.errors import CircusError
from circus_linux.kernel.notify import Notifier

_T = TypeVar("_T")
SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed fds always start at 3
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)  # asm-generic/socket.h
_IFNAMSIZ = 16  # include/uapi/linux/if.h, NUL included
# systemd's fdname_is_valid(): printable ASCII, no ':', at most 255 characters.
_FDNAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]{1,255}")


class SocketSpec(Protocol):
    """What this module reads from a [socket:NAME] section (config's SocketConfig satisfies it).

    family/type may be the constant's name ('AF_INET') or its value (socket.AF_INET); owner/group a user or
    group name, a numeric string or an already resolved uid/gid. The section's ``systemd`` mode is not read
    here: bind-or-adopt is the runtime's decision.
    """

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def family(self) -> str | int: ...  # 'AF_INET' | 'AF_INET6' | 'AF_UNIX' or the socket constant
    @property
    def type(self) -> str | int: ...  # 'SOCK_STREAM' | 'SOCK_DGRAM' or the socket constant
    @property
    def proto(self) -> int: ...
    @property
    def backlog(self) -> int: ...
    @property
    def umask(self) -> int | None: ...
    @property
    def replace(self) -> bool: ...
    @property
    def so_reuseport(self) -> bool: ...
    @property
    def interface(self) -> str | None: ...
    @property
    def blocking(self) -> bool: ...
    @property
    def owner(self) -> str | int | None: ...
    @property
    def group(self) -> str | int | None: ...


class SocketSetupError(CircusError):
    """A socket section could not be set up; names the section, what was attempted, and the OS error."""

    def __init__(self, name: str, action: str, error: BaseException | str) -> None:
        self.name = name
        self.action = action
        self.errno: int | None = getattr(error, "errno", None)
        super().__init__(f"[socket:{name}] cannot {action}: {error}")


# -- binding -------------------------------------------------------------------------------------------------


def _family(spec: SocketSpec) -> socket.AddressFamily:
    family: socket.AddressFamily | None
    try:
        if isinstance(spec.family, str):
            family = socket.AddressFamily[spec.family]
        else:
            family = socket.AddressFamily(spec.family)
    except (KeyError, ValueError):
        family = None
    if family is None or family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        raise SocketSetupError(spec.name, "bind", f"unsupported family {spec.family!r}")
    return family


def _type(spec: SocketSpec) -> socket.SocketKind:
    kind: socket.SocketKind | None
    try:
        kind = socket.SocketKind[spec.type] if isinstance(spec.type, str) else socket.SocketKind(spec.type)
    except (KeyError, ValueError):
        kind = None
    if kind is None or kind not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        raise SocketSetupError(spec.name, "bind", f"unsupported type {spec.type!r}")
    return kind


def _passive_host(host: str) -> str | None:
    # '' and '*' mean "every address", which getaddrinfo spells as a None node with AI_PASSIVE.
    return None if host in ("", "*") else host


def resolve_inet(spec: SocketSpec) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """getaddrinfo() the section's host/port within its family; the first answer wins (as bind() would)."""
    family, kind = _family(spec), _type(spec)
    if spec.port is None:
        raise SocketSetupError(spec.name, "bind", "no port given for an inet socket")
    try:
        infos = socket.getaddrinfo(
            _passive_host(spec.host), spec.port, family, kind, spec.proto or 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise SocketSetupError(spec.name, f"resolve {spec.host!r} as {family.name}", exc) from None
    fam, _kind, _proto, _canon, sockaddr = infos[0]
    return fam, sockaddr


def _user_id(spec: SocketSpec) -> int:
    owner = spec.owner
    if owner is None:
        return -1
    if isinstance(owner, int):
        return owner
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise SocketSetupError(spec.name, "chown", f"unknown user {owner!r}") from None


def _group_id(spec: SocketSpec) -> int:
    group = spec.group
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketSetupError(spec.name, "chown", f"unknown group {group!r}") from None


@contextlib.contextmanager
def _umask(mask: int | None) -> Iterator[None]:
    # The umask is process-wide; the seam is synchronous and only the arbiter binds, so the window in which
    # another thread could create a file under this mask is this bind() alone.
    if mask is None:
        yield
        return
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _listening(path: str, kind: socket.SocketKind) -> bool:
    """Whether a socket is bound and alive at `path`: a connect to it is refused once its owner is gone."""
    with socket.socket(socket.AF_UNIX, kind) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # a full backlog, a wrong type (EPROTOTYPE), no permission: someone is there
        return True


def _prepare_unix_path(spec: SocketSpec, path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    # Only ever a socket file is removed, never a regular file or directory someone mistyped as path.
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketSetupError(spec.name, f"replace {path}", "the path exists and is not a socket")
    if not spec.replace and _listening(path, _type(spec)):
        raise SocketSetupError(
            spec.name, f"bind {path}", "a live socket listens there (set replace = true to take the path)"
        )
    # Without replace, only a stale socket file goes: the one a previous circusd left when it stopped or
    # died (nobody accepts on it), so circusd starts again without a hand in between.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SocketSetupError(spec.name, f"remove stale {path}", exc) from None


def bind_socket(spec: SocketSpec) -> socket.socket:
    """Create, configure, bind (and listen, for streams) the socket a section describes."""
    family, kind = _family(spec), _type(spec)
    if family == socket.AF_UNIX:
        if not spec.path:
            raise SocketSetupError(spec.name, "bind", "no path given for an AF_UNIX socket")
        where = spec.path
        if spec.path.startswith("@"):
            # unix(7) abstract namespace, spelled '@name' as systemd spells it: no file to replace or chown.
            sockaddr: Any = "\0" + spec.path[1:]
        else:
            sockaddr = spec.path
            _prepare_unix_path(spec, spec.path)
    else:
        family, sockaddr = resolve_inet(spec)
        host = f"[{sockaddr[0]}]" if family == socket.AF_INET6 else sockaddr[0]
        where = f"{host}:{sockaddr[1]}"
    try:
        sock = socket.socket(family, kind, spec.proto or 0)
    except OSError as exc:
        raise SocketSetupError(spec.name, f"create a {family.name}/{kind.name} socket", exc) from None
    try:
        _configure_and_bind(spec, sock, family, kind, sockaddr, where)
    except BaseException:
        sock.close()
        raise
    return sock


def _configure_and_bind(
    spec: SocketSpec,
    sock: socket.socket,
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    sockaddr: Any,
    where: str,
) -> None:
    sock.set_inheritable(False)
    try:
        if family != socket.AF_UNIX and kind == socket.SOCK_STREAM:
            # Restarting circusd must rebind while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spec.so_reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if spec.interface:
            name = spec.interface.encode()
            if len(name) >= _IFNAMSIZ:
                too_long = f"interface name {spec.interface!r} too long"
                raise SocketSetupError(spec.name, "bind to device", too_long)
            # socket(7): the option value is the NUL-terminated interface name; needs CAP_NET_RAW.
            sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, name + b"\0")
    except OSError as exc:
        raise SocketSetupError(spec.name, "set socket options", exc) from None
    try:
        with _umask(spec.umask):
            sock.bind(sockaddr)
    except OSError as exc:
        raise SocketSetupError(spec.name, f"bind {where}", exc) from None
    is_file = family == socket.AF_UNIX and not str(sockaddr).startswith("\0")
    if is_file and (spec.owner is not None or spec.group is not None):
        try:
            os.chown(spec.path or "", _user_id(spec), _group_id(spec))
        except OSError as exc:
            raise SocketSetupError(spec.name, f"chown {spec.path}", exc) from None
    if kind == socket.SOCK_STREAM:
        try:
            sock.listen(spec.backlog)
        except OSError as exc:
            raise SocketSetupError(spec.name, f"listen on {where}", exc) from None
    sock.setblocking(spec.blocking)


# -- socket activation (LISTEN_FDS) --------------------------------------------------------------------------


def parse_listen_env(environ: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """Pure part of sd_listen_fds_with_names(3): [(fd, name)] passed to ``pid``, or [] if none/not ours.

    Missing names default to 'unknown' (as systemd does when LISTEN_FDNAMES is unset); extra names are
    ignored. Several fds may share one name (a .socket unit with several Listen* lines).
    """
    if environ.get("LISTEN_PID", "").strip() != str(pid):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if count <= 0:
        return []
    raw_names = environ.get("LISTEN_FDNAMES")
    names = raw_names.split(":") if raw_names else []
    return [
        (SD_LISTEN_FDS_START + i, names[i] if i < len(names) and names[i] else "unknown")
        for i in range(count)
    ]


def listen_fds(environ: MutableMapping[str, str] | None = None, unset: bool = True) -> dict[str, list[int]]:
    """The fds systemd passed us, by name ({name: [fd, ...]}), each made CLOEXEC.

    Match sockets by name, never by position: systemd orders LISTEN_FDNAMES as it likes (fd-store entries
    and .socket units interleave). With ``unset`` the LISTEN_* variables are removed so no child inherits
    them (a child would otherwise see a LISTEN_PID that is not its own, or worse, reuse fds 3..).
    """
    env = os.environ if environ is None else environ
    passed = parse_listen_env(env, os.getpid())
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    result: dict[str, list[int]] = {}
    for fd, name in passed:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError:
            # EBADF: the variables promised an fd that is not open (a wrapper closed it); skip it.
            continue
        result.setdefault(name, []).append(fd)
    return result


def _same_host(wanted: str, actual: str) -> bool:
    with contextlib.suppress(ValueError):
        a, b = ipaddress.ip_address(wanted), ipaddress.ip_address(actual)
        if isinstance(b, ipaddress.IPv6Address) and b.ipv4_mapped is not None:
            b = b.ipv4_mapped
        return a == b
    return wanted == actual


def _try(parse: Callable[[SocketSpec], _T], spec: SocketSpec) -> _T | None:
    # adopt() warns about a section it cannot parse rather than refusing an fd systemd already bound.
    try:
        return parse(spec)
    except SocketSetupError:
        return None


def _enum_name(value: int) -> str:
    # socket.family/type fall back to a plain int for values the enum does not know (e.g. AF_NETLINK).
    return getattr(value, "name", str(value))


def _unix_name(addr: str | bytes) -> str:
    """A unix socket address as text; abstract names ('\\0name', returned as bytes) become '@name'."""
    if isinstance(addr, bytes):
        return "@" + addr[1:].decode(errors="replace") if addr.startswith(b"\0") else addr.decode()
    return "@" + addr[1:] if addr.startswith("\0") else addr


def adopt(spec: SocketSpec, fd: int, *, keep_flags: bool = False) -> tuple[socket.socket, list[str]]:
    """Wrap an inherited fd as the section's socket; a mismatch with the section is a warning, not an error.

    The section is what the user wrote and the fd is what systemd (or the previous circusd, through the fd
    store) actually bound; the running socket wins, the warnings say how the config drifted.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketSetupError(spec.name, f"adopt fd {fd}", exc) from None
    warnings: list[str] = []
    prefix = f"[socket:{spec.name}] inherited fd {fd}"
    want_family = _try(_family, spec)
    if want_family is not None and sock.family != want_family:
        warnings.append(f"{prefix} is {_enum_name(sock.family)}, the section says {want_family.name}")
    want_type = _try(_type, spec)
    if want_type is not None and sock.type != want_type:
        warnings.append(f"{prefix} is {_enum_name(sock.type)}, the section says {want_type.name}")
    if sock.type == socket.SOCK_STREAM and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        warnings.append(f"{prefix} is not listening")
    addr = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = _unix_name(addr)
        if spec.path and path != spec.path:
            warnings.append(f"{prefix} is bound to {path!r}, the section says path = {spec.path}")
    elif sock.family in (socket.AF_INET, socket.AF_INET6):
        host, port = addr[0], addr[1]
        if spec.port and port != spec.port:
            warnings.append(f"{prefix} is bound to port {port}, the section says port = {spec.port}")
        if want_family in (socket.AF_INET, socket.AF_INET6) and spec.port is not None:
            with contextlib.suppress(SocketSetupError):
                _fam, wanted = resolve_inet(spec)
                if not _same_host(wanted[0], host):
                    warnings.append(f"{prefix} is bound to host {host}, the section says host = {spec.host}")
    sock.set_inheritable(False)
    if not keep_flags:
        # O_NONBLOCK lives on the open file description that every worker shares: never flip it under
        # running workers (an in-place upgrade hands over sockets that are in use).
        sock.setblocking(spec.blocking)
    return sock, warnings


# -- listsockets ---------------------------------------------------------------------------------------------


def describe(sock: socket.socket, name: str, backlog: int | None = None) -> dict[str, Any]:
    """One `listsockets` entry: {fd, name, backlog, host, port} or {fd, name, path}, plus family and type.

    host/port are what the socket is really bound to (port 0 resolved, adopted fds as systemd bound them).
    """
    entry: dict[str, Any] = {"fd": sock.fileno(), "name": name}
    addr = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        entry["path"] = _unix_name(addr)
    else:
        entry["backlog"] = backlog if sock.type == socket.SOCK_STREAM else None  # no listen() for udp
        entry["host"] = addr[0]
        entry["port"] = addr[1]
    entry["family"] = _enum_name(sock.family)
    entry["type"] = _enum_name(sock.type)
    return entry


# -- systemd fd store ----------------------------------------------------------------------------------------


def check_fdname(name: str) -> str:
    """Return ``name`` if systemd accepts it as FDNAME= (printable ASCII, no ':', <= 255 chars)."""
    if not _FDNAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid systemd fd name (printable ASCII, no ':', 1-255 chars)")
    return name


def fdstore_push(notifier: Notifier, name: str, sock: socket.socket | int, replace: bool = False) -> bool:
    """Store a socket in systemd's fd store under ``name`` (needs FileDescriptorStoreMax= on the unit).

    A restarted circusd finds it again in LISTEN_FDS with that name in LISTEN_FDNAMES. systemd keeps every
    fd pushed under a name (it only folds duplicates of the same open file), so pushing a NEW socket for a
    name needs ``replace=True``, which sends FDSTOREREMOVE for the name first. FDPOLL=0 because a
    listening socket never gets POLLHUP and systemd need not poll it (older systemd ignores the field).
    Returns False without NOTIFY_SOCKET.
    """
    fd = sock if isinstance(sock, int) else sock.fileno()
    if replace:
        fdstore_remove(notifier, name)
    return notifier.send_fds({"FDSTORE": 1, "FDNAME": check_fdname(name), "FDPOLL": 0}, [fd])


def fdstore_remove(notifier: Notifier, name: str) -> bool:
    """Drop every fd stored under ``name`` (e.g. a [socket:*] section removed by a reload)."""
    return notifier.notify(FDSTOREREMOVE=1, FDNAME=check_fdname(name))
