"""One supervised child: its pidfd, its state machine and its exit future; no policy, no spawning."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from circus_linux.core.states import ProcessState, check_process
from circus_linux.kernel import native


class Process:
    """A child known by pidfd. Never signalled by bare pid: the pidfd cannot be recycled.

    The pidfd is closed once the child is reaped; after that, signalling is a no-op (the child is gone).
    """

    def __init__(self, child: native.Child, wid: int, cmdline: list[str], watcher: str) -> None:
        self.pid = child.pid
        self.pidfd: int | None = child.pidfd
        self.wid = wid
        self.cmdline = cmdline
        self.watcher = watcher
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.state = ProcessState.RUNNING
        self.status_text: str | None = None  # STATUS= from the worker's notify socket
        self.exit_status: native.ExitStatus | None = None
        self.expected_exit = False  # set when we asked it to stop
        self.age_deadline: float | None = None  # monotonic time after which max_age recycles it
        self.ready_deadline: float | None = None  # notify watchers: READY=1 must come before this
        self.ready_failed = False  # it missed ready_deadline: its exit is a failed start
        self.exited: asyncio.Future[native.ExitStatus] = asyncio.get_running_loop().create_future()
        self.on_state: Callable[[Process, ProcessState], None] | None = None

    def __repr__(self) -> str:
        return f"<Process {self.watcher}#{self.wid} pid={self.pid} {self.state.value}>"

    @property
    def alive(self) -> bool:
        return self.state is not ProcessState.EXITED

    def age(self) -> float:
        return time.monotonic() - self.started_mono

    def set_state(self, new: ProcessState) -> None:
        if new is self.state:
            return
        check_process(self.state, new)
        self.state = new
        if self.on_state is not None:
            self.on_state(self, new)

    def send_signal(self, sig: int) -> bool:
        """Signal through the pidfd; False when the child is already gone."""
        if self.pidfd is None:
            return False
        try:
            native.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> native.ExitStatus | None:
        """Collect the exit status through the pidfd (WNOHANG); None if it has not exited yet."""
        if self.pidfd is None:
            return self.exit_status
        status = native.waitid_pidfd(self.pidfd)
        if status is None:
            return None
        self._finish(status)
        return status

    def _finish(self, status: native.ExitStatus) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.exit_status = status
        if self.state is not ProcessState.EXITED:
            self.set_state(ProcessState.EXITED)
        if not self.exited.done():
            self.exited.set_result(status)

    def children(self) -> list[int]:
        """Direct children pids, from /proc (for stop_children / signal children)."""
        path = f"/proc/{self.pid}/task/{self.pid}/children"
        try:
            with open(path) as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []
