"""Broken configs: `circusd --check` names file, line, section and key; `reloadconfig` keeps all running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fault.fault_probe import wait_for

CORPUS = Path(__file__).parent / "configs"

# file -> (file the error is in, line, section, key, a fragment of the message). section/key None: the
# error is about the file itself (not ini at all).
EXPECTED: dict[str, tuple[str, int, str | None, str | None, str]] = {
    "bad_boolean.ini": ("bad_boolean.ini", 3, "watcher:web", "respawn", "expected a boolean"),
    "bad_cgroup_cpu.ini": ("bad_cgroup_cpu.ini", 3, "watcher:web", "cpu_max", "'max'"),
    "bad_cgroup_memory.ini": ("bad_cgroup_memory.ini", 3, "watcher:web", "memory_max", "size in bytes"),
    "bad_cgroup_pids.ini": ("bad_cgroup_pids.ini", 3, "watcher:web", "pids_max", "got '-5'"),
    "bad_circus_umask.ini": ("bad_circus_umask.ini", 2, "circus", "umask", "octal"),
    "bad_graceful_timeout.ini": ("bad_graceful_timeout.ini", 3, "watcher:web", "graceful_timeout", ">= 0"),
    "bad_hook_name.ini": ("bad_hook_name.ini", 3, "watcher:web", "hooks.before_lunch", "hook name"),
    "bad_hook_target.ini": ("bad_hook_target.ini", 3, "watcher:web", "hooks.before_start", "dotted"),
    "bad_huge_number.ini": ("bad_huge_number.ini", 3, "watcher:web", "numprocesses", "4194304"),
    "bad_loglevel.ini": ("bad_loglevel.ini", 2, "circus", "loglevel", "log level"),
    "bad_numprocesses.ini": ("bad_numprocesses.ini", 3, "watcher:web", "numprocesses", "got 'many'"),
    "bad_pids_max_huge.ini": ("bad_pids_max_huge.ini", 3, "watcher:web", "pids_max", "4194304"),
    "bad_priority.ini": ("bad_priority.ini", 3, "watcher:web", "priority", "expected an integer"),
    "bad_rlimit_huge.ini": ("bad_rlimit_huge.ini", 3, "watcher:web", "rlimit_nofile", "2**63-1"),
    "bad_rlimit_name.ini": ("bad_rlimit_name.ini", 3, "watcher:web", "rlimit_bananas", "nofile"),
    "bad_rlimit_value.ini": ("bad_rlimit_value.ini", 3, "watcher:web", "rlimit_nofile", "got 'lots'"),
    "bad_socket_backlog.ini": ("bad_socket_backlog.ini", 4, "socket:web", "backlog", "got '-1'"),
    "bad_stream_class.ini": ("bad_stream_class.ini", 3, "watcher:web", "stdout_stream.class", "NoSuchStream"),
    "bad_uid.ini": ("bad_uid.ini", 3, "watcher:web", "uid", "unknown user"),
    "bad_uid_huge.ini": ("bad_uid_huge.ini", 3, "watcher:web", "uid", "4294967294"),
    "bad_umask.ini": ("bad_umask.ini", 3, "watcher:web", "umask", "got '0899'"),
    "bad_unicode_digits.ini": ("bad_unicode_digits.ini", 3, "watcher:web", "numprocesses", "got '١٢'"),
    "duplicate_key.ini": ("duplicate_key.ini", 4, "watcher:web", "numprocesses", "duplicate key"),
    "duplicate_section.ini": ("duplicate_section.ini", 5, "watcher:web", "cmd", "duplicate key"),
    "include_cycle.ini": ("include_cycle_b.inc", 2, "circus", "include", "include cycle"),
    "include_is_directory.ini": ("include_is_directory.ini", 2, "circus", "include", "Is a directory"),
    "include_missing.ini": ("include_missing.ini", 2, "circus", "include", "not found"),
    "missing_cmd.ini": ("missing_cmd.ini", 1, "watcher:web", "cmd", "missing cmd"),
    "not_ini.ini": ("not_ini.ini", 1, None, None, "expected 'key = value'"),
    "socket_bad_family.ini": ("socket_bad_family.ini", 4, "socket:web", "family", "AF_BANANA"),
    "socket_bad_port.ini": ("socket_bad_port.ini", 3, "socket:web", "port", "65535"),
    "socket_no_address.ini": ("socket_no_address.ini", 1, "socket:web", "port", "without port"),
    "unknown_signal.ini": ("unknown_signal.ini", 3, "watcher:web", "stop_signal", "SIGNOPE"),
    "unknown_socket_ref.ini": ("unknown_socket_ref.ini", 3, "watcher:web", "stdin_socket", "'nowhere'"),
}


def _where(base: Path, name: str) -> str:
    file, line, section, key, _ = EXPECTED[name]
    where = f"{base / file}:{line}"
    if section is not None:
        where += f" [{section}] {key}: "
    return where


def test_the_table_covers_the_whole_corpus() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.ini")) == sorted(EXPECTED)
    assert len(EXPECTED) >= 15


def circusd_argv(*args: str) -> list[str]:
    # -P: never import circus_linux from the current directory (the Debian-venv run tests the installed copy)
    return [sys.executable, "-P", "-m", "circus_linux", *args]


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(circusd_argv("--check", str(path)), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_rejects_with_file_line_section_and_key(name: str) -> None:
    out = _check(CORPUS / name)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert _where(CORPUS, name) in out.stderr, out.stderr
    assert EXPECTED[name][4] in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_fifo_as_config_or_include_is_refused_without_blocking(tmp_path: Path) -> None:
    """Regression: open() of a FIFO blocks until a writer comes: --check (and reloadconfig) hung forever."""
    fifo = tmp_path / "pipe.ini"
    os.mkfifo(fifo)
    main = tmp_path / "main.ini"
    main.write_text("[circus]\ninclude = pipe.ini\n\n[watcher:web]\ncmd = sleep 600\n")
    out = _check(main)
    assert out.returncode == 1 and f"{main}:2 [circus] include: " in out.stderr
    assert "not a regular file" in out.stderr
    out = _check(fifo)
    assert out.returncode == 1 and "not a regular file" in out.stderr
    dev = tmp_path / "dev.ini"
    dev.write_text("[circus]\ninclude = /dev/zero\n\n[watcher:web]\ncmd = sleep 600\n")
    out = _check(dev)
    assert out.returncode == 1 and "/dev/zero: not a regular file" in out.stderr


def test_reloadconfig_with_each_broken_file_leaves_the_running_set_untouched(
    circusd: Any, tmp_path: Path
) -> None:
    keep = "[watcher:keep]\ncmd = sleep 1000\nnumprocesses = 2\ngraceful_timeout = 2\n"
    d = circusd(keep)
    pids = wait_for(lambda: (p := d.pids("keep")) and len(p) == 2 and sorted(p), what="keep up")
    header = d.path.read_text().split("[watcher:keep]")[0]
    for f in CORPUS.iterdir():  # includes are relative to the main file: put the corpus next to it
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
        else:
            shutil.copytree(f, tmp_path / f.name, dirs_exist_ok=True)
    good = d.path.read_text()
    for name in sorted(EXPECTED):
        corpus_text = (CORPUS / name).read_text()
        # the corpus file's own [circus] keys go into the daemon's [circus] section, the rest after it
        if corpus_text.startswith("[circus]\n"):
            extra, rest = corpus_text[len("[circus]\n"):].split("\n\n", 1)
            text = header.rstrip("\n") + "\n" + extra + "\n\n" + keep + "\n" + rest
        else:
            text = header + keep + "\n" + corpus_text
        d.path.write_text(text)
        reply = d.call("reloadconfig", waiting=True, timeout=30)
        assert reply["status"] == "error", (name, reply)
        key = EXPECTED[name][3]
        assert key is None or key in reply["reason"], (name, reply)
        assert sorted(d.pids("keep")) == pids, name
        assert d.call("list")["watchers"] == ["keep"], name
    d.path.write_text(good)
    assert d.call("reloadconfig", waiting=True, timeout=30)["status"] == "ok"
    assert sorted(d.pids("keep")) == pids
