"""Unit tests of kernel/native.py's pure parts: ExitStatus, SpawnError, argument checks, cdef extraction."""

from __future__ import annotations

import errno
import importlib.util
import os
import platform
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from circus_linux.kernel import native
from circus_linux.kernel.native import ExitStatus, SpawnError, SpawnSpec

ROOT = Path(__file__).resolve().parents[2]


def test_exit_code_is_the_exit_status_for_a_normal_exit() -> None:
    assert ExitStatus(code=0, signal=None).exit_code == 0
    assert ExitStatus(code=42, signal=None).exit_code == 42


def test_exit_code_is_minus_signal_when_killed() -> None:
    assert ExitStatus(code=None, signal=signal.SIGKILL).exit_code == -9
    assert ExitStatus(code=None, signal=signal.SIGSEGV, core_dumped=True).exit_code == -11


def test_from_waitid_tells_exit_from_signal_by_si_code() -> None:
    exited = ExitStatus.from_waitid(SimpleNamespace(si_code=os.CLD_EXITED, si_status=3))
    killed = ExitStatus.from_waitid(SimpleNamespace(si_code=os.CLD_KILLED, si_status=15))
    dumped = ExitStatus.from_waitid(SimpleNamespace(si_code=os.CLD_DUMPED, si_status=6))
    assert exited == ExitStatus(code=3, signal=None)
    assert killed == ExitStatus(code=None, signal=15)
    assert dumped == ExitStatus(code=None, signal=6, core_dumped=True)


def test_spawn_error_is_an_oserror_naming_stage_and_path() -> None:
    err = SpawnError(errno.EACCES, "setuid", "/usr/bin/app")
    assert isinstance(err, OSError)
    assert (err.errno, err.stage, err.filename) == (errno.EACCES, "setuid", "/usr/bin/app")
    assert "setuid" in str(err) and "/usr/bin/app" in str(err)
    assert err.mode is None
    assert SpawnError(errno.ENOENT, "execve", "/x", "vfork").mode == "vfork"


def test_spawn_spec_defaults() -> None:
    spec = SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={})
    assert spec.new_session is True
    assert spec.rlimits == {} and spec.cgroup_procs_fds == ()
    assert spec.uid is spec.gid is spec.groups is spec.umask is spec.cgroup_fd is None


@pytest.mark.parametrize(
    "spec",
    [
        SpawnSpec(path="/bin/\0true", argv=["true"], env={}, fds={}),
        SpawnSpec(path="/bin/true", argv=["true"], env={"A\0": "1"}, fds={}),
        SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={}, cwd="/\0"),
        SpawnSpec(path="/bin/true", argv=["true"], env={}, fds={-1: 0}),
        SpawnSpec(path="/bin/true", argv=["true"], env={}, fds=dict.fromkeys(range(native.MAX_FDS + 1), 0)),
    ],
)
def test_invalid_specs_are_refused_before_any_syscall(spec: SpawnSpec) -> None:
    with pytest.raises(ValueError):
        native.spawn(spec)


def test_cdef_block_is_extracted_from_the_header() -> None:
    path = ROOT / "csrc" / "build_native.py"
    loader_spec = importlib.util.spec_from_file_location("circus_build_native", path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    cdef = module._cdef_from_header(str(ROOT / "csrc" / "native.h"))
    assert "int cl_spawn(" in cdef
    assert "#" not in cdef  # cffi's cdef must not see preprocessor lines


def test_resolve_mode_explicit_mode_wins_over_force_fork_and_environment() -> None:
    env = {native.SPAWN_MODE_ENV: "legacy", native.FORCE_FORK_ENV: "1"}
    assert native.resolve_mode("legacy", True, env) == "legacy"
    assert native.resolve_mode("fork", True, env) == ("fork" if native.HAS_CLONE3 else "legacy")


def test_resolve_mode_force_fork_means_legacy() -> None:
    assert native.resolve_mode(None, True, {native.SPAWN_MODE_ENV: "vfork"}) == "legacy"


def test_resolve_mode_reads_the_environment_only_without_explicit_choice() -> None:
    assert native.resolve_mode(None, None, {native.SPAWN_MODE_ENV: "legacy"}) == "legacy"
    assert native.resolve_mode(None, None, {native.FORCE_FORK_ENV: "1"}) == "legacy"
    assert native.resolve_mode(None, None, {native.FORCE_FORK_ENV: "0"}) == native.DEFAULT_SPAWN_MODE
    # force_fork=False is an explicit "not legacy": the old variable no longer applies
    assert native.resolve_mode(None, False, {native.FORCE_FORK_ENV: "1"}) == native.DEFAULT_SPAWN_MODE
    assert native.resolve_mode(None, None, {}) == native.DEFAULT_SPAWN_MODE


def test_resolve_mode_degrades_to_what_the_machine_has() -> None:
    want_vfork = "vfork" if native.HAS_VFORK else "fork" if native.HAS_CLONE3 else "legacy"
    assert native.resolve_mode("vfork", None, {}) == want_vfork
    # the default is vfork only where the suite has run it (x86_64); elsewhere the best fork path
    if platform.machine() == "x86_64":
        assert want_vfork == native.DEFAULT_SPAWN_MODE
    else:
        assert ("fork" if native.HAS_CLONE3 else "legacy") == native.DEFAULT_SPAWN_MODE


@pytest.mark.parametrize("bad", ["", "posix_spawn", "VFORK"])
def test_resolve_mode_refuses_unknown_names(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown spawn mode"):
        native.resolve_mode(bad, None, {})
    with pytest.raises(ValueError, match="unknown spawn mode"):
        native.resolve_mode(None, None, {native.SPAWN_MODE_ENV: bad or "nope"})


def test_count_byte_agrees_with_bytes_count_on_every_length_and_window() -> None:
    # The C loop works in runs of 255 bytes with one-byte counters: lengths around those runs, all-newline
    # data (a counter at its most), windows, memoryviews, and a window past the end.
    for n in (0, 1, 254, 255, 256, 510, 511, 4096 + 3):
        for fill in (b"\n", b"a\n", b"ab\n\n\n"):
            data = (fill * n)[:n]
            assert native.count_byte(data, ord("\n")) == data.count(b"\n"), (n, fill)
            assert native.count_byte(memoryview(data), ord("\n")) == data.count(b"\n")
            for start, end in ((1, n - 1), (n // 3, n // 2), (n, n), (0, n + 10), (n - 1, 1)):
                want = data.count(b"\n", start, end) if start < end else 0
                assert native.count_byte(data, ord("\n"), start, end) == want, (n, fill, start, end)
