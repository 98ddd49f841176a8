"""The floor: the least a supervisor can do (posix_spawn, pidfd_open, epoll, respawn); no policy, no cgroups.

It runs in a child forked from the benchmark process, so that the benchmark observes it from outside
through /proc exactly as it observes circusd. It must not do anything circusd would not have to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import struct
import time

_PR_SET_PDEATHSIG = 1


def _supervise(n: int, argv: list[str], start_w: int, ctl_r: int, stdout_path: str | None) -> None:
    """The floor loop itself. `ctl_r` carries 4-byte target counts (a scale request: surplus workers get
    SIGTERM and are not replaced); EOF on it is the stop request: kill and reap every worker, return."""
    start = time.monotonic()
    os.write(start_w, struct.pack("d", start))
    os.close(start_w)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    # With `stdout_path` the workers write straight into the file (O_APPEND): the floor of logging is no
    # supervisor in the data path at all.
    actions = []
    if stdout_path is not None:
        actions = [(os.POSIX_SPAWN_OPEN, 1, stdout_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)]
    ep = select.epoll()
    ep.register(ctl_r, select.EPOLLIN)
    live: dict[int, int] = {}  # pidfd -> pid
    retiring: set[int] = set()  # pidfds of workers told to stop by a scale-down: not replaced
    target = n

    def spawn() -> None:
        # setsid=True because circusd also puts every worker in its own session.
        pid = os.posix_spawn(argv[0], argv, env, setsid=True, file_actions=actions)
        # Our own unreaped child: its pid cannot be recycled before waitpid, so pidfd_open cannot race.
        fd = os.pidfd_open(pid)
        ep.register(fd, select.EPOLLIN)
        live[fd] = pid

    for _ in range(n):
        spawn()
    while True:
        for fd, _events in ep.poll():
            if fd == ctl_r:
                data = os.read(ctl_r, 4)
                if len(data) == 4:
                    target = struct.unpack("i", data)[0]
                    active = [f for f in live if f not in retiring]
                    for _ in range(target - len(active)):
                        spawn()
                    for f in sorted(active, reverse=True)[: max(0, len(active) - target)]:
                        retiring.add(f)
                        with contextlib.suppress(ProcessLookupError):
                            signal.pidfd_send_signal(f, signal.SIGTERM)
                    continue
                for pfd in live:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pfd, signal.SIGKILL)
                for pid in live.values():
                    os.waitpid(pid, 0)
                return
            pid = live.pop(fd)
            ep.unregister(fd)
            os.close(fd)
            os.waitpid(pid, 0)
            if fd in retiring:
                retiring.discard(fd)
            else:
                spawn()


class Floor:
    """Handle on one floor supervisor: start() forks it, stop() ends it and its workers."""

    label = "floor"

    def __init__(self, argv: list[str], stdout_path: str | None = None) -> None:
        self.argv = argv
        self.stdout_path = stdout_path
        self.pid: int | None = None
        self.t0 = 0.0
        self._stop_w: int | None = None
        self._exited = False

    def start(self, n: int) -> None:
        start_r, start_w = os.pipe()
        stop_r, stop_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the floor process
            code = 0
            try:
                os.close(start_r)
                os.close(stop_w)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                # A fork inherits every fd of the benchmark, CLOEXEC or not (e.g. the stdout row's gate
                # FIFO, whose last writer must be the benchmark): keep only our two pipe ends.
                for name in os.listdir("/proc/self/fd"):
                    if int(name) > 2 and int(name) not in (start_w, stop_r):
                        with contextlib.suppress(OSError):
                            os.close(int(name))
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # never outlive the benchmark
                _supervise(n, self.argv, start_w, stop_r, self.stdout_path)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(start_w)
        os.close(stop_r)
        self.pid = pid
        self._exited = False
        self._stop_w = stop_w
        # The floor writes its start time before it spawns anything, so this read blocks for microseconds.
        data = os.read(start_r, 8)
        os.close(start_r)
        self.t0 = struct.unpack("d", data)[0]

    def alive(self) -> bool:
        if self.pid is None or self._exited:
            return False
        done, _status = os.waitpid(self.pid, os.WNOHANG)
        self._exited = done != 0
        return not self._exited

    def poll_ready(self) -> None:
        """The floor has no readiness notification."""

    def scale(self, n: int) -> None:
        """Ask the floor loop for `n` workers (it spawns the missing ones or SIGTERMs the surplus)."""
        assert self._stop_w is not None
        os.write(self._stop_w, struct.pack("i", n))

    def stop(self, timeout: float = 30.0) -> None:
        if self.pid is None:
            return
        if self._stop_w is not None:
            os.close(self._stop_w)  # EOF on stop_r is the floor's stop request
            self._stop_w = None
        deadline = time.monotonic() + timeout
        while not self._exited:
            done, _status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.001)
        self.pid = None
