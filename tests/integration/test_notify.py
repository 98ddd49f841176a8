"""kernel/notify.py and the fd-store helpers against real AF_UNIX datagram sockets and real children."""

from __future__ import annotations

import array
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fill_datagram_queue, wait_for

from circus_linux.kernel.notify import Notifier, NotifyMessage, NotifyServer, parse_notify
from circus_linux.kernel.sockets import fdstore_push, fdstore_remove

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 10.0


class Receiver:
    """A test-owned NOTIFY_SOCKET, as systemd holds one: AF_UNIX datagram with SO_PASSCRED."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(DEADLINE)

    def recv(self) -> tuple[dict[str, str], int, list[int]]:
        data, anc, _flags, _addr = self.sock.recvmsg(
            4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC
        )
        pid, fds = 0, array.array("i")
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
            elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", cdata[: len(cdata) - len(cdata) % 4]))
        return parse_notify(data), pid, list(fds)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(str(tmp_path / "notify.sock"))
    yield r
    r.close()


# -- Notifier (client) ---------------------------------------------------------------------------------------


def test_notifier_sends_fields_with_our_pid(receiver: Receiver, tmp_path: Path) -> None:
    with Notifier(str(tmp_path / "notify.sock")) as n:
        assert n.notify(READY=1, STATUS="2 watchers up")
        assert n.notify("WATCHDOG=1")
    fields, pid, fds = receiver.recv()
    assert fields == {"READY": "1", "STATUS": "2 watchers up"}
    assert pid == os.getpid() and fds == []
    assert receiver.recv()[0] == {"WATCHDOG": "1"}


def test_notifier_abstract_address() -> None:
    address = f"@circus-test-{uuid.uuid4().hex}"
    r = Receiver(address)
    try:
        with Notifier(address) as n:
            n.notify(STATUS="abstract")
        fields, pid, _ = r.recv()
        assert fields == {"STATUS": "abstract"} and pid == os.getpid()
    finally:
        r.close()


def test_notifier_without_notify_socket_is_a_noop() -> None:
    env: dict[str, str] = {}
    n = Notifier.from_environ(env)
    assert not n.enabled
    assert n.notify(READY=1) is False
    assert n.send_fds("FDSTORE=1", [0]) is False


def test_notifier_from_environ_can_unset(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    n = Notifier.from_environ(env, unset=True)
    assert n.enabled and n.address == str(tmp_path / "notify.sock")
    assert "NOTIFY_SOCKET" not in env


def test_notifier_to_a_vanished_receiver_raises(tmp_path: Path) -> None:
    with Notifier(str(tmp_path / "gone.sock")) as n, pytest.raises(FileNotFoundError):
        n.notify(READY=1)


def test_notifier_with_a_full_receiver_drops_or_times_out_never_hangs(
    receiver: Receiver, tmp_path: Path
) -> None:
    address = str(tmp_path / "notify.sock")
    assert 0 < fill_datagram_queue(address) < 100_000
    with Notifier(address, timeout=0.3) as n:
        assert n.notify_or_drop(STATUS="dropped") is False  # at once
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=r"stayed full for 0\.3s"):
            n.notify(READY=1)
        assert time.monotonic() - t0 >= 0.3


def test_notifier_waits_for_room_in_a_full_receiver(receiver: Receiver, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    filled = fill_datagram_queue(address)
    sender = threading.get_native_id()

    def read_one_once_the_sender_waits() -> None:
        # the sender's thread sleeps in poll(2) for room: only then is one datagram taken off the queue
        wchan = Path(f"/proc/self/task/{sender}/wchan")
        wait_for(lambda: "poll" in wchan.read_text(), DEADLINE, 0.001, "the sender waiting in poll")
        receiver.recv()

    reader = threading.Thread(target=read_one_once_the_sender_waits)
    reader.start()
    try:
        with Notifier(address, timeout=DEADLINE) as n:
            assert n.notify(READY=1) is True
    finally:
        reader.join()
    got = [receiver.recv()[0] for _ in range(filled)]  # the rest of the fill, then ours
    assert got[-1] == {"READY": "1"}


def test_notifier_reconnects_when_the_receiver_socket_is_made_anew(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    first = Receiver(address)
    with Notifier(address) as n:
        assert n.notify(STATUS="one")
        assert first.recv()[0] == {"STATUS": "one"}
        first.close()
        os.unlink(address)
        second = Receiver(address)  # systemd restarted its socket at the same path
        try:
            assert n.notify(STATUS="two")
            assert second.recv()[0] == {"STATUS": "two"}
        finally:
            second.close()


# -- fd store ------------------------------------------------------------------------------------------------


def test_fdstore_push_passes_a_usable_listening_socket(receiver: Receiver, tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with Notifier(str(tmp_path / "notify.sock")) as n:
        assert fdstore_push(n, "web", listener)
    fields, pid, fds = receiver.recv()
    assert fields == {"FDSTORE": "1", "FDNAME": "web", "FDPOLL": "0"}
    assert pid == os.getpid() and len(fds) == 1
    stored = socket.socket(fileno=fds[0])
    try:
        assert fds[0] != listener.fileno()
        assert stored.getsockname() == listener.getsockname()
        # The stored duplicate is the same listening socket: a connection queued on it is accepted there.
        listener.close()
        with socket.create_connection(stored.getsockname(), timeout=DEADLINE) as c:
            stored.settimeout(DEADLINE)
            conn, _ = stored.accept()
            with conn:
                c.sendall(b"x")
                assert conn.recv(1) == b"x"
    finally:
        stored.close()


def test_fdstore_push_replace_and_remove(receiver: Receiver, tmp_path: Path) -> None:
    a, b = socket.socketpair()
    try:
        with Notifier(str(tmp_path / "notify.sock")) as n:
            assert fdstore_push(n, "ctl", a, replace=True)
            assert fdstore_remove(n, "ctl")
        assert receiver.recv()[0] == {"FDSTOREREMOVE": "1", "FDNAME": "ctl"}
        fields, _, fds = receiver.recv()
        assert fields["FDSTORE"] == "1" and len(fds) == 1
        os.close(fds[0])
        assert receiver.recv()[0] == {"FDSTOREREMOVE": "1", "FDNAME": "ctl"}
        with pytest.raises(ValueError):
            fdstore_push(n, "bad:name", a)
    finally:
        a.close()
        b.close()


# -- NotifyServer --------------------------------------------------------------------------------------------


def _drain_until(server: NotifyServer, want: int, keep_fds: bool = False) -> list[NotifyMessage]:
    got: list[NotifyMessage] = []
    deadline = time.monotonic() + DEADLINE
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([server], [], [], left)
        if readable:
            got.extend(server.recv(keep_fds=keep_fds))
    return got


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NotifyServer]:
    s = NotifyServer(str(tmp_path / "workers.sock"))
    yield s
    s.close()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


_RAW_CHILD = r"""
import os, socket
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warming up", "\0" + addr[1:] if addr[0] == "@" else addr)
s.sendto(b"READY=1\nSTATUS=serving %d" % os.getpid(), "\0" + addr[1:] if addr[0] == "@" else addr)
"""


def test_server_attributes_ready_to_the_child_pid(
    server: NotifyServer, children: list[subprocess.Popen[bytes]]
) -> None:
    assert server.address.endswith("workers.sock")
    assert stat.S_IMODE(os.stat(server.address).st_mode) == 0o666
    child = subprocess.Popen(
        [sys.executable, "-c", _RAW_CHILD], env=dict(os.environ, NOTIFY_SOCKET=server.address)
    )
    children.append(child)
    msgs = _drain_until(server, 2)
    assert child.wait(timeout=DEADLINE) == 0
    assert [m.fields for m in msgs] == [
        {"STATUS": "warming up"},
        {"READY": "1", "STATUS": f"serving {child.pid}"},
    ]
    assert {m.pid for m in msgs} == {child.pid}
    assert msgs[0].uid == os.getuid() and msgs[0].fds == ()


def test_one_abstract_server_shared_by_several_workers(children: list[subprocess.Popen[bytes]]) -> None:
    with NotifyServer(abstract=True) as server:
        assert server.address.startswith("@")
        env = dict(os.environ, NOTIFY_SOCKET=server.address)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        code = "from circus_linux.kernel.notify import Notifier; Notifier.from_environ().notify(READY=1)"
        for _ in range(3):
            children.append(subprocess.Popen([sys.executable, "-c", code], env=env))
        msgs = _drain_until(server, 3)
        assert all(c.wait(timeout=DEADLINE) == 0 for c in children)
        assert sorted(m.pid for m in msgs) == sorted(c.pid for c in children)
        assert all(m.fields == {"READY": "1"} for m in msgs)


def test_systemd_notify_binary_is_attributed(
    server: NotifyServer, children: list[subprocess.Popen[bytes]]
) -> None:
    binary = shutil.which("systemd-notify")
    if binary is None:
        pytest.skip("systemd-notify is not installed")
    child = subprocess.Popen(
        [binary, "--ready", "--status=from systemd-notify"],
        env=dict(os.environ, NOTIFY_SOCKET=server.address),
    )
    children.append(child)
    msgs = _drain_until(server, 1)
    child.wait(timeout=DEADLINE)
    assert msgs and msgs[0].fields.get("READY") == "1"
    assert msgs[0].fields.get("STATUS") == "from systemd-notify"
    # systemd-notify speaks for its caller: it puts its parent's pid (us) in SCM_CREDENTIALS, which the
    # kernel allows a privileged sender; unprivileged, it falls back to its own pid.
    if os.geteuid() == 0:
        assert msgs[0].pid == os.getpid()
    else:
        assert msgs[0].pid in (os.getpid(), child.pid)


def test_server_closes_passed_fds_it_does_not_keep(server: NotifyServer) -> None:
    a, b = socket.socketpair()
    try:
        with Notifier(server.address) as n:
            n.send_fds("FDSTORE=1\nFDNAME=x", [a.fileno()])
        a.close()  # now the only other reference to this end is the one in flight to the server
        msgs = _drain_until(server, 1)
        assert msgs[0].fields == {"FDSTORE": "1", "FDNAME": "x"} and msgs[0].fds == ()
        b.settimeout(DEADLINE)
        assert b.recv(1) == b"", "the server must have closed the passed fd (peer sees EOF)"
    finally:
        b.close()


def test_server_keeps_fds_when_asked(server: NotifyServer) -> None:
    a, b = socket.socketpair()
    try:
        with Notifier(server.address) as n:
            n.send_fds({"FDSTORE": 1}, [a.fileno()])
        msgs = _drain_until(server, 1, keep_fds=True)
        (fd,) = msgs[0].fds
        with socket.socket(fileno=fd) as kept:
            kept.sendall(b"k")
            assert b.recv(1) == b"k"
    finally:
        a.close()
        b.close()


def test_server_drops_oversized_datagrams(server: NotifyServer) -> None:
    with Notifier(server.address) as n:
        n.notify(STATUS="x" * 10000)
        n.notify(READY=1)
    msgs = _drain_until(server, 1)
    assert [m.fields for m in msgs] == [{"READY": "1"}]
    assert server.dropped == 1


def test_server_close_removes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    s = NotifyServer(str(path))
    assert path.exists()
    s.close()
    assert not path.exists()


def test_server_replaces_stale_socket_but_not_files(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old.bind(str(stale))
    old.close()
    with NotifyServer(str(stale)) as s:
        assert s.address == str(stale)
    precious = tmp_path / "file"
    precious.write_text("keep")
    with pytest.raises(FileExistsError):
        NotifyServer(str(precious))
    assert precious.read_text() == "keep"


def test_default_path_prefers_runtime_directory() -> None:
    assert NotifyServer.default_path({"RUNTIME_DIRECTORY": "/run/circus:/run/other"}) == (
        f"/run/circus/notify-{os.getpid()}.sock"
    )


def test_an_unsupported_notify_socket_is_a_warning_and_circusd_runs(circusd: Any) -> None:
    from circus_linux.runtime.sdnotify import SafeNotifier

    for value in ("vsock:2:9999", "relative/n.sock"):
        quiet = SafeNotifier(value)
        assert not quiet.enabled and quiet.notify("READY=1") is False
    d = circusd("[watcher:w]\ncmd = sleep 600\n", env={"NOTIFY_SOCKET": "vsock:2:9999"})
    assert d.call("status", name="w")["status"] == "active"
    assert "NOTIFY_SOCKET ignored: unsupported NOTIFY_SOCKET address 'vsock:2:9999'" in d.log_text()


def test_a_socket_name_systemd_cannot_store_is_served_and_not_stored(circusd: Any, tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    d = circusd(
        "[socket:my web]\nhost = 127.0.0.1\nport = 0\n\n[watcher:w]\ncmd = sleep 600\n",
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
    )
    assert [s["name"] for s in d.call("listsockets")["sockets"]] == ["my web"]
    assert "[socket:my web] not kept in systemd's fd store" in d.log_text()
    receiver.close()
