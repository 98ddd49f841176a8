"""config/virtualenv.py: a venv's site dir and .pth directories laid out on PYTHONPATH as Circus does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from circus_linux.config import virtualenv


def _venv(root: Path, ver: str = f"{sys.version_info[0]}.{sys.version_info[1]}") -> Path:
    site = root / "lib" / f"python{ver}" / "site-packages"
    site.mkdir(parents=True)
    return site


def test_virtualenv_pythonpath_site_dir_for_the_running_or_given_version(tmp_path: Path) -> None:
    site = _venv(tmp_path)
    assert virtualenv.site_dir(str(tmp_path)) == str(site)
    with pytest.raises(ValueError, match=r"python2\.7/site-packages"):
        virtualenv.site_dir(str(tmp_path), "2.7")


def test_virtualenv_pythonpath_pth_dirs_then_current_then_site(tmp_path: Path) -> None:
    site = _venv(tmp_path / "venv")
    (tmp_path / "src").mkdir()
    (site / "pkg").mkdir()
    (site / "a.pth").write_text(f"# comment\nimport os; os.getpid()\n{tmp_path / 'src'}\n\nmissing-dir\n")
    (site / "b.pth").write_text("pkg\n")
    (site / "c.txt").write_text(f"{tmp_path}\n")  # not a .pth file
    got = virtualenv.pythonpath(str(tmp_path / "venv"), None, "/cur/one:/cur/two")
    want = [str(tmp_path / "src"), str(site / "pkg"), "/cur/one", "/cur/two", str(site)]
    assert got.split(os.pathsep) == want
    assert virtualenv.pythonpath(str(tmp_path / "venv"), None, str(site)).split(os.pathsep)[-1] == str(site)
