"""Throw-away venvs of the peer supervisors (Circus 0.19, supervisord 4.3), built from PyPI and cached.

    .venv/bin/python bench/peers.py            # build (or find) both venvs and print their versions

Each venv lives in /var/cache/circus-linux-bench/<name> and is built once with pip's ordinary client from
pinned requirements; it never touches the project's own venvs. A venv is built in a temp dir and renamed
into place, so a concurrent or interrupted build leaves either a whole venv or none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path("/var/cache/circus-linux-bench")  # tests/integration/test_circus_compat.py uses it too


@dataclass(frozen=True)
class Peer:
    name: str  # directory under CACHE
    requirements: tuple[str, ...]
    probe: str  # script in bin/ that must exist in a usable venv


# Pins: circus 0.19.0 declares only "pyzmq>=17, tornado>=5.0.2, psutil"; the newest of each (below)
# installs and runs on Python 3.11 (Debian's 3.11.2). Pinned so that a later release cannot change the
# figures silently.
CIRCUS = Peer(
    "circus-0.19",
    ("circus==0.19.0", "pyzmq==27.3.0", "tornado==6.6.1", "psutil==7.2.2"),
    "circusd",
)
SUPERVISOR = Peer("supervisor-4.3", ("supervisor==4.3.0",), "supervisord")


def base_python() -> str:
    """Debian's python when present: the venv then does not depend on pyenv's shims."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def venv_path(peer: Peer) -> Path:
    return CACHE / peer.name


def _usable(venv: Path, peer: Peer) -> bool:
    return (venv / "bin" / peer.probe).exists()


def ensure(peer: Peer, log: object = sys.stderr) -> Path:
    """The venv of `peer`, built now if not cached; raises RuntimeError with pip's tail when it cannot."""
    venv = venv_path(peer)
    if _usable(venv, peer):
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{peer.name}-", dir=CACHE))
    try:
        print(f"# building {venv} ({' '.join(peer.requirements)}) ...", file=log, flush=True)  # type: ignore[call-overload]
        subprocess.run([base_python(), "-m", "venv", str(tmp / "v")], check=True, capture_output=True)
        pip = subprocess.run(
            [
                str(tmp / "v" / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                *peer.requirements,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if pip.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(peer.requirements)} failed:\n{pip.stderr[-800:]}")
        # A venv's scripts hard-code their interpreter's path: point them at the final location.
        for script in (tmp / "v" / "bin").iterdir():
            if script.is_file() and not script.is_symlink():
                data = script.read_bytes()
                if data.startswith(b"#!") and str(tmp).encode() in data[:300]:
                    script.write_bytes(data.replace(str(tmp / "v").encode(), str(venv).encode()))
        try:
            os.rename(tmp / "v", venv)
        except OSError:
            if not _usable(venv, peer):  # not a concurrent build that won the race
                raise
        return venv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def versions(venv: Path, dists: tuple[str, ...]) -> str:
    """'name version' of each distribution installed in `venv`, from its own interpreter."""
    code = (
        "import importlib.metadata as m, sys\nprint(', '.join(f'{d} {m.version(d)}' for d in sys.argv[1:]))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *dists], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or out.stderr.strip()[-200:]


def main() -> int:
    for peer, dists in ((CIRCUS, ("circus", "pyzmq", "tornado", "psutil")), (SUPERVISOR, ("supervisor",))):
        venv = ensure(peer)
        print(f"{peer.name}: {venv}: {versions(venv, dists)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
