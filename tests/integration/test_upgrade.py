"""In-place upgrade: circusd re-executes itself with the same PID and keeps workers and listening sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from typing import Any

from conftest import wait_for

WORKER = (
    "import socket, sys\n"
    "s = socket.socket(fileno=int(sys.argv[1])); s.setblocking(True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.recv(1024)\n"
    "    c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok'); c.close()\n"
)


def sections(tmp: str) -> str:
    worker = os.path.join(tmp, "worker.py")
    with open(worker, "w") as fh:
        fh.write(WORKER)
    return (
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n\n"
        f"[watcher:web]\ncmd = {sys.executable} {worker} $(circus.sockets.web)\nnumprocesses = 3\n\n"
        "[watcher:idle]\ncmd = sleep 600\nnumprocesses = 2\n"
    )


class Hammer(threading.Thread):
    """A steady request loop on the listening socket: counts answered and failed requests."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
                    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    data = c.recv(1024)
                if data.endswith(b"ok"):
                    self.ok += 1
                else:
                    self.failed.append(repr(data))
            except OSError as exc:
                self.failed.append(repr(exc))


def dstats_pid(d: Any) -> int | None:
    try:
        reply = d.call("dstats", timeout=0.5)
    except TimeoutError:
        return None
    return int(reply["info"]["pid"]) if reply.get("status") == "ok" else None


def test_upgrade_keeps_pid_workers_and_sockets_under_load(circusd: Any, tmp_path: Any) -> None:
    d = circusd(sections(str(tmp_path)))
    wait_for(lambda: len(d.pids("web")) == 3 and len(d.pids("idle")) == 2, what="pools up")
    port = next(s["port"] for s in d.call("listsockets")["sockets"] if s["name"] == "web")
    before = {name: sorted(d.pids(name)) for name in ("web", "idle")}
    hammer = Hammer(port)
    hammer.start()
    wait_for(lambda: hammer.ok >= 20, what="requests flowing")

    assert d.call("upgrade")["status"] == "ok"
    # The new image answers on the same endpoint, with the same pid, and adopted every worker.
    wait_for(lambda: dstats_pid(d) == d.proc.pid and "adopted 5 workers" in d.log_text(), timeout=20,
             what="new image serving")
    served_before = hammer.ok
    wait_for(lambda: hammer.ok >= served_before + 20, what="requests still flowing")
    hammer.stop_flag.set()
    hammer.join(15)
    assert hammer.failed == [], hammer.failed[:5]
    assert d.proc.poll() is None
    assert {name: sorted(d.pids(name)) for name in ("web", "idle")} == before

    # Reaping and respawning still work for adopted workers.
    victim = before["idle"][0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in d.pids("idle") and len(d.pids("idle")) == 2, what="replacement")
    wait_for(lambda: not os.path.exists(f"/proc/{victim}"), what="no zombie")


def test_sigusr2_upgrades_too(circusd: Any, tmp_path: Any) -> None:
    d = circusd("[watcher:idle]\ncmd = sleep 600\nnumprocesses = 2\n")
    wait_for(lambda: len(d.pids("idle")) == 2, what="pool up")
    before = sorted(d.pids("idle"))
    d.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: "adopted 2 workers" in d.log_text(), timeout=20, what="upgrade done")
    wait_for(lambda: dstats_pid(d) == d.proc.pid, timeout=20, what="the new image answers")
    assert sorted(d.pids("idle")) == before
    assert d.stop() == 0
    for pid in before:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), what="workers stopped at the end")


COUNTER = (
    "import sys, time\n"
    "i = 0\n"
    "while True:\n"
    "    i += 1; print(f'line {i}', flush=True); time.sleep(0.002)\n"
)


def test_upgrade_hands_over_captured_output_pipes(circusd: Any, tmp_path: Any) -> None:
    worker = tmp_path / "counter.py"
    worker.write_text(COUNTER)
    out = tmp_path / "out.log"
    d = circusd(
        f"[watcher:talk]\ncmd = {sys.executable} {worker}\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n"
    )
    pid = wait_for(lambda: d.pids("talk"), what="worker up")[0]
    wait_for(lambda: out.exists() and out.read_text().count("\n") > 50, what="output flowing")
    assert d.call("upgrade")["status"] == "ok"
    wait_for(lambda: "adopted 1 workers" in d.log_text() and dstats_pid(d) == d.proc.pid, what="upgraded")
    mark = out.read_text().count("\n")
    wait_for(lambda: out.read_text().count("\n") > mark + 100, what="output still flowing after the upgrade")
    assert d.pids("talk") == [pid]  # no EPIPE death: the same worker kept writing into the same pipe
    numbers = [int(line.split()[1]) for line in out.read_text().splitlines() if line.startswith("line ")]
    assert numbers == list(range(1, len(numbers) + 1))  # not a line lost or doubled across the exec


def test_a_failed_exec_keeps_the_workers_the_control_and_the_watchdog(circusd: Any, tmp_path: Any) -> None:
    import subprocess
    import time
    from pathlib import Path

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    d = circusd("[watcher:idle]\ncmd = sleep 600\nnumprocesses = 2\ncopy_env = true\n", wait=False, env=env)
    d.proc.kill()
    d.proc.wait()
    launcher = Path(__file__).with_name("failing_exec.py")
    d.proc = subprocess.Popen([sys.executable, "-P", str(launcher), str(d.path)], stdout=d.log.open("wb"),
                              stderr=subprocess.STDOUT, cwd=tmp_path, env={**os.environ, **env})
    wait_for(lambda: dstats_pid(d) == d.proc.pid, what="circusd answering")
    pids = sorted(d.call("list", name="idle")["pids"])
    d.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: "in-place upgrade failed" in d.log_text(), what="the failed exec")
    wait_for(lambda: dstats_pid(d) == d.proc.pid, what="the control channel back")
    assert d.proc.poll() is None and sorted(d.call("list", name="idle")["pids"]) == pids
    # The watchdog pings resume (the freeze had cancelled them): 3 of them after the failure.
    notify.settimeout(0.1)
    with contextlib.suppress(TimeoutError):
        while True:
            notify.recv(4096)  # what came before
    pings, deadline = 0, time.monotonic() + 10
    while pings < 3:
        assert time.monotonic() < deadline, f"no watchdog ping after the failed upgrade:\n{d.log_text()}"
        with contextlib.suppress(TimeoutError):
            pings += notify.recv(4096).count(b"WATCHDOG=1")
    # Nothing of the handover leaks into a worker spawned afterwards (copy_env = true passes os.environ).
    d.call("incr", name="idle", waiting=True)
    new = (set(d.call("list", name="idle")["pids"]) - set(pids)).pop()
    assert b"CIRCUS_LINUX_UPGRADE_FD" not in Path(f"/proc/{new}/environ").read_bytes()


def test_an_upgrade_is_refused_while_the_configuration_file_does_not_load(circusd: Any) -> None:
    d = circusd("[watcher:idle]\ncmd = sleep 600\nnumprocesses = 2\n")
    pids = sorted(d.call("list", name="idle")["pids"])
    good = d.path.read_text()
    d.path.write_text(good + "\n[watcher:broken]\nnumprocesses = lots\n")
    reply = d.call("upgrade")
    assert reply["status"] == "error" and "numprocesses" in reply["reason"], reply
    assert dstats_pid(d) == d.proc.pid and sorted(d.call("list", name="idle")["pids"]) == pids
    d.proc.send_signal(signal.SIGUSR2)  # refused the same way, logged
    wait_for(lambda: d.log_text().count("in-place upgrade refused") == 2, what="the refusal of SIGUSR2")
    assert dstats_pid(d) == d.proc.pid and sorted(d.call("list", name="idle")["pids"]) == pids
    d.path.write_text(good)
    assert d.call("upgrade")["status"] == "ok"
    wait_for(lambda: dstats_pid(d) == d.proc.pid and "adopted" in d.log_text(), what="the upgrade")
    assert sorted(d.call("list", name="idle")["pids"]) == pids


def test_an_upgrade_closes_the_pipes_of_a_watcher_gone_from_the_file(circusd: Any, tmp_path: Any) -> None:
    base = "[watcher:keep]\ncmd = sleep 600\n\n"
    gone = ("[watcher:gone]\ncmd = sh -c 'while :; do echo hi; sleep 0.1; done'\nnumprocesses = 2\n"
            f"stdout_stream.class = FileStream\nstdout_stream.filename = {tmp_path}/gone.log\n")
    d = circusd(base + gone)
    wait_for(lambda: len(d.call("list", name="gone")["pids"]) == 2, what="the gone watcher's workers")
    # The read ends circusd holds are the pipes the workers write to as their fd 1.
    inodes = {os.readlink(f"/proc/{pid}/fd/1") for pid in d.call("list", name="gone")["pids"]}
    assert all(i.startswith("pipe:") for i in inodes)

    def held() -> set[str]:
        out = set()
        for fd in os.listdir(f"/proc/{d.proc.pid}/fd"):
            with contextlib.suppress(OSError):
                out.add(os.readlink(f"/proc/{d.proc.pid}/fd/{fd}"))
        return out & inodes

    assert held() == inodes
    d.path.write_text(d.path.read_text().replace(gone, ""))
    assert d.call("upgrade")["status"] == "ok"
    wait_for(lambda: "upgrade: adopted 1 workers" in d.log_text() and dstats_pid(d) == d.proc.pid,
             what="the upgrade done")
    assert held() == set()


NOTIFY_WHEN_TOLD = (
    "import os, socket, sys, time\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
    "addr = os.environ['NOTIFY_SOCKET']\n"
    "addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n"
    "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1\\nSTATUS=up', addr)\n"
    "time.sleep(600)\n"
)


def test_a_worker_not_ready_at_the_upgrade_reaches_the_new_image_with_its_ready(
    circusd: Any, tmp_path: Any
) -> None:
    # The workers' NOTIFY_SOCKET names circusd's notify server: the new image takes the same socket over
    # (it used to bind a new name, and the READY=1 of a worker still starting was refused).
    worker = tmp_path / "notify_when_told.py"
    worker.write_text(NOTIFY_WHEN_TOLD)
    go = tmp_path / "go"
    go.touch()  # the first worker gets ready at once: circusd's start is done
    d = circusd(f"[watcher:n]\ncmd = {sys.executable} {worker} {go}\nnotify = true\nready_timeout = 60\n")
    first = d.call("list", name="n")["pids"][0]
    go.unlink()
    os.kill(first, signal.SIGKILL)  # its replacement waits for `go` before READY=1
    wait_for(lambda: d.call("list", name="n")["pids"] not in ([], [first]), what="the replacement")
    pid = d.call("list", name="n")["pids"][0]
    assert d.call("upgrade")["status"] == "ok"
    wait_for(lambda: "upgrade: adopted 1 workers" in d.log_text() and dstats_pid(d) == d.proc.pid,
             what="the upgrade done")
    go.touch()

    def heard() -> bool:
        info = d.call("stats", name="n")["info"].get(str(pid))
        return isinstance(info, dict) and info.get("notify_status") == "up"

    wait_for(heard, what="the replacement's READY=1/STATUS heard by the new image")
    assert d.call("list", name="n")["pids"] == [pid]
