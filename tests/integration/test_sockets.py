"""kernel/sockets.py and kernel/sockdiag.py against real sockets, real children and the real kernel."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circus_linux.kernel import sockdiag
from circus_linux.kernel.sockets import SocketSetupError, SocketSpec, adopt, bind_socket, describe

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 10.0


@dataclasses.dataclass(frozen=True)
class Section:
    """Stands in for config's SocketConfig (same field names and defaults)."""

    name: str = "web"
    host: str = "127.0.0.1"
    port: int | None = 0
    path: str | None = None
    family: str = "AF_INET"
    type: str = "SOCK_STREAM"
    proto: int = 0
    backlog: int = 2048
    umask: int | None = None
    replace: bool = False
    so_reuseport: bool = False
    interface: str | None = None
    blocking: bool = False
    owner: str | None = None
    group: str | None = None
    systemd: str = "no"


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def _bind(closing: list[socket.socket], **kw: object) -> socket.socket:
    sock = bind_socket(Section(**kw))  # type: ignore[arg-type]
    closing.append(sock)
    return sock


def _roundtrip_stream(sock: socket.socket, addr: Any, family: int = socket.AF_INET) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(DEADLINE)
        client.connect(addr)
        sock.settimeout(DEADLINE)
        conn, _ = sock.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- bind ----------------------------------------------------------------------------------------------------


def test_tcp4_binds_listens_and_accepts(closing: list[socket.socket]) -> None:
    sock = _bind(closing, backlog=7)
    assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    assert not sock.get_inheritable()
    assert sock.getblocking() is False
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    _roundtrip_stream(sock, sock.getsockname())


def test_tcp_localhost_is_resolved_within_the_family(closing: list[socket.socket]) -> None:
    sock = _bind(closing, host="localhost", blocking=True)
    assert sock.getsockname()[0] == "127.0.0.1"
    assert sock.getblocking() is True


def test_tcp6_binds_and_accepts(closing: list[socket.socket]) -> None:
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    sock = _bind(closing, host="::1", family="AF_INET6")
    assert sock.family == socket.AF_INET6
    _roundtrip_stream(sock, sock.getsockname()[:2], socket.AF_INET6)


def test_udp_binds_and_receives(closing: list[socket.socket]) -> None:
    sock = _bind(closing, type="SOCK_DGRAM", blocking=True)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"hello", sock.getsockname())
    sock.settimeout(DEADLINE)
    assert sock.recv(16) == b"hello"


def test_unix_stream_binds_with_umask(closing: list[socket.socket], tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    before = os.umask(0o022)
    os.umask(before)
    sock = _bind(closing, family="AF_UNIX", path=path, umask=0o077)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert os.umask(before) == before, "the process umask must be restored after bind"
    _roundtrip_stream(sock, path, socket.AF_UNIX)


def test_unix_abstract_name(closing: list[socket.socket]) -> None:
    name = f"@circus-test-{os.getpid()}-abstract"
    sock = _bind(closing, family="AF_UNIX", path=name, umask=0o077, owner="root")
    assert describe(sock, "abs")["path"] == name
    _roundtrip_stream(sock, "\0" + name[1:], socket.AF_UNIX)
    adopted, warnings = adopt(Section(family="AF_UNIX", path=name), _dup(sock))
    closing.append(adopted)
    assert warnings == []


def test_unix_stale_path_taken_live_one_needs_replace(closing: list[socket.socket], tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays behind, as after circusd stopped or crashed: nobody listens on it
    sock = _bind(closing, family="AF_UNIX", path=path)
    _roundtrip_stream(sock, path, socket.AF_UNIX)
    # A socket still listening there (another program's, another circusd's) is not taken silently.
    with pytest.raises(SocketSetupError, match=r"\[socket:web\].*a live socket listens.*replace = true"):
        _bind(closing, family="AF_UNIX", path=path)
    sock.close()
    live = socket.socket(socket.AF_UNIX)
    closing.append(live)
    live.bind(path + ".2")
    live.listen()
    taken = _bind(closing, family="AF_UNIX", path=path + ".2", replace=True)
    _roundtrip_stream(taken, path + ".2", socket.AF_UNIX)


def test_unix_replace_never_removes_a_regular_file(closing: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("data")
    for replace in (True, False):
        with pytest.raises(SocketSetupError, match="not a socket"):
            _bind(closing, family="AF_UNIX", path=str(path), replace=replace)
    assert path.read_text() == "data"


def test_unix_owner_and_group(closing: list[socket.socket], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    try:
        user, group = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    except KeyError:
        pytest.skip("no nobody/nogroup on this machine")
    path = str(tmp_path / "owned.sock")
    _bind(closing, family="AF_UNIX", path=path, owner="nobody", group="nogroup")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (user.pw_uid, group.gr_gid)


def test_unix_unknown_owner_is_a_setup_error(closing: list[socket.socket], tmp_path: Path) -> None:
    with pytest.raises(SocketSetupError, match="unknown user"):
        _bind(closing, family="AF_UNIX", path=str(tmp_path / "x.sock"), owner="no-such-user-circus")


def test_so_reuseport_allows_two_binds(closing: list[socket.socket]) -> None:
    first = _bind(closing, so_reuseport=True)
    port = first.getsockname()[1]
    second = _bind(closing, port=port, so_reuseport=True)
    assert second.getsockname() == first.getsockname()
    assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_port_in_use_is_a_setup_error_naming_section(closing: list[socket.socket]) -> None:
    first = _bind(closing)
    port = first.getsockname()[1]
    with pytest.raises(SocketSetupError) as info:
        _bind(closing, name="api", port=port)
    assert info.value.errno == errno.EADDRINUSE
    assert str(info.value).startswith(f"[socket:api] cannot bind 127.0.0.1:{port}:")


def test_interface_lo_binding(closing: list[socket.socket]) -> None:
    if os.geteuid() != 0:
        pytest.skip("SO_BINDTODEVICE needs CAP_NET_RAW")
    sock = _bind(closing, interface="lo")
    bound = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
    assert bound.rstrip(b"\0") == b"lo"
    _roundtrip_stream(sock, sock.getsockname())


def test_unknown_interface_is_a_setup_error(closing: list[socket.socket]) -> None:
    if os.geteuid() != 0:
        pytest.skip("SO_BINDTODEVICE needs CAP_NET_RAW")
    with pytest.raises(SocketSetupError, match="set socket options") as info:
        _bind(closing, interface="nosuchif0")
    assert info.value.errno == errno.ENODEV


def test_inet_without_port_is_a_setup_error(closing: list[socket.socket]) -> None:
    with pytest.raises(SocketSetupError, match="no port"):
        _bind(closing, port=None)


def test_numeric_family_type_and_ids_are_accepted(closing: list[socket.socket], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to uid 0 needs root")
    path = str(tmp_path / "n.sock")
    sock = _bind(
        closing, family=int(socket.AF_UNIX), type=int(socket.SOCK_DGRAM), path=path, owner=0, group=0
    )
    assert (sock.family, sock.type) == (socket.AF_UNIX, socket.SOCK_DGRAM)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (0, 0)


def test_config_socketconfig_satisfies_the_protocol(closing: list[socket.socket]) -> None:
    try:
        from circus_linux.config.model import SocketConfig
    except ImportError:
        pytest.skip("circus_linux.config.model is not there yet")
    spec: SocketSpec = SocketConfig(name="web", host="127.0.0.1", port=0)  # mypy checks the contract
    sock = bind_socket(spec)
    closing.append(sock)
    _roundtrip_stream(sock, sock.getsockname())


# -- describe ------------------------------------------------------------------------------------------------


def test_describe_inet_and_unix(closing: list[socket.socket], tmp_path: Path) -> None:
    tcp = _bind(closing)
    port = tcp.getsockname()[1]
    assert describe(tcp, "web", 2048) == {
        "fd": tcp.fileno(),
        "name": "web",
        "backlog": 2048,
        "host": "127.0.0.1",
        "port": port,
        "family": "AF_INET",
        "type": "SOCK_STREAM",
    }
    path = str(tmp_path / "d.sock")
    unix = _bind(closing, family="AF_UNIX", path=path)
    assert describe(unix, "ctl") == {
        "fd": unix.fileno(),
        "name": "ctl",
        "path": path,
        "family": "AF_UNIX",
        "type": "SOCK_STREAM",
    }


# -- LISTEN_FDS hand-off -------------------------------------------------------------------------------------

_CHILD = r"""
import fcntl, json, os, socket, sys
from circus_linux.kernel.sockets import listen_fds
fds = listen_fds()
report = {
    "pid": os.getpid(),
    "fds": fds,
    "left_in_env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "cloexec": {
        str(fd): bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for v in fds.values() for fd in v
    },
}
for fd in fds.get("web", []):
    s = socket.socket(fileno=fd)
    s.setblocking(True)
    conn, _ = s.accept()
    conn.sendall(b"served by %d" % os.getpid())
    conn.close()
print(json.dumps(report), flush=True)
"""


def _activate(socks: list[socket.socket], names: str, pid_expr: str = "$$") -> subprocess.Popen[str]:
    """Start _CHILD with ``socks`` as fds 3.. and LISTEN_* set, as systemd would, without Python in the fork.

    Each socket is first duplicated to a high fd (so dup'ing onto 3.. cannot clobber a source), then the
    shell moves them into place and execs Python with its own pid as LISTEN_PID. bash, because dash only
    accepts single-digit fds in redirections.
    """
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is needed for the fd hand-off trampoline")
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 20) for s in socks]
    moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(high))
    script = f'exec {moves}; LISTEN_PID={pid_expr} exec "$@"'
    env = dict(os.environ, LISTEN_FDS=str(len(socks)), LISTEN_FDNAMES=names)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        return subprocess.Popen(
            [bash, "-c", script, "bash", sys.executable, "-c", _CHILD],
            env=env,
            pass_fds=high,
            stdout=subprocess.PIPE,
            text=True,
        )
    finally:
        for fd in high:
            os.close(fd)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def test_listen_fds_handoff_matches_names_not_positions(
    closing: list[socket.socket], tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    ctl = _bind(closing, name="ctl", family="AF_UNIX", path=str(tmp_path / "ctl.sock"))
    web = _bind(closing)
    # ctl first on purpose: the child must find "web" by name at fd 4.
    child = _activate([ctl, web], "ctl:web")
    children.append(child)
    with socket.create_connection(web.getsockname(), timeout=DEADLINE) as c:
        reply = c.recv(64).decode()
    out, _ = child.communicate(timeout=DEADLINE)
    report = json.loads(out)
    assert reply == f"served by {report['pid']}"
    assert report["fds"] == {"ctl": [3], "web": [4]}
    assert report["left_in_env"] == [], "LISTEN_* must not reach the child's own children"
    assert report["cloexec"] == {"3": True, "4": True}


def test_listen_fds_for_another_pid_are_ignored(
    closing: list[socket.socket], children: list[subprocess.Popen[str]]
) -> None:
    web = _bind(closing)
    child = _activate([web], "web", pid_expr="1")
    children.append(child)
    out, _ = child.communicate(timeout=DEADLINE)
    report = json.loads(out)
    assert report["fds"] == {}
    assert report["left_in_env"] == []


def test_listen_fds_same_name_several_fds(
    closing: list[socket.socket], children: list[subprocess.Popen[str]]
) -> None:
    a, b = _bind(closing, type="SOCK_DGRAM"), _bind(closing, type="SOCK_DGRAM")
    child = _activate([a, b], "dns:dns")
    children.append(child)
    out, _ = child.communicate(timeout=DEADLINE)
    assert json.loads(out)["fds"] == {"dns": [3, 4]}


def test_listen_fds_from_systemd_socket_activate(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    binary = shutil.which("systemd-socket-activate")
    if binary is None:
        pytest.skip("systemd-socket-activate is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctl = str(tmp_path / "ctl.sock")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [binary, "-l", f"127.0.0.1:{port}", "-l", ctl, "--fdname=web:ctl", sys.executable, "-c", _CHILD],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    children.append(child)
    # v252 has no --now: it execs the command only when the first connection arrives, so connect first.
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with conn:
        reply = conn.recv(64).decode()
    out, _ = child.communicate(timeout=DEADLINE)
    report = json.loads(out)
    assert reply == f"served by {report['pid']}"
    assert sorted(report["fds"]) == ["ctl", "web"]
    assert sorted(fd for fds in report["fds"].values() for fd in fds) == [3, 4]


# -- adopt ---------------------------------------------------------------------------------------------------


def _dup(sock: socket.socket) -> int:
    return fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)


def test_adopt_matching_socket_has_no_warnings(closing: list[socket.socket]) -> None:
    orig = _bind(closing, blocking=True)
    port = orig.getsockname()[1]
    sock, warnings = adopt(Section(port=port), _dup(orig))
    closing.append(sock)
    assert warnings == []
    assert sock.getsockname() == orig.getsockname()
    assert sock.getblocking() is False and not sock.get_inheritable()


def test_adopt_port_mismatch_warns_and_keeps_the_socket(closing: list[socket.socket]) -> None:
    orig = _bind(closing)
    port = orig.getsockname()[1]
    other = port + 1 if port < 65535 else port - 1
    sock, warnings = adopt(Section(port=other), _dup(orig))
    closing.append(sock)
    assert len(warnings) == 1
    assert f"bound to port {port}, the section says port = {other}" in warnings[0]
    assert warnings[0].startswith("[socket:web]")
    _roundtrip_stream(sock, orig.getsockname())


def test_adopt_family_type_and_host_mismatch_warn(closing: list[socket.socket], tmp_path: Path) -> None:
    orig = _bind(closing, type="SOCK_DGRAM")
    port = orig.getsockname()[1]
    section = Section(family="AF_UNIX", path=str(tmp_path / "nope.sock"), port=port)
    sock, warnings = adopt(section, _dup(orig))
    closing.append(sock)
    text = "\n".join(warnings)
    assert "is AF_INET, the section says AF_UNIX" in text
    assert "is SOCK_DGRAM, the section says SOCK_STREAM" in text

    sock2, warnings2 = adopt(Section(host="0.0.0.0", port=port, type="SOCK_DGRAM"), _dup(orig))
    closing.append(sock2)
    assert warnings2 == [
        f"[socket:web] inherited fd {sock2.fileno()} is bound to host 127.0.0.1, "
        "the section says host = 0.0.0.0"
    ]


def test_adopt_a_non_socket_fd_is_an_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC)
    try:
        with pytest.raises(SocketSetupError, match=r"\[socket:web\] cannot adopt fd"):
            adopt(Section(), fd)
    finally:
        os.close(fd)


# -- sock_diag -----------------------------------------------------------------------------------------------


def _poll_queue(predicate: object, **kw: object) -> sockdiag.QueueDepths:
    deadline = time.monotonic() + DEADLINE
    while True:
        result = sockdiag.queue_depths(**kw)  # type: ignore[arg-type]
        if not result.available:
            pytest.skip(f"sock_diag unavailable: {result.reason}")
        if predicate(result) or time.monotonic() > deadline:  # type: ignore[operator]
            return result
        time.sleep(0.01)  # polling against a deadline: the handshake completes in the kernel


def test_sockdiag_accept_queue_depth_by_port_and_inode(closing: list[socket.socket]) -> None:
    listener = _bind(closing, backlog=16)
    port = listener.getsockname()[1]
    n = 5
    for _ in range(n):
        closing.append(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))

    def ready(r: sockdiag.QueueDepths) -> bool:
        return any(q.queued == n for q in r.by_port().get(port, []))

    result = _poll_queue(ready, ports=[port])
    (q,) = result.by_port()[port]
    assert (q.queued, q.backlog, q.established) == (n, 16, n)
    assert q.inode == sockdiag.socket_inode(listener)
    assert q.host == "127.0.0.1" and q.family == "AF_INET"

    listener.setblocking(True)
    conn, _ = listener.accept()
    closing.append(conn)
    after = _poll_queue(lambda r: r.by_inode()[q.inode].queued == n - 1, inodes=[q.inode])
    q2 = after.by_inode()[q.inode]
    assert (q2.queued, q2.established) == (n - 1, n), "accepted connections still count as established"


def test_sockdiag_unix_listener_by_inode(closing: list[socket.socket], tmp_path: Path) -> None:
    path = str(tmp_path / "q.sock")
    listener = _bind(closing, family="AF_UNIX", path=path, backlog=9)
    for _ in range(3):
        c = socket.socket(socket.AF_UNIX)
        closing.append(c)
        c.connect(path)
    inode = sockdiag.socket_inode(listener)
    result = _poll_queue(lambda r: inode in r.by_inode(), inodes=[inode])
    q = result.by_inode()[inode]
    assert (q.family, q.path, q.queued, q.backlog, q.established) == ("AF_UNIX", path, 3, 9, None)


def test_sockdiag_unknown_port_reports_nothing() -> None:
    # Port 1 is privileged and unused in a test environment; the answer is an empty, available result.
    result = sockdiag.queue_depths(ports=[1])
    if not result.available:
        pytest.skip(f"sock_diag unavailable: {result.reason}")
    assert result.sockets == ()


def test_sockdiag_without_pyroute2_says_unavailable() -> None:
    # A real interpreter in which importing pyroute2 fails, as on a host without it installed.
    code = (
        "import sys, json; sys.modules['pyroute2'] = None\n"
        "from circus_linux.kernel.sockdiag import queue_depths\n"
        "print(json.dumps(queue_depths(ports=[1]).to_dict()))"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=DEADLINE, check=True
    ).stdout
    result = json.loads(out)
    assert result["available"] is False and result["sockets"] == []
    assert result["reason"].startswith("pyroute2 unavailable")
