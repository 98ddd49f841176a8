"""[socket:*] sections through the real circusd: bound before any watcher, mapped into the workers that
name them at the same fd number, `use_sockets`, `stdin_socket`, and `listsockets` with live queue figures."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Circusd, wait_for

# Writes what the worker holds: {fd: {family, type, addr, listening, blocking}} for every socket fd it has,
# plus the fd numbers it was told about on its command line, then waits to be stopped.
PROBE = """\
import fcntl, json, os, signal, socket, sys
out = {"argv": sys.argv[2:], "fds": {}}
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    with s:
        listening = s.type == socket.SOCK_STREAM and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        out["fds"][fd] = {"family": s.family.name, "type": s.type.name, "addr": repr(s.getsockname()),
                          "listening": bool(listening),
                          "blocking": not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    json.dump(out, fh)
os.rename(tmp, sys.argv[1])
while True:
    signal.pause()
"""


def _probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return path


def _report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = wait_for(lambda: path.exists() and json.loads(path.read_text()), what=str(path))
    return data


def _sockets(daemon: Circusd) -> dict[str, dict[str, Any]]:
    reply = daemon.call("listsockets")
    assert reply["status"] == "ok", reply
    return {s["name"]: s for s in reply["sockets"]}


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


def test_every_kind_of_section_is_bound_before_the_watchers_and_named_fds_reach_only_their_workers(
    circusd: Callable[..., Circusd], tmp_path: Path
) -> None:
    probe = _probe(tmp_path)
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # a socket file left by a crashed circusd: `replace = true` removes it
    v6 = "[socket:v6]\nhost = ::1\nport = 0\nfamily = AF_INET6\n" if _has_ipv6() else ""
    sections = f"""
[socket:web]
host = 127.0.0.1
port = 0
backlog = 7
so_reuseport = true
interface = lo

[socket:local]
path = {stale}
replace = true
umask = 007
owner = {os.getuid()}
group = {os.getgid()}

[socket:dgram]
host = 127.0.0.1
port = 0
type = SOCK_DGRAM

[socket:blocky]
host = 127.0.0.1
port = 0
blocking = true

{v6}
[watcher:named]
cmd = {sys.executable} {probe} {tmp_path}/named.json $(circus.sockets.web) $(circus.sockets.dgram)
sockets = web, dgram

[watcher:old]
cmd = {sys.executable} {probe} {tmp_path}/old.json
use_sockets = true

[watcher:stdin]
cmd = {sys.executable} {probe} {tmp_path}/stdin.json
stdin_socket = local
"""
    daemon = circusd(sections)
    socks = _sockets(daemon)
    assert set(socks) == {"web", "local", "dgram", "blocky"} | ({"v6"} if v6 else set())
    assert all(s["origin"] == "bound" for s in socks.values())
    web, local, dgram = socks["web"], socks["local"], socks["dgram"]
    assert web["host"] == "127.0.0.1" and web["port"] > 0 and web["backlog"] == 7
    assert (web["queued"], web["established"]) == (0, 0)
    assert local["path"] == str(stale) and local["backlog"] is not None and local["queued"] == 0
    assert dgram["type"] == "SOCK_DGRAM" and dgram["queued"] is None and dgram["backlog"] is None
    if v6:
        assert socks["v6"]["family"] == "AF_INET6" and socks["v6"]["host"] == "::1"
    st = os.stat(stale)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o770  # umask 007 at bind
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())

    # $(circus.sockets.NAME) is the fd number, and the worker has that very socket at that number.
    named = _report(tmp_path / "named.json")
    assert named["argv"] == [str(web["fd"]), str(dgram["fd"])]
    worker_socks = {int(fd): info for fd, info in named["fds"].items()}
    assert set(worker_socks) == {web["fd"], dgram["fd"]}, "a watcher got sockets it did not name"
    assert worker_socks[web["fd"]]["listening"] and f"{web['port']}" in worker_socks[web["fd"]]["addr"]
    assert worker_socks[dgram["fd"]]["type"] == "SOCK_DGRAM"
    assert not worker_socks[web["fd"]]["blocking"]  # blocking = false (the default) is O_NONBLOCK

    # use_sockets alone (old Circus files): every socket.
    old = {int(fd) for fd in _report(tmp_path / "old.json")["fds"]}
    assert old == {s["fd"] for s in socks.values()}
    assert {int(fd): i for fd, i in _report(tmp_path / "old.json")["fds"].items()}[socks["blocky"]["fd"]][
        "blocking"
    ]

    # stdin_socket: the socket is the worker's fd 0 (inetd style), and also at its own number.
    stdin = {int(fd): info for fd, info in _report(tmp_path / "stdin.json")["fds"].items()}
    assert stdin[0]["family"] == "AF_UNIX" and str(stale) in stdin[0]["addr"] and stdin[0]["listening"]
    assert set(stdin) == {0, local["fd"]}


def test_listsockets_reports_the_accept_queue_and_connections(
    circusd: Callable[..., Circusd], tmp_path: Path, clients: list[socket.socket]
) -> None:
    # The watcher holds the socket but never accepts: connections pile up in the kernel's accept queue.
    sections = """
[socket:busy]
host = 127.0.0.1
port = 0
backlog = 16

[socket:unixbusy]
path = {path}

[watcher:lazy]
cmd = sleep 600
sockets = busy, unixbusy
""".format(path=tmp_path / "busy.sock")
    daemon = circusd(sections)
    socks = _sockets(daemon)
    port = socks["busy"]["port"]
    for _ in range(3):
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    for _ in range(2):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(tmp_path / "busy.sock"))
        clients.append(c)
    socks = _sockets(daemon)
    assert (socks["busy"]["queued"], socks["busy"]["backlog"], socks["busy"]["established"]) == (3, 16, 3)
    assert socks["unixbusy"]["queued"] == 2 and socks["unixbusy"]["established"] is None


def test_circusd_starts_again_on_the_unix_socket_path_its_last_run_left(circusd: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    sections = f"[socket:app]\npath = {path}\n\n[watcher:w]\ncmd = sleep 600\nuse_sockets = true\n"
    first = circusd(sections)
    first.stop()  # a clean stop; the socket file stays (systemd's fd store may still hold the socket)
    assert stat.S_ISSOCK(path.lstat().st_mode)
    second = circusd(sections)  # no `replace`: the stale file (nobody listens) is taken
    assert _sockets(second)["app"]["path"] == str(path)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))


def test_reloadconfig_binds_new_sockets_first_and_says_what_it_cannot_apply(circusd: Any) -> None:
    sections = (
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n\n"
        "[watcher:a]\ncmd = sleep 600\n\n[watcher:b]\ncmd = sleep 600\n"
    )
    d = circusd(sections)
    pids = {w: d.call("list", name=w)["pids"] for w in ("a", "b")}
    port = _sockets(d)["web"]["port"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # a removed, b changed, c added, and a new socket on a port in use: nothing may change.
        text = d.path.read_text()
        head = text[: text.index("[socket:web]")]
        d.path.write_text(
            head + "[socket:web]\nhost = 127.0.0.1\nport = 0\n\n"
            f"[socket:new]\nhost = 127.0.0.1\nport = {busy}\n\n"
            "[watcher:b]\ncmd = sleep 601\n\n[watcher:c]\ncmd = sleep 600\n"
        )
        reply = d.call("reloadconfig", waiting=True)
        assert reply["status"] == "error" and "new" in reply["reason"], reply
        assert sorted(d.call("list")["watchers"]) == ["a", "b"]
        assert {w: d.call("list", name=w)["pids"] for w in ("a", "b")} == pids
        assert sorted(_sockets(d)) == ["web"]
    # A changed socket is not re-bound live: reloadconfig says so, each time, and the listener stays.
    d.path.write_text(head + "[socket:web]\nhost = 127.0.0.1\nport = 0\nbacklog = 7\n\n"
                      "[watcher:a]\ncmd = sleep 600\n\n[watcher:b]\ncmd = sleep 600\n")
    for _ in range(2):
        reply = d.call("reloadconfig", waiting=True)
        assert reply["status"] == "ok" and "socket:web" in reply["not_applied"], reply
    assert _sockets(d)["web"]["port"] == port
    assert "[socket:web] changed: not applied live, restart circusd to apply" in d.log_text()
    import io

    from circus_linux.cli import circusctl

    out = io.StringIO()
    assert circusctl.main(["--endpoint", d.endpoint, "reloadconfig", "--waiting"], out, io.StringIO()) == 0
    assert out.getvalue() == "ok (not applied until circusd restarts: socket:web)\n"
