"""Process and watcher states with their transition tables; pure, no I/O."""

from __future__ import annotations

import enum


class ProcessState(enum.Enum):
    """One child's life. A restart makes a new Process; a state never goes back."""

    RUNNING = "running"  # execve succeeded; not yet known ready
    READY = "ready"  # the worker said READY=1 (or readiness is not asked for)
    STOPPING = "stopping"  # stop signal sent, waiting for exit (then SIGKILL)
    EXITED = "exited"  # reaped; terminal


# state -> states it may move to. Everything may exit at any time: a child dies when it wants.
PROCESS_TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    ProcessState.RUNNING: frozenset({ProcessState.READY, ProcessState.STOPPING, ProcessState.EXITED}),
    ProcessState.READY: frozenset({ProcessState.STOPPING, ProcessState.EXITED}),
    ProcessState.STOPPING: frozenset({ProcessState.EXITED}),
    ProcessState.EXITED: frozenset(),
}


class WatcherState(enum.Enum):
    """What the watcher is asked to be doing; its processes follow by reconciliation."""

    STOPPED = "stopped"
    STARTING = "starting"  # started, not every wanted worker is up (and ready) yet
    ACTIVE = "active"
    STOPPING = "stopping"


WATCHER_TRANSITIONS: dict[WatcherState, frozenset[WatcherState]] = {
    WatcherState.STOPPED: frozenset({WatcherState.STARTING}),
    WatcherState.STARTING: frozenset({WatcherState.ACTIVE, WatcherState.STOPPING}),
    WatcherState.ACTIVE: frozenset({WatcherState.STARTING, WatcherState.STOPPING}),
    WatcherState.STOPPING: frozenset({WatcherState.STOPPED}),
}


class TransitionError(RuntimeError):
    """A transition the table does not allow: a bug in the runtime, never a child's doing."""


def check_process(old: ProcessState, new: ProcessState) -> None:
    if new not in PROCESS_TRANSITIONS[old]:
        raise TransitionError(f"process: {old.value} -> {new.value} is not allowed")


def check_watcher(old: WatcherState, new: WatcherState) -> None:
    if new not in WATCHER_TRANSITIONS[old]:
        raise TransitionError(f"watcher: {old.value} -> {new.value} is not allowed")
