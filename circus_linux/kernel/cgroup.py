"""cgroup v2 (+ v1 cpu/cpuacct/pids on hybrid hosts) directories, limits, stats, kill and events.

Synchronous and policy-free: the asyncio runtime decides *when*; this module only does the file I/O.
It never touches the v1 memory hierarchy (see CgroupTree) and never blocks longer than a caller's
explicit timeout (``WatcherCgroup.wait_empty``, ``CgroupTree.destroy``).
The kernel's Documentation/admin-guide/cgroup-v2.rst is the reference for every file used here.

Public API
----------
``detect(self_cgroup_file, mountinfo) -> CgroupHost``
    Where the cgroup2 mount is (pure ``/sys/fs/cgroup`` or hybrid ``/sys/fs/cgroup/unified``), our own v2
    path and available controllers, and every v1 hierarchy with its controllers and our own path in it.
``CgroupTree.build(host, cgroup_root=None, *, delegated=None, v1_controllers=DEFAULT_V1) -> CgroupTree``
    The root under which each watcher gets its own cgroup. Three modes (``TreeMode``):

    * EXPLICIT: ``cgroup_root`` (config ``[circus] cgroup_root``) is a hierarchy path such as
      ``/circus`` (or a filesystem path under the v2 mount); created if missing. v1 roots use the same
      hierarchy path in each v1 hierarchy.
    * DELEGATED: we sit in a ``*.service``/``*.scope`` v2 cgroup that is writable (systemd Delegate=yes).
      Every process of that cgroup (circusd and any wrapper) moves to the leaf ``<own>/supervisor``
      (the "no internal processes" rule), then every controller of ``<own>/cgroup.controllers`` is
      enabled in ``<own>/cgroup.subtree_control``; watchers live in ``<own>/<watcher>``.
    * DEFAULT: a ``circus`` child of the v2 cgroup circusd started in, created if missing.

    In every mode the controllers available to the root are enabled in the root's subtree_control (the
    root holds no process), and on hybrid hosts per-watcher v1 cgroups are made in the cpu, cpuacct and
    pids hierarchies under ``<our v1 path>/circus`` (DEFAULT/DELEGATED). The v1 *memory* hierarchy is
    never used: a process belongs to exactly one memory cgroup per hierarchy, and moving a worker into
    ours would pull it out of whatever memory cgroup the host put circusd in (on the project's CI every
    process must stay in memory:/process_api). Memory limits/stats are therefore v2-only.
    ``CgroupUnavailable`` (path + errno) when no root can be created.
``CgroupTree.watcher(name) -> WatcherCgroup`` (create, idempotent), ``release(cg)`` (forget one removed),
    ``orphan(cg)`` (its processes run on: a new watcher of that name gets ``<name>~N``),
    ``destroy(timeout)`` (only the cgroups this tree handed out: a shared root's siblings are left alone).
``WatcherCgroup``: ``dir_fd()`` (O_PATH fd for CLONE_INTO_CGROUP), ``v1_procs_fds()`` (O_WRONLY fds on
    each v1 cgroup.procs, the spawned child writes "0"), ``pids()``, ``populated()``, ``events()``,
    ``events_path``/``open_events()``, ``kill()``, ``signal_all(sig)``, ``freeze()``/``thaw()``,
    ``wait_empty(timeout)``, ``remove()``, ``apply_limits(CgroupLimits) -> {limit: Backend}``,
    ``stats() -> CgroupStats``.
``Placement(WatcherCgroup)``: the spawner's fds of one watcher cgroup (``dir_fd()``, ``v1_procs_fds()``),
    opened once and kept until ``close()``; ``tree_for(cgroup_root)``: the tree a config asks for.
``EventsMonitor`` (cgroup_events.py): one epoll fd for many cgroup.events / memory.events files; give
    ``fileno()`` to ``loop.add_reader`` and call ``poll()`` when readable.

Split: cgroup_parse.py (pure parsers), cgroup_io.py (errors, file primitives), cgroup_limits.py
(CgroupLimits/apply_limits, CgroupStats/read_stats, Backend), cgroup_events.py (EventsMonitor); the
names are re-exported here, so callers import only ``circus_linux.kernel.cgroup``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import os
import select
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from circus_linux.kernel.cgroup_events import EventsMonitor
from circus_linux.kernel.cgroup_io import CgroupError, CgroupUnavailable, read_file, write_file
from circus_linux.kernel.cgroup_limits import (
    Backend,
    CgroupLimits,
    CgroupStats,
    apply_limits,
    plan_limits,
    read_stats,
)
from circus_linux.kernel.cgroup_parse import (
    CgroupMount,
    Membership,
    cgroup_dir,
    parse_flat_keyed,
    parse_mountinfo,
    parse_pids,
    parse_proc_cgroup,
    sanitize_name,
)
from circus_linux.kernel.native import SpawnError

__all__ = [
    "DEFAULT_V1",
    "Backend",
    "CgroupError",
    "CgroupHost",
    "CgroupLimits",
    "CgroupStats",
    "CgroupTree",
    "CgroupUnavailable",
    "EventsMonitor",
    "PidsMaxReached",
    "Placement",
    "TreeMode",
    "V1Hierarchy",
    "WatcherCgroup",
    "detect",
]

#: v1 controllers used on hybrid hosts. "memory" is deliberately absent (see the module docstring).
DEFAULT_V1: tuple[str, ...] = ("cpu", "cpuacct", "pids")
SUPERVISOR_LEAF = "supervisor"
DEFAULT_CHILD = "circus"
# [circus] cgroup_root values that turn cgroups off: workers stay in circusd's own cgroup.
OFF_SETTINGS = frozenset({"no", "none", "off", "false"})


class TreeMode(enum.StrEnum):
    EXPLICIT = "explicit"
    DELEGATED = "delegated"
    DEFAULT = "default"


@dataclass(frozen=True)
class V1Hierarchy:
    """A mounted v1 hierarchy: its controllers and the path circusd sits at in it."""

    mountpoint: str
    mount_root: str  # hierarchy path mounted at mountpoint ("/" unless a subtree is bind-mounted)
    controllers: frozenset[str]
    own_path: str  # hierarchy path of our cgroup, as in /proc/self/cgroup
    own_dir: str  # its filesystem directory
    read_only: bool


@dataclass(frozen=True)
class CgroupHost:
    """What this host offers, as seen by the calling process."""

    v2_mount: str | None
    v2_mount_root: str | None  # hierarchy path mounted at v2_mount
    v2_path: str | None  # our own v2 hierarchy path ("/" for the root)
    v2_dir: str | None  # its filesystem directory
    v2_controllers: frozenset[str]  # cgroup.controllers of our own v2 cgroup
    v1: Mapping[str, V1Hierarchy]  # controller (or name=...) -> hierarchy

    @property
    def hybrid(self) -> bool:
        return self.v2_mount is not None and bool(self.v1)


def _pick_v2(mounts: list[CgroupMount], path: str | None) -> tuple[CgroupMount | None, str | None]:
    v2 = [m for m in mounts if m.version == 2]
    # Prefer the standard places when a cgroup2 fs is mounted more than once.
    v2.sort(key=lambda m: m.mountpoint not in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"))
    for m in v2:
        d = cgroup_dir(m, path) if path is not None else None
        if path is None or d is not None:
            return m, d
    return None, None


def hier_dir(mountpoint: str, mount_root: str, hier: str) -> str | None:
    """Filesystem dir of hierarchy path ``hier`` through a mount; None if outside the mounted subtree."""
    return cgroup_dir(CgroupMount(mountpoint, mount_root, 2, frozenset(), False), hier)


def host_from_texts(self_cgroup: str, mountinfo: str) -> tuple[Membership, list[CgroupMount], CgroupHost]:
    """Pure part of ``detect``: everything except reading cgroup.controllers."""
    member = parse_proc_cgroup(self_cgroup)
    mounts = parse_mountinfo(mountinfo)
    v2_mount, v2_dir = _pick_v2(mounts, member.v2)
    v1: dict[str, V1Hierarchy] = {}
    for m in mounts:
        if m.version != 1:
            continue
        for ctrl in m.controllers:
            if ctrl in v1 or ctrl not in member.v1:
                continue
            d = cgroup_dir(m, member.v1[ctrl])
            if d is None:
                continue
            v1[ctrl] = V1Hierarchy(m.mountpoint, m.root, m.controllers, member.v1[ctrl], d, m.read_only)
    host = CgroupHost(
        v2_mount=v2_mount.mountpoint if v2_mount else None,
        v2_mount_root=v2_mount.root if v2_mount else None,
        v2_path=member.v2 if v2_mount else None,
        v2_dir=v2_dir,
        v2_controllers=frozenset(),
        v1=v1,
    )
    return member, mounts, host


def detect(
    self_cgroup_file: str = "/proc/self/cgroup", mountinfo: str = "/proc/self/mountinfo"
) -> CgroupHost:
    """Describe the cgroup setup of the calling process."""
    _, _, host = host_from_texts(read_file(self_cgroup_file), read_file(mountinfo))
    ctrls: frozenset[str] = frozenset()
    if host.v2_dir is not None:
        with contextlib.suppress(FileNotFoundError):
            ctrls = frozenset(read_file(os.path.join(host.v2_dir, "cgroup.controllers")).split())
    return dataclasses.replace(host, v2_controllers=ctrls)


def _rmtree_cgroup(path: str) -> None:
    """rmdir a cgroup directory and its child cgroups bottom-up (cgroupfs has only dirs to remove)."""
    for top, dirs, _files in os.walk(path, topdown=False):
        for d in dirs:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(top, d))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def _procs_recursive(path: str) -> list[int]:
    pids: list[int] = []
    for top, _dirs, _files in os.walk(path):
        with contextlib.suppress(FileNotFoundError):  # a child cgroup removed while walking
            pids.extend(parse_pids(read_file(os.path.join(top, "cgroup.procs"))))
    return pids


def _pid_in_cgroup(pid: int, v2_path: str | None, v1: tuple[str, str] | None) -> bool:
    """True if /proc/<pid>/cgroup puts the pid at or under our hierarchy path."""
    try:
        member = parse_proc_cgroup(read_file(f"/proc/{pid}/cgroup"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    if v2_path is not None:
        p = member.v2
    elif v1 is not None:
        p = member.v1.get(v1[0])
        v2_path = v1[1]
    else:
        return False
    return p is not None and (p == v2_path or p.startswith(v2_path.rstrip("/") + "/"))


class WatcherCgroup:
    """The cgroup (v2 dir plus v1 dirs on hybrid hosts) of one watcher."""

    def __init__(
        self,
        name: str,
        dirname: str,
        path: str | None,
        hier_path: str | None,
        v1_paths: Mapping[str, str],
        v1_hier_paths: Mapping[str, str],
    ) -> None:
        self.name = name
        self.dirname = dirname
        self.path = path  # v2 filesystem dir, None on a v1-only host
        self.hier_path = hier_path  # v2 hierarchy path (as /proc/<pid>/cgroup shows it)
        self.v1_paths = dict(v1_paths)  # controller -> dir; co-mounted controllers share a dir
        self.v1_hier_paths = dict(v1_hier_paths)  # controller -> hierarchy path

    def __repr__(self) -> str:
        return f"WatcherCgroup({self.name!r}, v2={self.path!r}, v1={self.v1_paths!r})"

    # -- placement ---------------------------------------------------------------------------------
    def dir_fd(self) -> int:
        """An O_PATH directory fd for clone3(CLONE_INTO_CGROUP); the caller closes it."""
        if self.path is None:
            raise CgroupError("no cgroup2 directory for watcher", self.name)
        return os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def v1_dirs(self) -> list[str]:
        """Distinct v1 directories (one per hierarchy)."""
        return sorted(set(self.v1_paths.values()))

    def v1_procs_fds(self) -> list[int]:
        """O_WRONLY fds on each v1 cgroup.procs; the spawned child writes "0" to join. Caller closes."""
        fds: list[int] = []
        try:
            for d in self.v1_dirs():
                fds.append(os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def add_pid(self, pid: int) -> None:
        """Move an existing process into this watcher's cgroups (v2 and every v1 dir)."""
        for d in ([self.path] if self.path else []) + self.v1_dirs():
            write_file(os.path.join(d, "cgroup.procs"), str(pid))

    # -- membership and events ----------------------------------------------------------------------
    def _primary(self) -> str:
        if self.path is not None:
            return self.path
        dirs = self.v1_dirs()
        if not dirs:
            raise CgroupError("watcher has no cgroup directory", self.name)
        return dirs[0]

    def pids(self) -> list[int]:
        """Every pid in the watcher's cgroup, including grandchildren and child cgroups."""
        return _procs_recursive(self._primary())

    @property
    def events_path(self) -> str | None:
        return None if self.path is None else os.path.join(self.path, "cgroup.events")

    @property
    def memory_events_path(self) -> str | None:
        if self.path is None:
            return None
        p = os.path.join(self.path, "memory.events")
        return p if os.path.exists(p) else None

    def events(self) -> dict[str, int]:
        """cgroup.events as a dict (``populated``, ``frozen``)."""
        if self.events_path is None:
            return {"populated": int(bool(self.pids()))}
        return parse_flat_keyed(read_file(self.events_path))

    def populated(self) -> bool:
        return bool(self.events().get("populated", 0))

    def open_events(self) -> int:
        """A read-only fd on cgroup.events; poll it for POLLPRI (see module docstring). Caller closes."""
        if self.events_path is None:
            raise CgroupError("no cgroup.events without cgroup2", self.name)
        return os.open(self.events_path, os.O_RDONLY | os.O_CLOEXEC)

    def wait_empty(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until no process is left; True if empty."""
        deadline = time.monotonic() + timeout
        if self.events_path is None:
            # v1-only: no notification exists; poll the pid list against the deadline.
            while self.pids():
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
            return True
        fd = self.open_events()
        ep = select.epoll()
        try:
            ep.register(fd, select.EPOLLPRI)
            while True:
                # Re-reading clears the pending POLLPRI; read after registering so no change is missed.
                if not parse_flat_keyed(os.pread(fd, 4096, 0).decode()).get("populated", 0):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                ep.poll(left)
        finally:
            ep.close()
            os.close(fd)

    # -- signals ------------------------------------------------------------------------------------
    def signal_all(self, sig: int, _seen: dict[int, int] | None = None) -> int:
        """Send ``sig`` once to every process in the cgroup through a pidfd; return how many got it.

        pidfd_open pins the process; /proc/<pid>/cgroup is then checked while the pidfd shows it alive,
        so a pid reused by a process outside the cgroup is never signalled.
        """
        sent = 0
        v1 = None if self.path is not None else next(iter(self.v1_hier_paths.items()), None)
        for pid in self.pids():
            if _seen is not None and pid in _seen:
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                if not _pid_in_cgroup(pid, self.hier_path, v1):
                    continue
                p = select.poll()
                p.register(pidfd, select.POLLIN)
                if p.poll(0):  # exited after pidfd_open: /proc may have shown a reused pid
                    continue
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, sig)
                    sent += 1
            finally:
                if _seen is not None:
                    _seen[pid] = 1
                os.close(pidfd)
        return sent

    def kill(self, *, use_cgroup_kill: bool = True) -> None:
        """SIGKILL everything in the cgroup; returns once sent (``wait_empty`` to await the exits).

        cgroup.kill (kernel >= 5.14) is atomic against forks. Without it, freeze (so nothing forks),
        SIGKILL pid by pid until a pass finds no pid not already killed (a task with SIGKILL pending
        cannot fork), then thaw so the killed tasks can die.
        """
        kill_file = None if self.path is None else os.path.join(self.path, "cgroup.kill")
        if use_cgroup_kill and kill_file is not None and os.path.exists(kill_file):
            write_file(kill_file, "1")
            return
        self._kill_by_signal()

    def _kill_by_signal(self) -> None:
        can_freeze = self.path is not None and os.path.exists(os.path.join(self.path, "cgroup.freeze"))
        if can_freeze:
            self.freeze()
        try:
            seen: dict[int, int] = {}
            for _ in range(1000):  # bounded: each pass kills every pid still listed
                before = len(seen)
                self.signal_all(signal.SIGKILL, seen)
                if len(seen) == before:
                    break
        finally:
            if can_freeze:
                self.thaw()

    def freeze(self) -> None:
        """Ask the v2 freezer to stop the cgroup (``events()['frozen']`` turns 1 when done)."""
        if self.path is None:
            raise CgroupError("freezing needs cgroup2", self.name)
        write_file(os.path.join(self.path, "cgroup.freeze"), "1")

    def thaw(self) -> None:
        if self.path is None:
            raise CgroupError("freezing needs cgroup2", self.name)
        write_file(os.path.join(self.path, "cgroup.freeze"), "0")

    def remove(self) -> None:
        """rmdir the watcher's cgroups (v2 and v1, child cgroups first). EBUSY while processes remain."""
        for d in ([self.path] if self.path else []) + self.v1_dirs():
            try:
                _rmtree_cgroup(d)
            except OSError as e:
                raise CgroupError("cannot remove cgroup", d, e.errno) from e

    # -- limits -------------------------------------------------------------------------------------
    def v2_controllers(self) -> frozenset[str]:
        """Controllers enabled for this cgroup (its cgroup.controllers)."""
        if self.path is None:
            return frozenset()
        return frozenset(read_file(os.path.join(self.path, "cgroup.controllers")).split())

    def apply_limits(self, limits: CgroupLimits) -> dict[str, Backend]:
        """Write every limit that is not None; return which backend took each one (see cgroup_limits)."""
        return apply_limits(self.path, self.v2_controllers(), self.v1_paths, limits)

    def limit_backends(self, limits: CgroupLimits) -> dict[str, Backend]:
        """Which backend would take each limit that is not None, without writing anything."""
        plan = plan_limits(self.path, self.v2_controllers(), self.v1_paths, limits)
        return {limit: backend for limit, backend, _writes in plan}

    def stats(self) -> CgroupStats:
        """Sample the counters; each field group says its source in ``backends``."""
        return read_stats(self.path, self.v1_paths)


class PidsMaxReached(SpawnError):
    """A spawn refused because the v1 pids cgroup is full: EAGAIN at the clone stage, as the v2 pids
    controller refuses a clone3(CLONE_INTO_CGROUP) past pids.max. ``current``/``limit``: what was read."""

    def __init__(self, path: str, current: int, limit: int) -> None:
        super().__init__(errno.EAGAIN, "clone", path)
        self.current = current
        self.limit = limit


class Placement:
    """The fds the spawner needs to put a child into a watcher's cgroup, opened once rather than at every
    spawn: ``dir_fd()`` for CLONE_INTO_CGROUP (None without a v2 directory) and ``v1_procs_fds()``.
    ``close()`` closes them (idempotent).

    When the v1 pids hierarchy serves pids_max (no v2 pids controller here), ``v1_procs_fds()`` first
    checks pids.current + 1 <= pids.max and raises PidsMaxReached otherwise: a worker joins the v1 cgroup
    by migration (the child writes "0" to cgroup.procs), which pids.max never refuses, so without this
    check a watcher ran more workers than its pids_max (Documentation/admin-guide/cgroup-v1/pids.rst:
    "migration ... is not prevented"). Race-free as far as circusd goes: it is the only spawner into the
    cgroup and each spawn returns only after the child has joined it; a worker's own fork counts too.
    """

    def __init__(self, cg: WatcherCgroup) -> None:
        self._dir_fd = cg.dir_fd() if cg.path is not None else None
        self._v1_fds: list[int] = []
        v1_pids = cg.v1_paths.get("pids")
        self._v1_pids = v1_pids if v1_pids is not None and "pids" not in cg.v2_controllers() else None
        try:
            self._v1_fds = cg.v1_procs_fds()
        except OSError:
            self.close()
            raise

    def dir_fd(self) -> int | None:
        return self._dir_fd

    def v1_procs_fds(self) -> list[int]:
        """The v1 cgroup.procs fds; PidsMaxReached when the v1 pids cgroup has no room for one more."""
        if self._v1_pids is not None:
            self._check_v1_pids(self._v1_pids)
        return list(self._v1_fds)

    @staticmethod
    def _check_v1_pids(d: str) -> None:
        try:
            limit = read_file(os.path.join(d, "pids.max")).strip()
            if limit == "max":
                return
            current = int(read_file(os.path.join(d, "pids.current")))
        except (OSError, ValueError):  # unreadable: the kernel's own checks are all that is left
            return
        if current + 1 > int(limit):
            raise PidsMaxReached(d, current, int(limit))

    def close(self) -> None:
        for fd in [self._dir_fd, *self._v1_fds]:
            if fd is not None:
                os.close(fd)
        self._dir_fd = None
        self._v1_fds = []


def tree_for(cgroup_root: str | None) -> CgroupTree | None:
    """The tree ``[circus] cgroup_root`` asks for (None: it turns cgroups off). Raises CgroupError."""
    if cgroup_root in OFF_SETTINGS:
        return None
    return CgroupTree.build(detect(), cgroup_root)


class CgroupTree:
    """circusd's cgroup root and the per-hierarchy v1 roots; hands out WatcherCgroups."""

    def __init__(
        self,
        host: CgroupHost,
        mode: TreeMode,
        root: str | None,
        root_hier: str | None,
        v1_roots: Mapping[str, str],
        v1_root_hiers: Mapping[str, str],
        supervisor: str | None,
        created: list[str],
        v1_errors: Mapping[str, str],
    ) -> None:
        self.host = host
        self.mode = mode
        self.root = root  # v2 dir watchers go under
        self.root_hier = root_hier
        self.v1_roots = dict(v1_roots)  # controller -> dir
        self.v1_root_hiers = dict(v1_root_hiers)
        self.supervisor = supervisor  # leaf circusd moved into (DELEGATED), else None
        self.created = list(created)  # dirs this tree created, outermost first
        self.v1_errors = dict(v1_errors)  # controller -> why its v1 root is missing
        # The watcher cgroups this tree handed out (dirname -> cgroup), and those released with their
        # processes left running (`rm --nostop`): destroy() touches only these. Another circusd may share
        # the root (the same cgroup_root, or two DEFAULT-mode circusd started from one cgroup): its
        # watchers are siblings of ours, and are not ours to kill.
        self._owned: dict[str, WatcherCgroup] = {}
        self._orphans: dict[str, WatcherCgroup] = {}

    def __repr__(self) -> str:
        return f"CgroupTree({self.mode.value}, v2={self.root!r}, v1={self.v1_roots!r})"

    @classmethod
    def build(
        cls,
        host: CgroupHost,
        cgroup_root: str | None = None,
        *,
        delegated: bool | None = None,
        v1_controllers: Iterable[str] = DEFAULT_V1,
    ) -> CgroupTree:
        """Set up the root (see the module docstring for the three modes). Raises CgroupUnavailable."""
        created: list[str] = []
        supervisor = None
        root: str | None = None
        root_hier: str | None = None
        if cgroup_root is not None:
            mode = TreeMode.EXPLICIT
            root_hier = _explicit_hier(host, cgroup_root)
        elif delegated if delegated is not None else _looks_delegated(host):
            mode = TreeMode.DELEGATED
            root_hier = host.v2_path
        else:
            mode = TreeMode.DEFAULT
            if host.v2_path is not None:
                root_hier = _join_hier(host.v2_path, DEFAULT_CHILD)
        if host.v2_mount is not None and root_hier is not None:
            root = hier_dir(host.v2_mount, host.v2_mount_root or "/", root_hier)
            if root is None:
                raise CgroupUnavailable("cgroup_root is outside the mounted cgroup2 subtree", root_hier)
            if mode is TreeMode.DELEGATED:
                supervisor = os.path.join(root, SUPERVISOR_LEAF)
                _mkdirs(supervisor, created)
                _move_all(root, supervisor)
            else:
                _mkdirs(root, created)
            _enable_controllers(root)
        # v1 roots: same hierarchy path as an explicit root; else <our v1 path>/circus.
        v1_roots: dict[str, str] = {}
        v1_hiers: dict[str, str] = {}
        v1_errors: dict[str, str] = {}
        for ctrl in v1_controllers:
            if ctrl == "memory":
                v1_errors[ctrl] = "the v1 memory hierarchy is never used"
                continue
            h = host.v1.get(ctrl)
            if h is None:
                continue
            if mode is TreeMode.EXPLICIT and root_hier:
                hier = root_hier
            else:
                hier = _join_hier(h.own_path, DEFAULT_CHILD)
            d = hier_dir(h.mountpoint, h.mount_root, hier)
            if d is None:
                v1_errors[ctrl] = f"{hier} is outside the subtree mounted at {h.mountpoint}"
                continue
            if h.read_only:
                v1_errors[ctrl] = f"{h.mountpoint} is mounted read-only"
                continue
            try:
                _mkdirs(d, created)
            except CgroupError as e:
                v1_errors[ctrl] = str(e)
                continue
            v1_roots[ctrl] = d
            v1_hiers[ctrl] = hier
        if root is None and not v1_roots:
            raise CgroupUnavailable("no cgroup2 mount and no usable v1 hierarchy", "/sys/fs/cgroup")
        return cls(host, mode, root, root_hier, v1_roots, v1_hiers, supervisor, created, v1_errors)

    def watcher(self, name: str) -> WatcherCgroup:
        """Create (or reuse) the watcher's cgroups. Raises CgroupError when the v2 dir cannot be made.

        A name whose previous cgroup was orphaned with live processes (``orphan``) gets a fresh directory,
        ``<name>~N``: the new watcher must not count, signal or kill the old one's workers.
        """
        dirname = sanitize_name(name)
        if dirname in self._orphans and not self._reclaim(dirname):
            dirname = self._fresh_dirname(dirname)
        path = hier = None
        created: list[str] = []
        if self.root is not None and self.root_hier is not None:
            path = os.path.join(self.root, dirname)
            hier = _join_hier(self.root_hier, dirname)
            _mkdirs(path, created)
        v1p: dict[str, str] = {}
        v1h: dict[str, str] = {}
        for ctrl, d in self.v1_roots.items():
            p = os.path.join(d, dirname)
            _mkdirs(p, created)
            v1p[ctrl] = p
            v1h[ctrl] = _join_hier(self.v1_root_hiers[ctrl], dirname)
        cg = WatcherCgroup(name, dirname, path, hier, v1p, v1h)
        self._owned[dirname] = cg
        return cg

    def release(self, cg: WatcherCgroup) -> None:
        """Forget a watcher cgroup the caller removed (or is about to): destroy() leaves it alone."""
        if self._owned.get(cg.dirname) is cg:
            del self._owned[cg.dirname]
        if self._orphans.get(cg.dirname) is cg:
            del self._orphans[cg.dirname]

    def orphan(self, cg: WatcherCgroup) -> None:
        """The watcher is gone but its processes run on (``rm --nostop``): keep the cgroup aside.

        cgroup2 has no rename, so the cgroup keeps its directory and a new watcher of the same name gets
        another one; destroy() still kills what is left in it when circusd exits (no child outlives us).
        """
        self.release(cg)
        self._orphans[cg.dirname] = cg

    def owned(self) -> list[WatcherCgroup]:
        """The watcher cgroups destroy() would remove: handed out and not released, plus the orphans."""
        return [*self._owned.values(), *self._orphans.values()]

    def _reclaim(self, dirname: str) -> bool:
        """Remove an orphaned cgroup whose processes have all exited; True when its name is free again."""
        cg = self._orphans[dirname]
        try:
            if cg.populated():
                return False
            cg.remove()
        except (OSError, CgroupError):
            return False
        del self._orphans[dirname]
        return True

    def _fresh_dirname(self, dirname: str) -> str:
        """``dirname~N`` for the smallest N >= 2 free in every root (sanitize_name never yields a '~'
        followed by a short number: '~' is escaped, and its hash suffix is 16 hex digits)."""
        bases = [b for b in (self.root, *self.v1_roots.values()) if b is not None]
        n = 2
        while True:
            suffix = f"~{n}"
            cand = dirname[: 255 - len(suffix)] + suffix
            taken = cand in self._owned or cand in self._orphans
            if not taken and not any(os.path.lexists(os.path.join(b, cand)) for b in bases):
                return cand
            n += 1

    def watcher_dirs(self) -> list[str]:
        """Directory names of existing watcher cgroups under the v2 (or first v1) root."""
        base = self.root or next(iter(self.v1_roots.values()), None)
        if base is None or not os.path.isdir(base):
            return []
        return sorted(
            e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False) and e.name != SUPERVISOR_LEAF
        )

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill the processes of the watcher cgroups this tree handed out (``owned``), rmdir them, then
        the dirs this tree created.

        Only ours: a sibling cgroup under a shared root belongs to another circusd, and a created dir
        that another circusd's watchers still use (EBUSY) stays. The supervisor leaf and our own cgroup
        are never killed. Raises CgroupError if something of ours survives the timeout.
        """
        deadline = time.monotonic() + timeout
        failed: CgroupError | None = None
        for w in self.owned():
            try:
                w.kill()
                if w.path is None and w.v1_dirs():
                    w._kill_by_signal()  # v1 dirs only: cgroup.kill did not apply
                if not w.wait_empty(max(0.0, deadline - time.monotonic())):
                    raise CgroupError("processes survived SIGKILL in cgroup", w.path or w.v1_dirs()[0])
                w.remove()
            except FileNotFoundError:  # removed meanwhile: nothing left to do
                pass
            except CgroupError as e:
                failed = failed or e
                continue
            self.release(w)
        for d in reversed(self.created):
            if self.supervisor is not None and d == self.supervisor:
                continue  # circusd lives there
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    continue  # a shared root: another circusd's watcher cgroups are still in it
                failed = failed or CgroupError("cannot remove cgroup", d, e.errno)
        if failed is not None:
            raise failed


# -- tree helpers ---------------------------------------------------------------------------------------
def _join_hier(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _explicit_hier(host: CgroupHost, cgroup_root: str) -> str:
    """An explicit root is a hierarchy path ("/circus") or a filesystem path under the v2 mount."""
    if host.v2_mount is not None:
        m = host.v2_mount.rstrip("/")
        if cgroup_root.startswith(m + "/"):
            return "/" + cgroup_root[len(m) + 1 :].strip("/")
    if not cgroup_root.startswith("/"):
        cgroup_root = "/" + cgroup_root
    return cgroup_root.rstrip("/") or "/"


def _looks_delegated(host: CgroupHost) -> bool:
    """A systemd service/scope cgroup we can write: what Delegate=yes gives us."""
    if host.v2_dir is None or host.v2_path is None:
        return False
    leaf = host.v2_path.rstrip("/").rsplit("/", 1)[-1]
    if not leaf.endswith((".service", ".scope")):
        return False
    return all(
        os.access(os.path.join(host.v2_dir, f), os.W_OK) for f in ("cgroup.procs", "cgroup.subtree_control")
    )


def _mkdirs(path: str, created: list[str]) -> None:
    """mkdir -p, remembering what was made; CgroupUnavailable names the path and errno."""
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue
        except OSError as e:
            raise CgroupUnavailable("cannot create cgroup", d, e.errno) from e
        created.append(d)


def _move_all(src: str, dst: str) -> None:
    """Move every process of cgroup ``src`` into ``dst`` (rereading: new ones may appear)."""
    for _ in range(100):
        pids = parse_pids(read_file(os.path.join(src, "cgroup.procs")))
        if not pids:
            return
        for pid in pids:
            try:
                write_file(os.path.join(dst, "cgroup.procs"), str(pid))
            except ProcessLookupError:
                continue
            except OSError as e:
                raise CgroupUnavailable(f"cannot move pid {pid} into cgroup", dst, e.errno) from e
    raise CgroupUnavailable("processes keep appearing in delegated cgroup", src)


def _enable_controllers(root: str) -> None:
    """Enable in root/cgroup.subtree_control each controller root/cgroup.controllers offers.

    One write per controller so a refusal (EBUSY: processes in root; EINVAL/ENOENT: not offered,
    or a threaded-mode restriction) only loses that controller.
    """
    try:
        avail = read_file(os.path.join(root, "cgroup.controllers")).split()
        enabled = set(read_file(os.path.join(root, "cgroup.subtree_control")).split())
    except FileNotFoundError:
        return
    for c in avail:
        if c in enabled:
            continue
        # EBUSY/EINVAL/ENOENT leave that controller disabled; apply_limits reports it unsupported.
        with contextlib.suppress(OSError):
            write_file(os.path.join(root, "cgroup.subtree_control"), "+" + c)
