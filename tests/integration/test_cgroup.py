"""Real cgroup tests on this host: trees under <cgroup2>/circus-test-<pid>-N (+ v1 cpu/cpuacct/pids)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from circus_linux.kernel import cgroup as cg
from circus_linux.kernel.cgroup_parse import parse_flat_keyed, parse_proc_cgroup

PROJECT = str(Path(__file__).resolve().parents[2])
_counter = itertools.count()
T = TypeVar("T")


def _deadline_poll(pred: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll pred() until truthy or the deadline passes (kernel state with no notification to wait on)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        # Yield the CPU without a fixed sleep: the child we wait for runs on the other core or next.
        os.sched_yield()


@pytest.fixture(scope="module")
def host() -> cg.CgroupHost:
    if os.geteuid() != 0:
        pytest.skip("cgroup tests need root")
    h = cg.detect()
    if h.v2_mount is None:
        pytest.skip("no cgroup2 mount on this host")
    return h


@pytest.fixture
def tree(host: cg.CgroupHost) -> Iterator[cg.CgroupTree]:
    t = cg.CgroupTree.build(host, f"/circus-test-{os.getpid()}-{next(_counter)}")
    assert t.mode is cg.TreeMode.EXPLICIT
    try:
        yield t
    finally:
        t.destroy(timeout=10)
        assert [d for d in t.created if os.path.exists(d)] == []


class Children:
    """Direct children of the test; each killed and reaped in teardown."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def spawn_gated(self, w: cg.WatcherCgroup, argv: list[str], extra_fds: Sequence[int] = ()) -> int:
        """posix_spawn argv with stdin on a pipe; move it into ``w``, then release it (it reads a line).

        ``extra_fds`` are handed to the child as fds 4, 5, ... (the spawner contract for v1 procs fds).
        """
        r, wr = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_CLOSE, wr)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, 4 + i) for i, fd in enumerate(extra_fds)]
        try:
            pid = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions)
        finally:
            os.close(r)
        self.pids.append(pid)
        try:
            if not extra_fds:
                w.add_pid(pid)
            os.write(wr, b"go\n")
        finally:
            os.close(wr)
        return pid

    def wait(self, pid: int, timeout: float = 5.0) -> int:
        """Reap ``pid`` against a deadline (pidfd poll, no sleep); returns the raw wait status."""
        pidfd = os.pidfd_open(pid)
        try:
            p = select.poll()
            p.register(pidfd, select.POLLIN)
            assert p.poll(timeout * 1000), f"pid {pid} did not exit in {timeout}s"
        finally:
            os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        self.pids.remove(pid)
        return status

    def cleanup(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):  # gone between the listing and the read
        return ""


DOUBLE_FORK = ["/bin/sh", "-c", "read _; (sleep 1000 &) ; sleep 1000"]


def test_pids_include_double_forked_grandchild(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("web")
    pid = children.spawn_gated(w, DOUBLE_FORK)
    sleeps = _deadline_poll(lambda: len([p for p in w.pids() if _comm(p) == "sleep"]) == 2, what="2 sleeps")
    assert sleeps
    assert pid in w.pids()
    assert w.populated()


@pytest.mark.parametrize("use_cgroup_kill", [True, False], ids=["cgroup.kill", "pidfd-fallback"])
def test_kill_reaches_orphaned_grandchild(
    tree: cg.CgroupTree, children: Children, use_cgroup_kill: bool
) -> None:
    w = tree.watcher("killme")
    if use_cgroup_kill and not os.path.exists(os.path.join(w.path or "", "cgroup.kill")):
        pytest.skip("cgroup.kill missing (kernel < 5.14)")
    pid = children.spawn_gated(w, DOUBLE_FORK)
    _deadline_poll(lambda: len([p for p in w.pids() if _comm(p) == "sleep"]) == 2, what="2 sleeps")
    # pidfds on the orphans (not our children) tell us they died, with no pid-reuse doubt.
    orphan_fds = [os.pidfd_open(p) for p in w.pids() if p != pid]
    try:
        assert len(orphan_fds) >= 1
        w.kill(use_cgroup_kill=use_cgroup_kill)
        assert w.wait_empty(5.0)
        status = children.wait(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert w.pids() == []
        for fd in orphan_fds:
            p = select.poll()
            p.register(fd, select.POLLIN)
            assert p.poll(0), "an orphaned grandchild survived"
    finally:
        for fd in orphan_fds:
            os.close(fd)
    assert w.events().get("frozen") == 0  # the fallback thawed what it froze


def test_populated_transition_seen_through_events_monitor(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("ev")
    assert w.events_path is not None
    with cg.EventsMonitor() as mon:
        first = mon.add("ev", w.events_path)
        assert parse_flat_keyed(first)["populated"] == 0
        pid = children.spawn_gated(w, ["/bin/sh", "-c", "read _; exec sleep 1000"])
        seen: list[int] = []

        def wait_for(value: int) -> None:
            end = time.monotonic() + 5
            while time.monotonic() < end:
                for key, text in mon.poll(end - time.monotonic()):
                    assert key == "ev"
                    seen.append(parse_flat_keyed(text)["populated"])
                if seen and seen[-1] == value:
                    return
            pytest.fail(f"populated never became {value}: {seen}")

        wait_for(1)
        os.kill(pid, signal.SIGTERM)
        t0 = time.monotonic()
        wait_for(0)
        latency = time.monotonic() - t0
        children.wait(pid)
        assert latency < 1.0
        assert mon.poll(0) == []  # reading cleared the notification


def test_open_events_pollpri(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("pri")
    fd = w.open_events()
    try:
        p = select.poll()
        p.register(fd, select.POLLPRI)
        os.pread(fd, 4096, 0)
        assert p.poll(0) == []
        children.spawn_gated(w, ["/bin/sh", "-c", "read _; exec sleep 1000"])
        ev = p.poll(5000)
        assert ev and ev[0][1] & select.POLLPRI
        assert parse_flat_keyed(os.pread(fd, 4096, 0).decode())["populated"] == 1
    finally:
        os.close(fd)


def test_events_monitor_drives_asyncio(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("aio")
    assert w.events_path is not None

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[str] = asyncio.Queue()
        with cg.EventsMonitor() as mon:
            mon.add(w.name, w.events_path or "")

            def on_readable() -> None:
                for _, t in mon.poll():
                    got.put_nowait(t)

            loop.add_reader(mon.fileno(), on_readable)
            try:
                children.spawn_gated(w, ["/bin/sh", "-c", "read _; exec sleep 1000"])
                text = await asyncio.wait_for(got.get(), 5)
                w.kill()
                texts = [text]
                while parse_flat_keyed(texts[-1])["populated"] != 0:
                    texts.append(await asyncio.wait_for(got.get(), 5))
                return texts
            finally:
                loop.remove_reader(mon.fileno())

    texts = asyncio.run(main())
    assert parse_flat_keyed(texts[0])["populated"] == 1
    assert parse_flat_keyed(texts[-1])["populated"] == 0


def test_freeze_and_thaw(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("frz")
    children.spawn_gated(w, ["/bin/sh", "-c", "read _; exec sleep 1000"])
    with cg.EventsMonitor() as mon:
        mon.add(1, w.events_path or "")

        def wait_frozen(value: int) -> None:
            end = time.monotonic() + 5
            while w.events()["frozen"] != value:
                assert time.monotonic() < end, f"frozen never became {value}"
                mon.poll(end - time.monotonic())  # woken by the cgroup.events change

        w.freeze()
        wait_frozen(1)
        w.thaw()
        wait_frozen(0)


def test_dir_fd_is_a_cgroup2_directory(tree: cg.CgroupTree) -> None:
    w = tree.watcher("fd")
    fd = w.dir_fd()
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(w.path or ""))
    finally:
        os.close(fd)


def test_v1_procs_fds_let_the_child_join(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("v1join")
    if not w.v1_paths:
        pytest.skip("no v1 cpu/cpuacct/pids hierarchies on this host")
    fds = w.v1_procs_fds()
    try:
        script = "; ".join(f"echo 0 >&{4 + i}" for i in range(len(fds))) + "; read _; exec sleep 1000"
        # The child joins the v1 groups itself, as the native spawner's child does before execve.
        pid = children.spawn_gated(w, ["/bin/sh", "-c", script], extra_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    want = w.v1_hier_paths

    def joined() -> bool:
        m = parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
        return all(m.v1.get(c) == p for c, p in want.items())

    _deadline_poll(joined, what="child in every v1 cgroup")


def test_v1_pids_max_makes_fork_fail(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("forky")
    report = w.apply_limits(cg.CgroupLimits(pids_max=4))
    if report["pids_max"] is cg.Backend.UNSUPPORTED:
        pytest.skip("neither v2 nor v1 pids controller here")
    prog = (
        "import os, signal, sys\n"
        "sys.stdin.readline()\n"
        "n = 0\n"
        "while n < 50:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        sys.exit(42 if n else 3)\n"
        "    if pid == 0:\n"
        "        signal.pause()\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "sys.exit(1)\n"
    )
    pid = children.spawn_gated(w, [sys.executable, "-c", prog])
    status = children.wait(pid, 10)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 42
    st = w.stats()
    assert st.backends["pids"] is report["pids_max"]
    assert st.pids_max_events is not None and st.pids_max_events >= 1
    assert st.pids_current is not None and 1 <= st.pids_current <= 4


def test_cpu_limits_written_and_read_back(tree: cg.CgroupTree) -> None:
    w = tree.watcher("quota")
    report = w.apply_limits(cg.CgroupLimits(cpu_max=(20000, 100000), cpu_weight=200, io_weight=50))
    if report["cpu_max"] is cg.Backend.V2:
        assert Path(w.path or "", "cpu.max").read_text().split() == ["20000", "100000"]
    elif report["cpu_max"] is cg.Backend.V1:
        d = Path(w.v1_paths["cpu"])
        assert (d / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (d / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert report["cpu_weight"] is cg.Backend.V1
        assert (d / "cpu.shares").read_text().strip() == "2048"
        w.apply_limits(cg.CgroupLimits(cpu_max=(None, 50000)))
        assert (d / "cpu.cfs_quota_us").read_text().strip() == "-1"
        assert (d / "cpu.cfs_period_us").read_text().strip() == "50000"
    else:
        pytest.skip("no cpu controller in v2 or v1")
    assert report["io_weight"] in (cg.Backend.V2, cg.Backend.UNSUPPORTED)


def test_memory_limits_never_use_v1(tree: cg.CgroupTree) -> None:
    w = tree.watcher("mem")
    report = w.apply_limits(cg.CgroupLimits(memory_max=64 << 20, memory_high="max"))
    assert "memory" not in w.v1_paths
    expected = cg.Backend.V2 if "memory" in w.v2_controllers() else cg.Backend.UNSUPPORTED
    assert report == {"memory_max": expected, "memory_high": expected}


def test_stats_of_busy_child_grow(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("busy")
    before = w.stats()
    assert before.backends["cpu"] in (cg.Backend.V2, cg.Backend.V1)
    assert before.cpu_usage_usec == 0
    children.spawn_gated(w, [sys.executable, "-c", "import sys; sys.stdin.readline()\nwhile True: pass"])

    def busy_enough() -> cg.CgroupStats | None:
        s = w.stats()
        return s if (s.cpu_usage_usec or 0) > 200_000 else None

    st = _deadline_poll(busy_enough, what="200 ms of CPU")
    assert st is not None
    assert st.cpu_user_usec is not None and st.cpu_user_usec > 0
    if st.backends["pressure"] is cg.Backend.V2:
        assert st.cpu_pressure is not None
    if "memory" not in w.v2_controllers():
        assert st.memory_current is None and st.backends["memory"] is cg.Backend.UNSUPPORTED


def test_remove_refuses_while_populated_then_leaves_nothing(tree: cg.CgroupTree, children: Children) -> None:
    w = tree.watcher("rm")
    pid = children.spawn_gated(w, ["/bin/sh", "-c", "read _; exec sleep 1000"])
    with pytest.raises(cg.CgroupError) as ei:
        w.remove()
    assert ei.value.errno is not None
    w.kill()
    assert w.wait_empty(5)
    children.wait(pid)
    w.remove()
    assert not os.path.exists(w.path or "")
    assert all(not os.path.exists(d) for d in w.v1_dirs())
    assert "rm" not in tree.watcher_dirs()


def test_unwritable_root_raises_clear_error(host: cg.CgroupHost) -> None:
    # /proc/sys refuses mkdir even for root: a stand-in for a cgroup2 tree we may not write.
    fake = cg.CgroupHost(
        v2_mount="/proc/sys",
        v2_mount_root="/",
        v2_path="/",
        v2_dir="/proc/sys",
        v2_controllers=frozenset(),
        v1={},
    )
    with pytest.raises(cg.CgroupUnavailable) as ei:
        cg.CgroupTree.build(fake, "/circus-test-nope")
    msg = str(ei.value)
    assert ei.value.errno is not None
    assert "/proc/sys/circus-test-nope" in msg and errno.errorcode[ei.value.errno] in msg


HELPER = """
import json, sys
sys.path.insert(0, {project!r})
from circus_linux.kernel import cgroup as cg
sys.stdin.readline()
host = cg.detect()
tree = cg.CgroupTree.build(host, v1_controllers=())
w = tree.watcher("web")
own = open("/proc/self/cgroup").read()
print(json.dumps({{"mode": tree.mode.value, "root": tree.root, "supervisor": tree.supervisor,
                  "watcher": w.path, "own": own, "controllers": sorted(host.v2_controllers)}}))
"""


@pytest.mark.parametrize(("leaf", "mode"), [("app.service", "delegated"), ("plain", "default")])
def test_tree_modes_in_a_helper_process(tree: cg.CgroupTree, leaf: str, mode: str) -> None:
    """circusd-like helper placed in <root>/<leaf>: Delegate=yes-like service cgroup vs a plain one."""
    assert tree.root is not None and tree.root_hier is not None
    start = os.path.join(tree.root, leaf)
    os.mkdir(start)
    proc = subprocess.Popen(
        [sys.executable, "-c", HELPER.format(project=PROJECT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        Path(start, "cgroup.procs").write_text(str(proc.pid))
        out, _ = proc.communicate("go\n", timeout=20)
    finally:
        proc.kill()
        proc.wait()
    try:
        _check_helper_tree(tree, start, leaf, mode, proc.returncode, out)
    finally:
        # The helper's cgroups are its own tree's, not ours: the fixture's destroy() leaves them alone.
        for top, dirs, _files in os.walk(start, topdown=False):
            for d in dirs:
                os.rmdir(os.path.join(top, d))
        os.rmdir(start)


def _check_helper_tree(tree: cg.CgroupTree, start: str, leaf: str, mode: str, rc: int, out: str) -> None:
    assert tree.root_hier is not None
    assert rc == 0
    res = json.loads(out)
    assert res["mode"] == mode
    hier = tree.root_hier.rstrip("/") + "/" + leaf
    if mode == "delegated":
        assert res["root"] == start
        assert res["supervisor"] == os.path.join(start, "supervisor")
        assert f"0::{hier}/supervisor" in res["own"]  # moved itself to the leaf
        enabled = set(Path(start, "cgroup.subtree_control").read_text().split())
        assert enabled == set(res["controllers"])
        assert res["watcher"] == os.path.join(start, "web")
    else:
        assert res["root"] == os.path.join(start, "circus")
        assert f"0::{hier}\n" in res["own"]
        assert res["watcher"] == os.path.join(start, "circus", "web")


def test_clone_into_a_removed_cgroup_names_the_cgroup_not_the_executable(tree: cg.CgroupTree) -> None:
    from circus_linux.kernel import native

    w = tree.watcher("gone")
    assert w.path is not None
    fd = w.dir_fd()
    try:
        w.remove()
        tree.release(w)
        spec = native.SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}, cgroup_fd=fd)
        with pytest.raises(native.SpawnError) as ei:
            native.spawn(spec)
        assert ei.value.stage in ("clone", "cgroup") and ei.value.errno == errno.ENOENT
        assert w.path in str(ei.value.filename) and "/bin/true" not in str(ei.value)
    finally:
        os.close(fd)


def test_destroy_leaves_a_sibling_cgroup_it_did_not_hand_out(host: cg.CgroupHost, children: Children) -> None:
    root = f"/circus-test-{os.getpid()}-{next(_counter)}"
    mine, theirs = cg.CgroupTree.build(host, root), cg.CgroupTree.build(host, root)
    other = theirs.watcher("other")
    pid = children.spawn_gated(other, ["/bin/sh", "-c", "read _; exec sleep 1000"])
    try:
        mine.watcher("own")
        mine.destroy(timeout=10)
        assert other.pids() == [pid], "destroy killed a cgroup another tree handed out"
        assert other.path is not None and os.path.isdir(other.path)
        assert not os.path.exists(os.path.join(os.path.dirname(other.path), "own"))
    finally:
        theirs.destroy(timeout=10)
        for d in reversed(mine.created):  # the root the first tree made, busy when it left
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(d)
    children.wait(pid)


def test_rm_nostop_orphan_cgroup_is_not_reused_by_a_new_watcher_of_the_same_name(
    tree: cg.CgroupTree, children: Children
) -> None:
    w = tree.watcher("same")
    pid = children.spawn_gated(w, ["/bin/sh", "-c", "read _; exec sleep 1000"])
    tree.orphan(w)
    fresh = tree.watcher("same")
    assert fresh.dirname == "same~2" and fresh.pids() == [] and w.pids() == [pid]
    assert {c.dirname for c in tree.owned()} == {"same", "same~2"}
    w.kill()
    assert w.wait_empty(5)
    children.wait(pid)
    tree.release(fresh)
    fresh.remove()
    assert tree.watcher("same").dirname == "same"  # the orphan emptied: its name is free again
