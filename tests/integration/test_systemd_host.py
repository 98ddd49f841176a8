"""circusd's systemd protocol without systemd: a test-owned NOTIFY_SOCKET and LISTEN_FDS hand-offs by hand.

The real daemon runs as a subprocess. What systemd would do is done by the test: it owns an AF_UNIX datagram
socket with SO_PASSCRED (as PID 1 does) and records every notification with its kernel-given sender pid and
passed fds, and it starts circusd with listening sockets dup'ed to fds 3.. and LISTEN_PID set by a shell
trampoline (`LISTEN_PID=$$ exec ...`), exactly as the service manager's exec does.
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Circusd, circusd_argv, fill_datagram_queue, wait_for

from circus_linux.kernel.notify import parse_notify

# Workers die with circusd (PR_SET_PDEATHSIG = 1): a circusd killed by SIGKILL in a test leaves nothing.
PDEATHSIG = "import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"

# A notify worker: waits DELAY, leaves a marker file, then tells circusd READY=1 with a STATUS= line.
NOTIFY_WORKER = PDEATHSIG + """\
import os, signal, socket, sys, time
delay, marker_dir = float(sys.argv[1]), sys.argv[2]
time.sleep(delay)  # the worker's own start-up time, which circusd must wait for
open(os.path.join(marker_dir, "ready-%d" % os.getpid()), "w").close()
addr = os.environ["NOTIFY_SOCKET"]
addr = "\\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("READY=1\\nSTATUS=serving as wid %s" % os.environ["CIRCUS_WID"]).encode(), addr)
while True:
    signal.pause()
"""

# Accepts on the inherited fd argv[1] and answers "<tag> <pid>" to every connection.
HELLO_WORKER = PDEATHSIG + """\
import os, socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
listener.setblocking(True)
while True:
    conn, _ = listener.accept()
    conn.sendall(("%s %d\\n" % (sys.argv[2], os.getpid())).encode())
    conn.close()
"""

_UCRED = struct.Struct("iII")


@dataclass
class Note:
    pid: int
    fields: dict[str, str]
    fds: list[int]
    at: float = field(default_factory=time.monotonic)


class NotifyRecorder:
    """The NOTIFY_SOCKET systemd would own: records (sender pid, fields, fds) in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.notes: list[Note] = []

    def drain(self) -> list[Note]:
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(
                    8192, socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(64 * 4), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return self.notes
            pid, fds = 0, array.array("i")
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack_from(cdata)[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", cdata[: len(cdata) - len(cdata) % 4]))
            self.notes.append(Note(pid, parse_notify(data), list(fds)))

    def with_key(self, key: str, value: str | None = None) -> list[Note]:
        return [n for n in self.drain() if key in n.fields and (value is None or n.fields[key] == value)]

    def wait(self, key: str, value: str | None = None, count: int = 1, timeout: float = 15.0) -> list[Note]:
        return wait_for(
            lambda: (found := self.with_key(key, value)) and len(found) >= count and found,
            timeout=timeout,
            what=f"{count} notification(s) with {key}{'=' + value if value else ''}",
        )

    def close(self) -> None:
        self.drain()
        for note in self.notes:
            for fd in note.fds:
                os.close(fd)
            note.fds = []
        self.sock.close()


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[NotifyRecorder]:
    # Requested before `circusd`, so it is torn down after circusd stopped (STOPPING=1 still has a receiver).
    rec = NotifyRecorder(tmp_path / "notify.sock")
    yield rec
    rec.close()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _python() -> str:
    import sys

    return sys.executable


def _notify_pool(tmp_path: Path, delay: float, options: str) -> tuple[str, Path]:
    """[watcher:slow]: 2 NOTIFY_WORKERs that say READY=1 after `delay` s, each leaving a file in the
    returned markers dir first; `options` are more lines of the section."""
    worker = _write(tmp_path, "notify_worker.py", NOTIFY_WORKER)
    markers = tmp_path / "markers"
    markers.mkdir()
    sections = f"""
[watcher:slow]
cmd = {_python()} {worker} {delay} {markers}
numprocesses = 2
notify = true
{options}"""
    return sections, markers


def _hello(address: Any, family: int = socket.AF_INET, timeout: float = 10.0) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        return s.makefile().readline().strip()


def _socket_entry(daemon: Circusd, name: str) -> dict[str, Any]:
    reply = daemon.call("listsockets")
    assert reply["status"] == "ok", reply
    (entry,) = [s for s in reply["sockets"] if s["name"] == name]
    return dict(entry)


# -- sd_notify sequence -------------------------------------------------------------------------------------


def test_notify_sequence_ready_after_workers_status_watchdog_reload_stop(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd], tmp_path: Path
) -> None:
    sections, markers = _notify_pool(tmp_path, 0.6, "ready_timeout = 20\ngraceful_timeout = 2\n")
    t0 = time.monotonic()
    daemon = circusd(
        sections, wait=False, env={"NOTIFY_SOCKET": recorder.path, "WATCHDOG_USEC": "400000"}
    )
    (ready,) = recorder.wait("READY", "1")
    # Both workers had announced themselves (marker written before their READY=1) when circusd said READY.
    assert len(list(markers.iterdir())) == 2, "READY=1 reached systemd before every worker was ready"
    assert ready.at - t0 >= 0.6
    assert ready.pid == daemon.proc.pid
    assert ready.fields["MAINPID"] == str(daemon.proc.pid)
    assert "1/1 watchers active, 2/2 workers" in ready.fields["STATUS"]
    # No notification before READY=1 came from anyone but circusd itself (workers have their own socket).
    assert {n.pid for n in recorder.notes} == {daemon.proc.pid}

    # Watchdog pings at half of WATCHDOG_USEC (0.2 s), from circusd's loop.
    pings = recorder.wait("WATCHDOG", "1", count=3)
    assert all(p.pid == daemon.proc.pid for p in pings)

    # The workers' own STATUS= lines show in `stats`.
    info = daemon.call("stats", name="slow")["info"]
    assert sorted(i["notify_status"] for i in info.values()) == ["serving as wid 1", "serving as wid 2"]

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC, the pool rolls (new notify workers, ready again), READY=1.
    old = set(daemon.pids("slow"))
    before = len(recorder.with_key("READY", "1"))
    daemon.proc.send_signal(signal.SIGHUP)
    (reloading,) = recorder.wait("RELOADING", "1")
    usec = int(reloading.fields["MONOTONIC_USEC"])
    assert abs(usec / 1e6 - time.monotonic()) < 30  # CLOCK_MONOTONIC of this host, in microseconds
    again = recorder.wait("READY", "1", count=before + 1)[-1]
    assert again.at > reloading.at
    new = set(daemon.pids("slow"))
    assert len(new) == 2 and not new & old, "reload did not roll the workers"
    assert len(list(markers.iterdir())) == 4  # the new pool was ready before READY=1

    assert daemon.stop() == 0
    stopping = recorder.wait("STOPPING", "1")
    assert stopping[0].at > again.at


def test_a_notify_receiver_that_stops_reading_never_wedges_circusd(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd], tmp_path: Path
) -> None:
    # A NOTIFY_SOCKET whose owner reads READY=1 and nothing after (a harness, a wedged manager). circusd
    # used to send blocking, as sd_notify(3) does, and could then sit in the kernel (unix_wait_for_peer)
    # for ever: seen with a benchmark harness, a killed worker stayed a zombie and SIGTERM went unheard.
    daemon = circusd(
        "[watcher:w]\ncmd = sleep 600\nnumprocesses = 2\n",
        wait=False,
        env={"NOTIFY_SOCKET": recorder.path, "WATCHDOG_USEC": "100000"},
    )
    recorder.wait("READY", "1")
    assert fill_datagram_queue(recorder.path) < 10_000  # what room is left: the receiver is full from now on
    # commands are answered, workers are replaced, with the receiver full all along
    for _ in range(5):
        assert daemon.call("incr", name="w", waiting=True)["status"] == "ok"
        assert daemon.call("decr", name="w", waiting=True)["status"] == "ok"
    victim = daemon.pids("w")[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in daemon.pids("w") and len(daemon.pids("w")) == 2, 10, what="a replacement")
    wait_for(lambda: "receiver's queue is full" in daemon.log_text(), 10, what="the dropped-status warning")
    # SIGTERM: STOPPING=1 waits for room at most SEND_TIMEOUT (5 s), then circusd exits as usual
    t0 = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    assert time.monotonic() - t0 < 15
    assert "cannot notify" in daemon.log_text()  # STOPPING=1 could not be delivered, and it says so


def test_ready_comes_after_the_control_channel_is_bound(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd]
) -> None:
    """The workers start before the control channel is built (cold start), but READY=1 still means
    circusctl can reach circusd: the endpoints are bound when systemd hears it."""
    daemon = circusd("[watcher:quick]\ncmd = /bin/sleep 600\nnumprocesses = 3\n", wait=False,
                     env={"NOTIFY_SOCKET": recorder.path})
    recorder.wait("READY", "1")
    for endpoint in (daemon.endpoint, daemon.pubsub_endpoint):
        path = Path(endpoint.removeprefix("ipc://"))
        assert path.is_socket(), f"READY=1 before {endpoint} was bound"
    assert len(daemon.pids("quick")) == 3


def test_control_answers_while_the_start_waits_for_readiness(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd], tmp_path: Path
) -> None:
    """The control channel is built after the first spawns, not after the whole start: while circusd still
    waits for its notify workers' READY=1 (8 s away), circusctl gets answers; READY=1 comes after."""
    sections, markers = _notify_pool(tmp_path, 8, "ready_timeout = 30\n")
    daemon = circusd(sections, wait=False, env={"NOTIFY_SOCKET": recorder.path})
    reply = daemon.call("status", timeout=6.0, name="slow")
    assert reply["status"] == "starting", reply  # Circus: `status` answers with the state itself
    assert not list(markers.iterdir()), "answered only after the workers were ready"
    assert not recorder.with_key("READY", "1"), "READY=1 before the workers were ready"
    recorder.wait("READY", "1", timeout=30.0)
    assert len(list(markers.iterdir())) == 2


def test_fd_store_push_is_the_bound_socket_and_survives_a_crash(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd], tmp_path: Path, cgroup_root: str
) -> None:
    """FDSTORE=1 carries the very listening socket; a circusd killed -9 and restarted with it (as systemd
    would pass it back in LISTEN_FDS) serves the same socket, and a client that connected in the gap gets
    its answer: the connection waited in the kernel's accept queue."""
    hello = _write(tmp_path, "hello.py", HELLO_WORKER)
    sections = f"""
[socket:web]
host = 127.0.0.1
port = 0

[watcher:hello]
cmd = {_python()} {hello} $(circus.sockets.web) first
sockets = web
"""
    first = circusd(sections, env={"NOTIFY_SOCKET": recorder.path})
    (stored,) = recorder.wait("FDSTORE", "1")
    assert stored.fields["FDNAME"] == "web"
    (fd,) = stored.fds
    entry = _socket_entry(first, "web")
    kept = socket.socket(fileno=os.dup(fd))
    try:
        assert kept.getsockname() == ("127.0.0.1", entry["port"])
        assert kept.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert os.fstat(fd).st_ino == os.fstat(kept.fileno()).st_ino
        assert _hello(("127.0.0.1", entry["port"])).startswith("first ")

        old_workers = first.pids("hello")
        first.proc.kill()
        first.proc.wait()
        # Its workers die with it (PDEATHSIG); once they are gone nobody accepts, but the socket still
        # listens (we hold it, as systemd's fd store would).
        wait_for(lambda: not any(_alive(pid) for pid in old_workers), what="the old workers to die")
        waiting = socket.create_connection(("127.0.0.1", entry["port"]), timeout=10)
        second = _start_with_listen_fds(tmp_path, cgroup_root, sections.replace(" first", " second"),
                                        [("web", kept)])
        try:
            assert waiting.makefile().readline().startswith("second ")
            waiting.close()
            assert _socket_entry(second, "web")["origin"] == "systemd"
            assert _hello(("127.0.0.1", entry["port"])).startswith("second ")
        finally:
            second.stop()
    finally:
        kept.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# -- LISTEN_FDS hand-off by hand ----------------------------------------------------------------------------

TRAMPOLINE = 'LISTEN_PID=$$ exec "$@"'


def _start_with_listen_fds(
    tmp_path: Path,
    cgroup_root: str,
    sections: str,
    fds: list[tuple[str, socket.socket]],
    env: dict[str, str] | None = None,
) -> Circusd:
    """Start circusd as systemd would after socket activation: fds at 3.., LISTEN_FDS/FDNAMES/PID set."""
    n = len(list(tmp_path.glob("handoff*.ini")))
    opts = {
        "endpoint": f"ipc://{tmp_path}/hctl{n}.sock",
        "pubsub_endpoint": f"ipc://{tmp_path}/hpub{n}.sock",
        "stats_endpoint": f"ipc://{tmp_path}/hstats{n}.sock",
        "cgroup_root": cgroup_root,
    }
    path = tmp_path / f"handoff{n}.ini"
    path.write_text("[circus]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()) + sections)
    # Park the sockets far above 3.. first, so the dups onto 3, 4, ... never overwrite one another.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 200 + i) for i, (_n, s) in enumerate(fds)]
    redirect = " ".join(f"{3 + i}<&{h} {h}<&-" for i, h in enumerate(high))
    script = f"exec {redirect}; {TRAMPOLINE}"
    environ = {
        **os.environ,
        **(env or {}),
        "LISTEN_FDS": str(len(fds)),
        "LISTEN_FDNAMES": ":".join(name for name, _s in fds),
    }
    log = tmp_path / f"handoff{n}.log"
    try:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", script, "bash", *circusd_argv(str(path))],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=environ,
            pass_fds=high,
        )
    finally:
        for h in high:
            os.close(h)
    daemon = Circusd(proc, path, opts["endpoint"], opts["pubsub_endpoint"], opts["stats_endpoint"], log)

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"circusd exited with {proc.returncode}:\n{daemon.log_text()}")
        try:
            return daemon.call("numwatchers", timeout=0.5).get("status") == "ok"
        except TimeoutError:
            return False

    try:
        wait_for(answers, timeout=30, what="circusd to answer")
    except BaseException:
        daemon.stop()
        raise
    return daemon


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


def test_listen_fds_adopted_by_name_not_position_and_mismatch_warned(
    tmp_path: Path, cgroup_root: str, listeners: list[socket.socket]
) -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "real.sock"))
    unix.listen(16)
    listeners.extend([tcp, unix])
    port = tcp.getsockname()[1]
    hello = _write(tmp_path, "hello.py", HELLO_WORKER)
    # The ini lists tcp first; systemd passes unix first. The unix section names another path: adopted
    # anyway (the running socket wins), with a warning in the log. Were sockets matched by position,
    # the tcp watcher would get the unix fd and the port below would never answer.
    sections = f"""
[socket:tcp]
host = 127.0.0.1
port = {port}
systemd = only

[socket:local]
path = {tmp_path}/configured.sock
systemd = yes

[watcher:viatcp]
cmd = {_python()} {hello} $(circus.sockets.tcp) tcp
sockets = tcp

[watcher:vialocal]
cmd = {_python()} {hello} $(circus.sockets.local) local
sockets = local
"""
    daemon = _start_with_listen_fds(tmp_path, cgroup_root, sections, [("local", unix), ("tcp", tcp)])
    try:
        assert _hello(("127.0.0.1", port)).startswith("tcp ")
        assert _hello(str(tmp_path / "real.sock"), socket.AF_UNIX).startswith("local ")
        assert not (tmp_path / "configured.sock").exists(), "circusd bound the section instead of adopting"
        log = daemon.log_text()
        assert "[socket:local] inherited fd 3 is bound to" in log and "configured.sock" in log
        assert "[socket:tcp]" not in log  # a matching socket draws no warning
        by_name = {s["name"]: s for s in daemon.call("listsockets")["sockets"]}
        assert by_name["tcp"]["origin"] == by_name["local"]["origin"] == "systemd"
        assert (by_name["tcp"]["fd"], by_name["local"]["fd"]) == (4, 3)
        # A worker gets only the sockets it names: fd 3 (local) is not open in the tcp watcher's worker.
        (pid,) = daemon.pids("viatcp")
        assert os.path.exists(f"/proc/{pid}/fd/4") and not os.path.exists(f"/proc/{pid}/fd/3")
        # LISTEN_* never reach the workers.
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"LISTEN_") for v in env)
    finally:
        daemon.stop()


def test_systemd_only_section_without_fd_is_a_fatal_error_with_errno(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd], tmp_path: Path
) -> None:
    sections = """
[socket:activated]
host = 127.0.0.1
port = 0
systemd = only

[watcher:w]
cmd = sleep 600
use_sockets = true
"""
    daemon = circusd(sections, wait=False, env={"NOTIFY_SOCKET": recorder.path})
    assert daemon.proc.wait(timeout=30) != 0
    (note,) = recorder.wait("ERRNO")
    assert int(note.fields["ERRNO"]) > 0
    assert "systemd = only" in note.fields.get("STATUS", "")
    assert "systemd = only" in daemon.log_text()


def test_ready_timeout_kills_a_silent_notify_worker_as_a_failed_start(
    recorder: NotifyRecorder, circusd: Callable[..., Circusd], tmp_path: Path
) -> None:
    sections = """
[watcher:mute]
cmd = sleep 600
notify = true
ready_timeout = 0.3
max_retry = 1
"""
    daemon = circusd(sections, wait=False, env={"NOTIFY_SOCKET": recorder.path})
    # circusd gives up on the watcher and says READY=1 for the rest: its own start did not fail.
    (ready,) = recorder.wait("READY", "1")
    assert "0/1 watchers active" in ready.fields["STATUS"]
    log = wait_for(lambda: "giving up" in (text := daemon.log_text()) and text, what="giveup in the log")
    assert "not ready after 0.3s" in log
    assert log.count("not ready after") == 2  # the first try and the one retry
    # the give-up stops the watcher: wait for the stop to finish rather than racing it
    wait_for(lambda: daemon.call("status", name="mute")["status"] == "stopped", what="watcher stopped")
