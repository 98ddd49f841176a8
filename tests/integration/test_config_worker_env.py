"""What a worker's environment holds for the env-shaping watcher keys (copy_env, copy_path, virtualenv).

Real circusd processes; the worker's environment is read from /proc/PID/environ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import wait_for


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _worker_env(d: Any, name: str) -> dict[str, str]:
    pids = wait_for(lambda: d.pids(name), what=f"a worker of {name}")
    return _environ(pids[0])


def _circusd_sys_path(env: dict[str, str], cwd: Path) -> list[str]:
    """The sys.path of a circusd started as the fixture starts it (same interpreter, -P, env and cwd)."""
    code = "import sys; print('\\0'.join(sys.path))"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                         env=env, cwd=cwd).stdout
    return out.rstrip("\n").split("\0")


def test_copy_path_sets_no_pythonpath(circusd: Any, tmp_path: Path) -> None:
    # Circus's Watcher: with copy_env, copy_path sends circusd's sys.path as PYTHONPATH, and [env] wins
    d = circusd(
        "[watcher:cp]\ncmd = /bin/sleep 1000\ncopy_env = true\ncopy_path = true\n"
        "[watcher:over]\ncmd = /bin/sleep 1000\ncopy_env = true\ncopy_path = true\n"
        "[env:over]\nPYTHONPATH = /from/env\n"
    )
    got = _worker_env(d, "cp")["PYTHONPATH"].split(os.pathsep)
    assert got == _circusd_sys_path(dict(os.environ), tmp_path)
    assert any(p.endswith("site-packages") for p in got), got
    assert _worker_env(d, "over")["PYTHONPATH"] == "/from/env"


def test_virtualenv_leaves_site_packages_off_pythonpath(circusd: Any, tmp_path: Path) -> None:
    # Circus's load_virtualenv: the .pth directories, the PYTHONPATH the worker had, then the site dir
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.7" / "site-packages"
    (site / "extra").mkdir(parents=True)
    (site / "extra.pth").write_text("extra\n")
    d = circusd(
        f"[watcher:ve]\ncmd = /bin/sleep 1000\nvirtualenv = {venv}\nvirtualenv_py_ver = 3.7\n"
        "[env:ve]\nPYTHONPATH = /mine\n"
        f"[watcher:copied]\ncmd = /bin/sleep 1000\ncopy_env = true\nvirtualenv = {venv}\n"
        "virtualenv_py_ver = 3.7\n",
        env={**os.environ, "PYTHONPATH": "/inherited"},
    )
    env = _worker_env(d, "ve")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(site / "extra"), "/mine", str(site)]
    assert env["VIRTUAL_ENV"] == str(venv)
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    copied = _worker_env(d, "copied")
    assert copied["PYTHONPATH"].split(os.pathsep) == [str(site / "extra"), "/inherited", str(site)]
