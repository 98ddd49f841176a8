"""Typed wrapper over circus_linux._native and the stdlib pidfd calls; no policy, no asyncio, no retries.

What lives here:
- spawn(): ONE call into C that clones, runs only async-signal-safe raw syscalls in the child (reset
  signal dispositions and mask, setsid, v1 cgroup.procs writes, fd map, close the rest,
  setgroups/setgid/setuid, setrlimit, umask, chdir) and execve()s.  No Python runs between clone and exec.
  A failing step comes back as (stage, errno); the child is then already reaped and SpawnError is raised.
- Three paths (SPAWN_MODES); DEFAULT_SPAWN_MODE is the first one available here:
  "vfork"  clone3(CLONE_VM|CLONE_VFORK|CLONE_PIDFD[|CLONE_INTO_CGROUP]) on a private stack: no copy of
           the parent's page tables, so as fast as posix_spawn (x86_64; on aarch64 built but opt-in);
  "fork"   clone3(CLONE_PIDFD[|CLONE_INTO_CGROUP]) with fork semantics, (stage, errno) over a pipe;
  "legacy" fork() + pidfd_open(); the child moves itself into the cgroup2 dir by writing "0" to
           openat(cgroup_fd, "cgroup.procs").  Also what the C side falls back to without clone3.
  Pick one with ``spawn(spec, mode=...)`` or the environment variable CIRCUS_LINUX_SPAWN_MODE;
  ``force_fork=True`` and CIRCUS_LINUX_FORCE_FORK=1 still mean "legacy".
- pidfd signal/wait helpers over os.waitid(P_PIDFD) and signal.pidfd_send_signal, a non-reaping peek at
  exited children, reaping of re-parented orphans, signal blocking, signalfd and the child-subreaper flag.

Signals: block_signals() must run before any thread starts; a process-directed signal goes to any thread
that does not block it, and then the signalfd of the blocking thread never sees it.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from circus_linux._native import ffi, lib

__all__ = [
    "DEFAULT_SPAWN_MODE",
    "HAS_CLONE3",
    "HAS_VFORK",
    "SPAWN_MODES",
    "Child",
    "ExitStatus",
    "SpawnError",
    "SpawnSpec",
    "block_signals",
    "count_byte",
    "exited_pids",
    "get_child_subreaper",
    "pidfd_send_signal",
    "reap_pid",
    "resolve_mode",
    "set_child_subreaper",
    "signalfd_open",
    "signalfd_read",
    "spawn",
    "spawn_with_mode",
    "tune_malloc",
    "unblock_signals",
    "waitid_pidfd",
]

HAS_CLONE3: bool = bool(lib.cl_probe_clone3())
# The vfork path needs clone3 and the hand-written clone trampoline, which exists for x86_64 and aarch64.
# It is the default only where the test suite has run it (x86_64): on aarch64 ask for it explicitly.
_VFORK_BUILD: int = int(lib.cl_has_vfork_path())  # 2 run-tested, 1 built only, 0 absent
HAS_VFORK: bool = HAS_CLONE3 and _VFORK_BUILD > 0
SPAWN_MODES: tuple[str, ...] = ("vfork", "fork", "legacy")  # index = the C side's req.mode number
DEFAULT_SPAWN_MODE: str = "vfork" if HAS_VFORK and _VFORK_BUILD == 2 else "fork" if HAS_CLONE3 else "legacy"
SPAWN_MODE_ENV = "CIRCUS_LINUX_SPAWN_MODE"
FORCE_FORK_ENV = "CIRCUS_LINUX_FORCE_FORK"
# The C side copies the fd map onto the child's stack; maps are a handful of fds in practice.
MAX_FDS = 256
_RLIM_MASK = (1 << 64) - 1  # resource.RLIM_INFINITY is -1 in Python, ~0ULL in the kernel
_SIGINFO_SIZE = 128  # sizeof(struct signalfd_siginfo); ssi_signo is its first uint32 (signalfd(2))


@dataclass(frozen=True)
class SpawnSpec:
    """Everything the child becomes; see docs/ARCHITECTURE.md (kernel/native.py)."""

    path: str
    argv: Sequence[str]
    env: Mapping[str, str]
    fds: Mapping[int, int]  # child fd -> parent fd; every other fd is closed in the child
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: Sequence[int] | None = None
    umask: int | None = None
    rlimits: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    cgroup_fd: int | None = None
    cgroup_procs_fds: Sequence[int] = ()
    new_session: bool = True


class SpawnError(OSError):
    """A step of spawning failed; .stage names it ('clone', 'dup2', 'setuid', 'chdir', 'execve', ...).

    .mode is the spawn path that ran ("vfork", "fork", "legacy"), None when not known.
    """

    def __init__(self, err: int, stage: str, path: str, mode: str | None = None) -> None:
        super().__init__(err, f"{stage} failed: {os.strerror(err)}", path)
        self.stage = stage
        self.mode = mode


@dataclass(frozen=True)
class Child:
    pid: int
    pidfd: int


@dataclass(frozen=True)
class ExitStatus:
    """How a child ended: exactly one of code (exit status) and signal (killing signal) is set."""

    code: int | None
    signal: int | None
    core_dumped: bool = False

    @property
    def exit_code(self) -> int:
        """Circus convention: the exit status, or -signo when killed by a signal."""
        if self.signal is not None:
            return -self.signal
        return self.code if self.code is not None else 0

    @classmethod
    def from_waitid(cls, res: Any) -> ExitStatus:
        # si_code says whether si_status is an exit status or a signal number (waitid(2)).
        if res.si_code == os.CLD_EXITED:
            return cls(code=res.si_status, signal=None)
        return cls(code=None, signal=res.si_status, core_dumped=res.si_code == os.CLD_DUMPED)


def _cstr(value: str, what: str) -> bytes:
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return raw


def resolve_mode(mode: str | None, force_fork: bool | None, environ: Mapping[str, str] | None = None) -> str:
    """The spawn path: mode, else "legacy" for force_fork=True, else the environment, else the default.

    Environment: CIRCUS_LINUX_SPAWN_MODE names a mode; CIRCUS_LINUX_FORCE_FORK=1 (read only while
    force_fork is None) means "legacy".  A known mode this machine lacks degrades to the next one
    ("vfork" -> "fork" -> "legacy"), as the C side would; an unknown name raises ValueError.
    """
    env = os.environ if environ is None else environ
    if mode is None:
        if force_fork:
            mode = "legacy"
        elif env.get(SPAWN_MODE_ENV):
            mode = env[SPAWN_MODE_ENV]
        elif force_fork is None and env.get(FORCE_FORK_ENV, "") not in ("", "0"):
            mode = "legacy"
        else:
            mode = DEFAULT_SPAWN_MODE
    if mode not in SPAWN_MODES:
        raise ValueError(f"unknown spawn mode {mode!r}: expected one of {', '.join(SPAWN_MODES)}")
    if mode == "vfork" and not HAS_VFORK:
        mode = "fork"
    if mode == "fork" and not HAS_CLONE3:
        mode = "legacy"
    return mode


def spawn(spec: SpawnSpec, *, force_fork: bool | None = None, mode: str | None = None) -> Child:
    """Start spec.path as a new child; return once execve succeeded, raise SpawnError when any step failed.

    mode picks the path ("vfork", "fork", "legacy"; see resolve_mode for the defaults and the
    environment).  The GIL is released during the call.
    """
    return spawn_with_mode(spec, force_fork=force_fork, mode=mode)[0]


def spawn_with_mode(
    spec: SpawnSpec, *, force_fork: bool | None = None, mode: str | None = None
) -> tuple[Child, str]:
    """spawn(), and the name of the path that actually ran (for tests, benchmarks and diagnostics)."""
    if len(spec.fds) > MAX_FDS:
        raise ValueError(f"fd map has {len(spec.fds)} entries, at most {MAX_FDS} are supported")
    if any(fd < 0 for pair in spec.fds.items() for fd in pair):
        raise ValueError(f"negative fd in fd map {dict(spec.fds)!r}")
    chosen = resolve_mode(mode, force_fork)
    keep: list[Any] = []  # cffi buffers must outlive the C call

    def cstring(value: str, what: str) -> Any:
        buf = ffi.new("char[]", _cstr(value, what))
        keep.append(buf)
        return buf

    def cstrings(values: Iterable[str], what: str) -> Any:
        arr = ffi.new("char *[]", [cstring(v, what) for v in values] + [ffi.NULL])
        keep.append(arr)
        return arr

    req = ffi.new("struct cl_spawn_req *")
    req.path = cstring(spec.path, "path")
    req.argv = cstrings(spec.argv, "argv")
    req.envp = cstrings((f"{k}={v}" for k, v in spec.env.items()), "env")
    req.cwd = cstring(spec.cwd, "cwd") if spec.cwd is not None else ffi.NULL

    targets = ffi.new("int[]", list(spec.fds.keys()) or [0])
    sources = ffi.new("int[]", list(spec.fds.values()) or [0])
    req.fd_targets, req.fd_sources, req.nfds = targets, sources, len(spec.fds)

    req.uid = -1 if spec.uid is None else spec.uid
    req.gid = -1 if spec.gid is None else spec.gid
    groups = ffi.new("unsigned int[]", list(spec.groups or ()) or [0])
    req.groups = groups
    req.ngroups = -1 if spec.groups is None else len(spec.groups)
    req.umask = -1 if spec.umask is None else spec.umask

    items = list(spec.rlimits.items())
    resources = ffi.new("int[]", [r for r, _ in items] or [0])
    soft = ffi.new("unsigned long long[]", [lim[0] & _RLIM_MASK for _, lim in items] or [0])
    hard = ffi.new("unsigned long long[]", [lim[1] & _RLIM_MASK for _, lim in items] or [0])
    req.rlimit_resources, req.rlimit_soft, req.rlimit_hard = resources, soft, hard
    req.nrlimits = len(items)

    req.cgroup_fd = -1 if spec.cgroup_fd is None else spec.cgroup_fd
    procs = ffi.new("int[]", list(spec.cgroup_procs_fds) or [0])
    req.cgroup_procs_fds, req.ncgroup_procs = procs, len(spec.cgroup_procs_fds)
    req.new_session = int(spec.new_session)
    req.mode = SPAWN_MODES.index(chosen)

    res = ffi.new("struct cl_spawn_result *")
    if lib.cl_spawn(req, res) < 0:
        stage = ffi.string(lib.cl_stage_name(res.stage)).decode()
        raise SpawnError(res.err, stage, _failed_path(stage, spec), SPAWN_MODES[res.used_mode])
    return Child(pid=res.pid, pidfd=res.pidfd), SPAWN_MODES[res.used_mode]


def _failed_path(stage: str, spec: SpawnSpec) -> str:
    """What a failed stage was working on: the executable only for the stages that touch it.

    clone3 with CLONE_INTO_CGROUP fails with ENOENT when the target cgroup was removed (and EAGAIN when
    its pids.max is reached): naming the executable there sent people looking for a missing binary.
    """
    if stage == "chdir" and spec.cwd is not None:
        return spec.cwd
    if stage in ("clone", "cgroup") and spec.cgroup_fd is not None:
        return _fd_target(spec.cgroup_fd)
    if stage == "cgroup_v1" and spec.cgroup_procs_fds:
        return ", ".join(_fd_target(fd) for fd in spec.cgroup_procs_fds)
    return spec.path


def _fd_target(fd: int) -> str:
    """The path an fd was opened on (/proc/self/fd/N), or "fd N" when it cannot be read."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal the child behind pidfd; ProcessLookupError once reaped (a zombie takes it silently)."""
    signal.pidfd_send_signal(pidfd, sig)


def waitid_pidfd(pidfd: int, block: bool = False) -> ExitStatus | None:
    """Reap the child behind pidfd if it has exited (WNOHANG), else None; with block, wait for its exit.

    ChildProcessError when it was already reaped (by us or by a P_ALL waiter).
    """
    res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | (0 if block else os.WNOHANG))
    return None if res is None else ExitStatus.from_waitid(res)


def exited_pids() -> list[int]:
    """Pids of exited, not yet reaped children, without reaping them.

    waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT) keeps reporting the same (first) zombie until it is reaped, so
    this returns at most one pid: the caller reaps it (waitid_pidfd or reap_pid) and peeks again until the
    list is empty.  The loop below stops as soon as the kernel repeats itself.
    """
    seen: list[int] = []
    while True:
        try:
            res = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # no children at all
            return seen
        if res is None or res.si_pid in seen:
            return seen
        seen.append(res.si_pid)


def reap_pid(pid: int) -> ExitStatus | None:
    """Reap one child by pid (e.g. an orphan re-parented to us as subreaper); None if still running.

    ChildProcessError if pid is not our child (or was reaped already).
    """
    res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    return None if res is None else ExitStatus.from_waitid(res)


def block_signals(sigs: Iterable[int]) -> None:
    """Block sigs in the calling thread (threads started later inherit it), so a signalfd can read them.

    Python's own handlers (SIGINT's KeyboardInterrupt, any signal.signal handler) never run for a blocked
    signal: it stays pending until read from the signalfd.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, set(sigs))


def unblock_signals(sigs: Iterable[int]) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(sigs))


def signalfd_open(sigs: Iterable[int]) -> int:
    """A new signalfd (SFD_NONBLOCK|SFD_CLOEXEC) for sigs; block them first or they are delivered instead."""
    numbers = [int(s) for s in sigs]
    arr = ffi.new("int[]", numbers or [0])
    fd = lib.cl_signalfd(-1, arr, len(numbers), lib.cl_sfd_nonblock() | lib.cl_sfd_cloexec())
    if fd < 0:
        raise OSError(-fd, f"signalfd: {os.strerror(-fd)}")
    return int(fd)


def signalfd_read(fd: int) -> list[int]:
    """Drain the signalfd; the signal numbers read, in order (standard signals coalesce while pending)."""
    out: list[int] = []
    while True:
        try:
            data = os.read(fd, _SIGINFO_SIZE * 16)
        except BlockingIOError:
            return out
        if not data:
            return out
        for off in range(0, len(data) - _SIGINFO_SIZE + 1, _SIGINFO_SIZE):
            (signo,) = struct.unpack_from("=I", data, off)
            out.append(signo)


def set_child_subreaper(on: bool = True) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to this process, not init."""
    r = lib.cl_set_child_subreaper(int(on))
    if r < 0:
        raise OSError(-r, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(-r)}")


def tune_malloc(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc mallopt(): allocations under `mmap_threshold` come from the heap, whose free top is given back
    to the kernel only past `trim_threshold`. Both fixed (glibc's own are dynamic). False without glibc."""
    r = lib.cl_tune_malloc(mmap_threshold, trim_threshold)
    if r == -errno.ENOSYS:
        return False
    if r < 0:
        raise ValueError(f"mallopt refused mmap_threshold={mmap_threshold}, trim_threshold={trim_threshold}")
    return True


def count_byte(data: bytes | memoryview, byte: int, start: int = 0, end: int | None = None) -> int:
    """data[start:end].count(bytes([byte])) (start and end as non-negative indexes), vectorised in C: about
    10x faster than bytes.count() on a 128 KiB block of 100-byte lines."""
    stop = len(data) if end is None else min(end, len(data))
    if start >= stop:
        return 0
    return int(lib.cl_count_byte(ffi.from_buffer(data) + start, stop - start, byte))


def get_child_subreaper() -> bool:
    r = lib.cl_get_child_subreaper()
    if r < 0:
        raise OSError(-r, f"prctl(PR_GET_CHILD_SUBREAPER): {os.strerror(-r)}")
    return bool(r)
