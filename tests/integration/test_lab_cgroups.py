"""Runs tests/system/run-cgroup-tests.sh in a qemu VM (real cgroup v2 controllers) via tests/lab/qemu-run.sh.

One boot for the whole batch: about 2-3 minutes under TCG once the rootfs is cached in /var/cache/circus-lab
(the first run builds it, 2-3 minutes more). Skips, with the reason printed, when it cannot run: not root,
inside a container, no /dev/kvm-or-TCG capable qemu installable, no cffi module built for Debian's python3
(.venv-debian), or CIRCUS_SKIP_LAB=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from labsupport import lab_checkout

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tests" / "lab"
SCRIPT = REPO / "tests" / "system" / "run-cgroup-tests.sh"
EXIT_SKIP = 77

pytestmark = [pytest.mark.systemd, pytest.mark.slow]


def _inside_container() -> bool:
    if Path("/run/systemd/container").exists():
        return True
    try:
        environ = Path("/proc/1/environ").read_bytes()
    except PermissionError:
        return False
    return any(item.startswith(b"container=") for item in environ.split(b"\0"))


def _unavailable() -> str | None:
    if os.environ.get("CIRCUS_SKIP_LAB") == "1":
        return "CIRCUS_SKIP_LAB=1"
    if os.geteuid() != 0:
        return "the qemu lab needs root"
    if _inside_container():
        return "inside a container"
    if shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None:
        return "qemu-system-x86_64 is missing and cannot be installed (no apt-get)"
    if not list(REPO.glob(".venv-debian/lib/python3*/site-packages/circus_linux/_native*.so")):
        return "no cffi module built for Debian's python3 in .venv-debian (tests/setup.sh makes it)"
    return None


def test_cgroup_v2_limits_events_and_stats_in_qemu() -> None:
    reason = _unavailable()
    if reason is not None:
        print(f"skipping the qemu cgroup lab: {reason}")
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with lab_checkout() as root:  # a copy outside tmp when CI cloned into a tmp directory
        result = subprocess.run(
            ["bash", str(root / LAB.relative_to(REPO) / "qemu-run.sh"), "--timeout", "420",
             str(root / SCRIPT.relative_to(REPO))],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,  # the first run also builds the rootfs
        )
    print(result.stdout)
    print(result.stderr[-4000:])
    if result.returncode == EXIT_SKIP:
        pytest.skip("run-cgroup-tests.sh could not run (see output)")
    assert result.returncode == 0, f"run-cgroup-tests.sh failed (exit {result.returncode}):\n{result.stdout}"
    assert "[cgroup-tests] passed" in result.stdout
