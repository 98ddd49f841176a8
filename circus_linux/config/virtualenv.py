"""Where a watcher's `virtualenv` keeps its packages (Circus's load_virtualenv); reads the venv, nothing else.

Circus puts on the worker's PYTHONPATH the venv's site dir, `<venv>/lib/python<X.Y>/site-packages` (or
`pypy<X.Y>`; X.Y is `virtualenv_py_ver`, or circusd's own Python), and the existing directories its `.pth`
files name (lines starting with `#` or `import` skipped), in this order: the .pth directories, the
PYTHONPATH the worker had already, the site dir. The loader checks the site dir exists (an error on the
`virtualenv` key); spawnspec builds the variable at each spawn, so a package installed since is seen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def site_dir(venv: str, py_ver: str | None = None) -> str:
    """The venv's site-packages directory; ValueError naming the paths tried when there is none."""
    ver = py_ver or f"{sys.version_info[0]}.{sys.version_info[1]}"
    tried = [os.path.join(venv, "lib", f"{impl}{ver}", "site-packages") for impl in ("python", "pypy")]
    for path in tried:
        if os.path.isdir(path):
            return path
    raise ValueError(f"expected a virtualenv with a site-packages directory: none of {', '.join(tried)}")


def pth_dirs(site: str) -> list[str]:
    """The existing directories the .pth files of `site` name, in file-name order, each once."""
    out: list[str] = []
    try:
        names = sorted(n for n in os.listdir(site) if n.endswith(".pth"))
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(site, name), encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip() or line.startswith(("#", "import")):
                continue
            path = os.path.abspath(os.path.join(site, line.rstrip()))
            if path not in out and os.path.exists(path):
                out.append(path)
    return out


def pythonpath(venv: str, py_ver: str | None, current: str | None) -> str:
    """The worker's PYTHONPATH with the venv's directories, laid out as Circus's load_virtualenv does."""
    site = site_dir(venv, py_ver)
    parts: Sequence[str] = [*pth_dirs(site), *(current.split(os.pathsep) if current else [])]
    if site not in parts:
        parts = [*parts, site]
    return os.pathsep.join(parts)
