"""Where the lab tests run the lab scripts from: the checkout, or a copy of it outside any tmp directory.

The lab binds (nspawn) or shares (qemu 9p) the directory it is started from, and refuses a directory under
/tmp or /var/tmp: the container's systemd-tmpfiles would wipe it on the host. CI may clone anywhere, so
a checkout under a tmp directory is copied to /var/cache/circus-lab/checkout-<pid> for the run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path("/var/cache/circus-lab")
SKIP = (".git", ".venv", "build", "dist", "dist-deb", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".hypothesis")


def under_tmp(path: Path) -> bool:
    return str(path).startswith(("/tmp/", "/var/tmp/"))


@contextmanager
def lab_checkout() -> Iterator[Path]:
    """The directory to run the lab from; a temporary copy (removed afterwards) when the repo is in tmp."""
    if not under_tmp(REPO):
        yield REPO
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    copy = CACHE / f"checkout-{id(REPO):x}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(REPO, copy, symlinks=True, ignore=shutil.ignore_patterns(*SKIP))
    try:
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)
