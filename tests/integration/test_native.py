"""Integration tests of kernel/native.py: real children, pidfds, signalfd, cgroups, on every spawn path."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import resource
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from circus_linux.kernel import native
from circus_linux.kernel.native import Child, SpawnError, SpawnSpec

DEADLINE = 10.0
V2_ROOT = Path("/sys/fs/cgroup/unified")
V1_PIDS = Path("/sys/fs/cgroup/pids")
SLEEP = "/bin/sleep"
SH = "/bin/sh"


@pytest.fixture(params=native.SPAWN_MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Every test taking `children` runs once per spawn path this machine has."""
    if request.param == "vfork" and not native.HAS_VFORK:
        pytest.skip("no vfork path here (needs clone3 and an x86_64 or aarch64 build)")
    if request.param == "fork" and not native.HAS_CLONE3:
        pytest.skip("kernel has no clone3 (the legacy fork path is the only one here)")
    return str(request.param)


class Children:
    """Spawns through native.spawn on one path and kills + awaits every child at teardown."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.live: list[Child] = []

    def spawn(self, spec: SpawnSpec) -> Child:
        try:
            child, used = native.spawn_with_mode(spec, mode=self.mode)
        except SpawnError as err:
            assert err.mode == self.mode  # the failure came from the path under test
            raise
        assert used == self.mode  # no silent fallback to another path
        self.live.append(child)
        return child

    def wait(self, child: Child, timeout: float = DEADLINE) -> native.ExitStatus:
        """Wait for the pidfd to turn readable (the child exited), then reap it."""
        ready, _, _ = select.select([child.pidfd], [], [], timeout)
        assert ready, f"child {child.pid} did not exit within {timeout}s"
        status = native.waitid_pidfd(child.pidfd)
        assert status is not None
        self._forget(child)
        return status

    def _forget(self, child: Child) -> None:
        self.live.remove(child)
        os.close(child.pidfd)

    def cleanup(self) -> None:
        for child in list(self.live):
            with contextlib.suppress(ProcessLookupError):
                native.pidfd_send_signal(child.pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED)
            self._forget(child)


@pytest.fixture
def children(mode: str) -> Iterator[Children]:
    kids = Children(mode)
    yield kids
    kids.cleanup()


def env_min() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def read_all(fd: int, timeout: float = DEADLINE) -> bytes:
    """Read fd until EOF, against a deadline."""
    out = b""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        assert left > 0, "no EOF before the deadline"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            return out
        out += data


def poll_until(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def run_capture(
    children: Children, spec_kw: dict, extra_fds: dict[int, int] | None = None
) -> tuple[bytes, int]:
    """Run a child with a pipe on fd 1; its whole stdout and exit code."""
    r, w = os.pipe()
    try:
        fds = {1: w, **(extra_fds or {})}
        spec = SpawnSpec(fds=fds, **spec_kw)
        child = children.spawn(spec)
        os.close(w)
        w = -1
        out = read_all(r)
        return out, children.wait(child).exit_code
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def our_zombies() -> list[int]:
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised comm: state ppid ...
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" and int(ppid) == me:
            found.append(int(entry.name))
    return found


def sleeper(**kw: object) -> SpawnSpec:
    return SpawnSpec(path=SLEEP, argv=["sleep", "30"], env=env_min(), fds={}, **kw)  # type: ignore[arg-type]


# --- spawning basics -------------------------------------------------------------------------------


def test_spawn_returns_working_pidfd(children: Children) -> None:
    out, code = run_capture(children, {"path": SH, "argv": ["sh", "-c", "echo $$; exit 3"], "env": env_min()})
    assert code == 3
    assert int(out) > 0

    child = children.spawn(sleeper())
    assert native.waitid_pidfd(child.pidfd) is None  # still running: WNOHANG gives nothing
    native.pidfd_send_signal(child.pidfd, signal.SIGTERM)
    status = children.wait(child)
    assert status.signal == signal.SIGTERM and status.code is None
    assert status.exit_code == -signal.SIGTERM


def test_pidfd_send_signal_after_reaping_raises_process_lookup(children: Children) -> None:
    child = children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}))
    pidfd = os.dup(child.pidfd)  # outlives the reap done by children.wait
    try:
        assert children.wait(child).exit_code == 0
        with pytest.raises(ProcessLookupError):
            native.pidfd_send_signal(pidfd, signal.SIGTERM)
    finally:
        os.close(pidfd)


def test_argv_env_cwd_umask_rlimit_applied(children: Children, tmp_path: Path) -> None:
    script = (
        "import json, os, resource, sys\n"
        "old = os.umask(0); os.umask(old)\n"
        "print(json.dumps({'argv': sys.argv, 'env': dict(os.environ), 'cwd': os.getcwd(), 'umask': old,\n"
        "  'nofile': resource.getrlimit(resource.RLIMIT_NOFILE),\n"
        "  'core': resource.getrlimit(resource.RLIMIT_CORE)}))\n"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_nofile = (min(soft, 100), min(hard, 200))
    out, code = run_capture(
        children,
        {
            "path": sys.executable,
            "argv": ["my-worker", "-S", "-c", script, "arg one", "ünï"],
            "env": {"FOO": "bar baz", "EMPTY": "", "LC_ALL": "C.UTF-8"},
            "cwd": str(tmp_path),
            "umask": 0o027,
            "rlimits": {resource.RLIMIT_NOFILE: want_nofile, resource.RLIMIT_CORE: (0, 0)},
        },
    )
    assert code == 0
    seen = json.loads(out)
    assert seen["argv"] == ["-c", "arg one", "ünï"]
    assert seen["env"] == {"FOO": "bar baz", "EMPTY": "", "LC_ALL": "C.UTF-8"}
    assert seen["cwd"] == str(tmp_path)
    assert seen["umask"] == 0o027
    assert tuple(seen["nofile"]) == want_nofile
    assert tuple(seen["core"]) == (0, 0)


def test_argv0_is_passed_as_given(children: Children) -> None:
    out, code = run_capture(children, {"path": SH, "argv": ["custom-name", "-c", "echo $0"], "env": {}})
    assert (out, code) == (b"custom-name\n", 0)


# --- fd map ------------------------------------------------------------------------------------------

WRITER = (
    "import os, sys\n"
    "for a in sys.argv[1:]:\n"
    "    fd, text = a.split('=')\n"
    "    os.write(int(fd), text.encode())\n"
)


def test_fd_map_with_colliding_sources_and_self_mapping(children: Children) -> None:
    r1, w1 = os.pipe()  # CLOEXEC in Python, so every mapped fd must lose CLOEXEC in the child
    r2, w2 = os.pipe()
    r3, w3 = os.pipe()
    try:
        # swap w1 <-> w2 (each source is the other's target), map w3 to itself, and one high target
        fds = {w1: w2, w2: w1, w3: w3, 40: w1}
        child = children.spawn(
            SpawnSpec(
                path=sys.executable,
                argv=["py", "-S", "-c", WRITER, f"{w1}=to-pipe2", f"{w2}=to-pipe1", f"{w3}=self", "40=high"],
                env={},
                fds=fds,
            )
        )
        for fd in (w1, w2, w3):
            os.close(fd)
        w1 = w2 = w3 = -1
        assert children.wait(child).exit_code == 0
        assert read_all(r2) == b"to-pipe2"
        assert read_all(r1) == b"to-pipe1high"
        assert read_all(r3) == b"self"
    finally:
        for fd in (r1, r2, r3, w1, w2, w3):
            if fd >= 0:
                os.close(fd)


def test_unlisted_fds_are_closed_in_child(children: Children, tmp_path: Path) -> None:
    leak = os.open(tmp_path / "leak", os.O_RDWR | os.O_CREAT)
    os.set_inheritable(leak, True)  # no CLOEXEC: only the explicit close in the child removes it
    try:
        script = (
            "import os\nopen_fds = []\nfor fd in range(256):\n"
            "    try:\n        os.fstat(fd)\n    except OSError:\n        continue\n"
            "    open_fds.append(fd)\nprint(open_fds)\n"
        )
        spec_kw = {"path": sys.executable, "argv": ["py", "-S", "-c", script], "env": {}}
        out, code = run_capture(children, spec_kw)
        assert code == 0
        assert json.loads(out) == [1]
    finally:
        os.close(leak)


def test_bad_source_fd_reports_dup2_stage(children: Children) -> None:
    unused = 1000
    with pytest.raises(OSError):
        os.fstat(unused)  # a closed fd, far above what spawn's own error pipe can reuse
    with pytest.raises(SpawnError) as info:
        children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={1: unused}))
    assert info.value.stage == "dup2"
    assert info.value.errno == errno.EBADF
    assert our_zombies() == []


# --- failures come back as (stage, errno) --------------------------------------------------------


def test_missing_binary_gives_execve_enoent_and_no_zombie(children: Children, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-binary")
    with pytest.raises(SpawnError) as info:
        children.spawn(SpawnSpec(path=missing, argv=["x"], env={}, fds={}))
    err = info.value
    assert err.stage == "execve"
    assert err.errno == errno.ENOENT
    assert err.filename == missing
    assert "execve" in str(err) and missing in str(err)
    assert isinstance(err, OSError)
    assert our_zombies() == []
    assert native.exited_pids() == []


def test_chdir_failure_gives_chdir_stage(children: Children, tmp_path: Path) -> None:
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(SpawnError) as info:
        children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}, cwd=nowhere))
    assert info.value.stage == "chdir"
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == nowhere
    assert our_zombies() == []


def test_cgroup_fd_that_is_not_a_cgroup_shows_which_path_ran(children: Children, tmp_path: Path) -> None:
    # clone3 refuses the fd itself (stage 'clone'); the legacy path's child finds no cgroup.procs there.
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(SpawnError) as info:
            children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}, cgroup_fd=dirfd))
    finally:
        os.close(dirfd)
    if children.mode == "legacy":
        assert (info.value.stage, info.value.errno) == ("cgroup", errno.ENOENT)
    else:
        assert info.value.stage == "clone"
    assert our_zombies() == []


def test_force_fork_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(native.FORCE_FORK_ENV, "1")
    monkeypatch.delenv(native.SPAWN_MODE_ENV, raising=False)
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(SpawnError) as info:
            native.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}, cgroup_fd=dirfd))
    finally:
        os.close(dirfd)
    assert info.value.stage == "cgroup"  # only the fallback path writes cgroup.procs itself
    assert our_zombies() == []


def test_nul_byte_in_argument_is_refused_before_spawning() -> None:
    with pytest.raises(ValueError, match="NUL"):
        native.spawn(SpawnSpec(path="/bin/true", argv=["true", "a\0b"], env={}, fds={}))


@pytest.mark.parametrize("wanted", native.SPAWN_MODES)
def test_spawn_mode_environment_variable(monkeypatch: pytest.MonkeyPatch, wanted: str) -> None:
    monkeypatch.setenv(native.SPAWN_MODE_ENV, wanted)
    child, used = native.spawn_with_mode(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}))
    try:
        assert used == native.resolve_mode(wanted, None)
        if (wanted == "vfork" and native.HAS_VFORK) or (wanted == "fork" and native.HAS_CLONE3):
            assert used == wanted
    finally:
        os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED)
        os.close(child.pidfd)


def test_default_path_is_vfork_on_x86_64() -> None:
    child, used = native.spawn_with_mode(
        SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}), mode=None
    )
    try:
        if not os.environ.get(native.SPAWN_MODE_ENV) and not os.environ.get(native.FORCE_FORK_ENV):
            assert used == native.DEFAULT_SPAWN_MODE
        if platform.machine() == "x86_64" and native.HAS_VFORK:
            assert native.DEFAULT_SPAWN_MODE == "vfork"
    finally:
        os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED)
        os.close(child.pidfd)


def test_unknown_spawn_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="spawn mode"):
        native.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}), mode="posix_spawn")


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_many_spawns_leak_no_fd_and_leave_no_zombie(children: Children, tmp_path: Path) -> None:
    # Every 10th exec fails: both the success path (pidfd handed over) and the failure path (child
    # reaped, pidfd and pipe closed in C) run many times; neither may leave an fd or a zombie behind.
    missing = str(tmp_path / "missing")
    before = _open_fds()
    failures = 0
    for i in range(300):
        if i % 10 == 9:
            with pytest.raises(SpawnError) as info:
                children.spawn(SpawnSpec(path=missing, argv=["x"], env={}, fds={}))
            assert (info.value.stage, info.value.errno) == ("execve", errno.ENOENT)
            failures += 1
            continue
        child = children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}))
        assert children.wait(child).exit_code == 0
    assert failures == 30
    assert _open_fds() == before
    assert our_zombies() == []


def test_concurrent_spawns_from_threads_report_their_own_outcome(children: Children, tmp_path: Path) -> None:
    # The GIL is released in cl_spawn, so spawns overlap; on the vfork path each call's report struct
    # and child stack must stay its own.  Exit codes tell successes apart, failures carry their errno.
    missing = str(tmp_path / "missing")
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(25):
                if (n + i) % 5 == 0:
                    try:
                        native.spawn(SpawnSpec(path=missing, argv=["x"], env={}, fds={}), mode=children.mode)
                    except SpawnError as err:
                        assert (err.stage, err.errno, err.mode) == ("execve", errno.ENOENT, children.mode)
                    else:
                        raise AssertionError("spawning a missing binary succeeded")
                    continue
                code = (n * 25 + i) % 200
                child = native.spawn(
                    SpawnSpec(path=SH, argv=["sh", "-c", f"exit {code}"], env={}, fds={}), mode=children.mode
                )
                with lock:
                    children.live.append(child)
                assert children.wait(child).exit_code == code
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE * 3)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert our_zombies() == []


def test_parent_handlers_and_mask_survive_spawning(children: Children, tmp_path: Path) -> None:
    # The child resets every disposition and its mask; without CLONE_SIGHAND those changes are its own
    # (clone(2)), even on the vfork path where it shares our memory.  Our mask is restored exactly.
    got: list[int] = []
    old_handler = signal.signal(signal.SIGUSR1, lambda signo, frame: got.append(signo))
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        child = children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}))
        assert children.wait(child).exit_code == 0
        with pytest.raises(SpawnError):
            children.spawn(SpawnSpec(path=str(tmp_path / "missing"), argv=["x"], env={}, fds={}))
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask_before
        caught = int(proc_status(os.getpid())["SigCgt"], 16)
        assert caught & (1 << (signal.SIGUSR1 - 1))
        os.kill(os.getpid(), signal.SIGUSR1)
        poll_until(lambda: got == [signal.SIGUSR1], "our SIGUSR1 handler to run")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGUSR1, old_handler)


# --- signals, session, credentials ------------------------------------------------------------------


def test_signal_mask_and_ignored_dispositions_reset(children: Children) -> None:
    blocked = {signal.SIGUSR1, signal.SIGTERM, signal.SIGCHLD}
    old_pipe = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        mine = proc_status(os.getpid())
        assert int(mine["SigBlk"], 16) != 0 and int(mine["SigIgn"], 16) != 0  # the precondition holds
        child = children.spawn(sleeper())
        status = proc_status(child.pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGPIPE, old_pipe)
        signal.signal(signal.SIGHUP, old_hup)
    assert status["Name"] == "sleep"  # spawn returned after execve
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigIgn"], 16) == 0


@pytest.mark.parametrize("new_session", [True, False])
def test_setsid(children: Children, new_session: bool) -> None:
    child = children.spawn(sleeper(new_session=new_session))
    if new_session:
        assert os.getsid(child.pid) == child.pid
        assert os.getpgid(child.pid) == child.pid
    else:
        assert os.getsid(child.pid) == os.getsid(0)


def test_uid_gid_groups_drop_to_nobody(children: Children) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to change uid/gid")
    child = children.spawn(sleeper(uid=65534, gid=65534, groups=[65534]))
    status = proc_status(child.pid)
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert status["Groups"].split() == ["65534"]


def test_empty_groups_clears_supplementary_groups(children: Children) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to change groups")
    child = children.spawn(sleeper(groups=[]))
    assert proc_status(child.pid)["Groups"] == ""


# --- cgroups -----------------------------------------------------------------------------------------


def _is_cgroup2(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == str(path) and " - cgroup2 " in line for line in f)
    except OSError:
        return False


@pytest.fixture
def v2_root() -> Path:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    if not V2_ROOT.is_dir() or not _is_cgroup2(V2_ROOT):
        pytest.skip(f"no cgroup2 mount at {V2_ROOT}")
    return V2_ROOT


@pytest.fixture
def v1_pids_root() -> Path:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    if not (V1_PIDS / "cgroup.procs").exists():
        pytest.skip(f"no v1 pids hierarchy at {V1_PIDS}")
    return V1_PIDS


def _cgroup_line(pid: int, controller_field: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == controller_field or controller_field in controllers.split(","):
            return path
    raise AssertionError(f"no {controller_field!r} line in /proc/{pid}/cgroup")


def test_clone_into_cgroup_v2(v2_root: Path, children: Children) -> None:
    path = v2_root / f"circus-test-native-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        child = children.spawn(sleeper(cgroup_fd=dirfd))
        assert _cgroup_line(child.pid, "") == "/" + path.name
        assert (path / "cgroup.procs").read_text().split() == [str(child.pid)]
    finally:
        os.close(dirfd)
        children.cleanup()
        poll_until(lambda: not (path / "cgroup.procs").read_text().strip(), f"{path} to empty")
        path.rmdir()


def test_v1_cgroup_procs_placement(v1_pids_root: Path, children: Children) -> None:
    path = v1_pids_root / f"circus-test-native-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    procs = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        child = children.spawn(sleeper(cgroup_procs_fds=[procs]))
        assert _cgroup_line(child.pid, "pids") == "/" + path.name
        # the parent stayed where it was
        assert _cgroup_line(os.getpid(), "pids") != "/" + path.name
    finally:
        os.close(procs)
        children.cleanup()
        poll_until(lambda: not (path / "cgroup.procs").read_text().strip(), f"{path} to empty")
        path.rmdir()


# --- signalfd and subreaper --------------------------------------------------------------------------


def test_signalfd_receives_sigchld(children: Children) -> None:
    native.block_signals([signal.SIGCHLD])
    sfd = native.signalfd_open([signal.SIGCHLD])
    try:
        assert os.get_inheritable(sfd) is False
        assert native.signalfd_read(sfd) == []  # non-blocking: empty, not stuck
        child = children.spawn(SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}))
        got: list[int] = []
        end = time.monotonic() + DEADLINE
        while signal.SIGCHLD not in got:
            left = end - time.monotonic()
            assert left > 0, "no SIGCHLD on the signalfd"
            ready, _, _ = select.select([sfd], [], [], left)
            if ready:
                got += native.signalfd_read(sfd)
        assert native.exited_pids() == [child.pid]  # peeking does not reap ...
        assert native.exited_pids() == [child.pid]
        assert children.wait(child).exit_code == 0  # ... the pidfd still reaps it
        assert native.exited_pids() == []
    finally:
        os.close(sfd)
        native.unblock_signals([signal.SIGCHLD])


def test_signalfd_reads_several_signals_in_one_drain() -> None:
    sigs = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP]
    native.block_signals(sigs)
    sfd = native.signalfd_open(sigs)
    try:
        for sig in sigs:
            signal.pthread_kill(threading.get_ident(), sig)
        assert sorted(native.signalfd_read(sfd)) == sorted(sigs)
        assert native.signalfd_read(sfd) == []
    finally:
        os.close(sfd)
        native.unblock_signals(sigs)


def test_subreaper_adopts_and_reaps_orphaned_grandchild(children: Children) -> None:
    native.set_child_subreaper()
    grandchild = -1
    gpidfd = -1
    try:
        assert native.get_child_subreaper() is True
        argv = ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"]
        out, code = run_capture(children, {"path": SH, "argv": argv, "env": env_min()})
        assert code == 0
        grandchild = int(out)
        gpidfd = os.pidfd_open(grandchild)
        poll_until(lambda: proc_status(grandchild)["PPid"] == str(os.getpid()), "re-parenting to us")
        assert native.reap_pid(grandchild) is None  # still running
        native.pidfd_send_signal(gpidfd, signal.SIGKILL)
        ready, _, _ = select.select([gpidfd], [], [], DEADLINE)
        assert ready
        assert native.exited_pids() == [grandchild]
        status = native.reap_pid(grandchild)
        assert status is not None and status.exit_code == -signal.SIGKILL
        grandchild = -1
        assert our_zombies() == []
    finally:
        if grandchild > 0:
            try:
                os.kill(grandchild, signal.SIGKILL)
                os.waitid(os.P_PID, grandchild, os.WEXITED)
            except (ProcessLookupError, ChildProcessError):
                pass
        if gpidfd >= 0:
            os.close(gpidfd)
        native.set_child_subreaper(False)


def test_reap_pid_of_a_stranger_raises_child_process_error() -> None:
    with pytest.raises(ChildProcessError):
        native.reap_pid(1)


def test_has_clone3_is_a_probed_bool() -> None:
    assert isinstance(native.HAS_CLONE3, bool)
