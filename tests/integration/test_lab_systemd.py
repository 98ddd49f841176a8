"""Runs the systemd-level checks (tests/system/) in a throw-away nspawn container through tests/lab/.

It must not run them anywhere but in the lab: it skips, with the reason, unless it is root on a host that can
boot a container (not itself inside one). About 20 s for the unit checks, 30-40 s for the .deb cycle (plus a
one-time ~60 s toolchain install on a fresh machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from labsupport import lab_checkout

REPO = Path(__file__).resolve().parents[2]
# Exit status the guest scripts use for "nothing could run yet" (autotools/autopkgtest convention).
EXIT_SKIP = 77

pytestmark = pytest.mark.systemd


CAP_SYS_ADMIN = 21


def _inside_container() -> bool:
    # nspawn writes /run/systemd/container; systemd-style runtimes set container= for PID 1. /.dockerenv is
    # no evidence: this project's CI VMs are built from Docker images and keep the file.
    if Path("/run/systemd/container").exists():
        return True
    try:
        environ = Path("/proc/1/environ").read_bytes()
    except PermissionError:  # PID 1 belongs to someone else (a VM agent): we are not its container
        return False
    return any(item.startswith(b"container=") for item in environ.split(b"\0"))


def _has_cap_sys_admin() -> bool:
    # mount namespaces, bind mounts and nspawn itself all need it; unprivileged containers lack it.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def _lab_unavailable() -> str | None:
    """Why the nspawn lab cannot run here, or None when it can."""
    if os.environ.get("CIRCUS_SKIP_LAB") == "1":
        return "CIRCUS_SKIP_LAB=1 (tests/run.sh runs the lab once, in its first pass)"
    if os.geteuid() != 0:
        return "the nspawn lab needs root"
    if _inside_container():
        return "already inside a container: cannot boot a nested systemd container"
    if not _has_cap_sys_admin():
        return "no CAP_SYS_ADMIN: cannot create the mount namespace and container"
    for tool in ("unshare", "nsenter", "bash"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is missing"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return "systemd-nspawn is missing and cannot be installed (no apt-get)"
    if not (Path("/lib/systemd/systemd").exists() or Path("/usr/lib/systemd/systemd").exists()):
        return "the host root has no systemd to boot"
    return None


def _run(cmd: list[str], timeout: float, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    # The lab scripts always clean up (container, cgroups, scratch dirs) on their own exit or SIGTERM;
    # subprocess.run's timeout kills the script, whose EXIT trap does the rest.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    print(result.stdout)
    print(result.stderr)
    return result


@pytest.fixture(scope="module")
def lab() -> Iterator[Path]:
    """The directory the lab runs from (nspawn-run.sh binds it): a copy outside tmp if CI cloned there."""
    reason = _lab_unavailable()
    if reason is not None:
        print(f"skipping the nspawn lab: {reason}")
        pytest.skip(reason)
    with lab_checkout() as root:
        yield root


SSH_DEBS = Path("/var/cache/circus-lab/ssh-debs")
SSH_PACKAGES = ("openssh-server", "libwrap0")


def _ssh_debs() -> list[str]:
    """`--ssh-debs DIR` for run-systemd-tests.sh's t_ssh_tunnel: the .debs of an OpenSSH server, downloaded
    (never installed) on the host once, for the guest to unpack. [] (the check then skips, saying why)
    when apt cannot get them."""
    if all(list(SSH_DEBS.glob(f"{name}_*.deb")) for name in SSH_PACKAGES):
        return ["--ssh-debs", str(SSH_DEBS)]
    if shutil.which("apt-get") is None:
        print("t_ssh_tunnel will skip: no apt-get to download openssh-server")
        return []
    SSH_DEBS.mkdir(parents=True, exist_ok=True)
    got = _run(["apt-get", "download", "-q", *SSH_PACKAGES], timeout=300, cwd=SSH_DEBS)
    if got.returncode != 0:
        print(f"t_ssh_tunnel will skip: apt-get download failed ({got.returncode})")
        return []
    return ["--ssh-debs", str(SSH_DEBS)]


def test_systemd_unit_checks_in_nspawn(lab: Path) -> None:
    ssh_debs = _ssh_debs()
    result = _run(
        ["bash", str(lab / "tests/lab/nspawn-run.sh"), "--mask", "postgresql.service", "--timeout", "300",
         str(lab / "tests/system/run-systemd-tests.sh"), *ssh_debs],
        timeout=420,
        cwd=lab,
    )
    if result.returncode == EXIT_SKIP:
        pytest.skip("run-systemd-tests.sh: nothing to test yet (see output)")
    assert result.returncode == 0, f"run-systemd-tests.sh failed (exit {result.returncode}):\n{result.stdout}"
    assert "[systemd-tests] passed" in result.stdout
    if ssh_debs:  # given an sshd to unpack, the --ssh check must have run, not skipped
        assert "[systemd-tests] PASS ssh_tunnel" in result.stdout


def test_deb_install_cycle_in_nspawn(lab: Path) -> None:
    if shutil.which("dpkg-buildpackage") is None and shutil.which("apt-get") is None:
        pytest.skip("cannot build the .deb: no dpkg-buildpackage and no apt-get")
    # Outside /tmp: the container sees the host root (overlay), and its tmpfiles may clean /tmp.
    Path("/var/cache/circus-lab").mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="pytest-deb.", dir="/var/cache/circus-lab"))
    try:
        built = _run(["bash", str(lab / "tests/lab/deb-build.sh"), "--out", str(out), str(lab)], timeout=600)
        assert built.returncode == 0, f"deb-build.sh failed:\n{built.stderr[-4000:]}"
        (deb,) = out.glob("circus-linux_*.deb")
        result = _run(
            ["bash", str(lab / "tests/lab/nspawn-run.sh"), "--mask", "postgresql.service", "--timeout", "300",
             str(lab / "tests/system/deb-install-check.sh"), str(deb)],
            timeout=420,
            cwd=lab,
        )
        assert result.returncode == 0, f"deb-install-check.sh failed:\n{result.stdout}"
        assert "RESULT: PASS" in result.stdout
    finally:
        shutil.rmtree(out, ignore_errors=True)
