"""The dashboard end to end in headless Chromium (Debian's) driven by playwright-core from npm."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import wait_for

CACHE = Path("/var/cache/circus-linux-test")
NPM_DIR = CACHE / "npm"  # test-owned: never /tmp, never the repo
ARTIFACTS = CACHE / "artifacts"
CHROMIUM = "/usr/bin/chromium"
DRIVER = Path(__file__).resolve().parents[1] / "web" / "dashboard.cjs"

WATCHER = """
[watcher:pool]
cmd = sleep 600
numprocesses = 1
"""


def playwright_core() -> Path:
    """The playwright-core module (its own JS only: the browser is Debian's), installed once with npm."""
    module = NPM_DIR / "node_modules" / "playwright-core"
    if module.is_dir():
        return module
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (apt-get install npm)")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    if not (NPM_DIR / "package.json").exists():
        (NPM_DIR / "package.json").write_text('{"name": "circus-linux-test", "private": true}\n')
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR), "playwright-core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 or not module.is_dir():
        pytest.skip(f"npm install playwright-core failed: {done.stderr[-500:]}")
    return module


@pytest.mark.slow
def test_dashboard_in_chromium(circusd: Any, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    if shutil.which("node") is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    module = playwright_core()
    daemon = circusd(WATCHER, httpd="true", httpd_port=0)
    port = int(
        wait_for(lambda: re.search(r"dashboard on http://[^:]+:(\d+)/", daemon.log_text()), 10).group(1)
    )
    wait_for(lambda: daemon.pids("pool"), 10, what="pool worker")
    # The buttons need the token: open the URL circusd wrote beside its control socket (what
    # `circusctl dashboard-url` prints); the page turns it into a cookie and drops it from the URL.
    token_file = Path(daemon.endpoint[len("ipc://") :] + ".dashboard")
    wait_for(token_file.exists, 10, what="dashboard token file")
    query = urlsplit(token_file.read_text().strip()).query
    shot = tmp_path / "dashboard.png"
    profile = tmp_path / "chromium-profile"  # a new, empty profile every run
    profile.mkdir()
    done = subprocess.run(
        ["node", str(DRIVER), f"http://127.0.0.1:{port}/?{query}", str(shot), str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PLAYWRIGHT_CORE": str(module), "CHROMIUM": CHROMIUM},
    )
    if shot.exists():  # kept for a person to look at, pass or fail
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "dashboard.png")
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["watchers"] == ["pool"]
    assert seen["points_after"] > seen["points_before"] >= 1
    assert seen["numprocesses_before"] == 1 and seen["numprocesses_after"] == 2
    assert seen["errors"] == []
    assert "no output captured" in seen["tail"]
    assert seen["url"] == f"http://127.0.0.1:{port}/", "the token left the address bar"
    # The click went through the control layer: the control channel agrees.
    assert daemon.call("numprocesses", name="pool")["numprocesses"] == 2
    wait_for(lambda: len(daemon.pids("pool")) == 2, 10, what="second worker")
    assert shot.stat().st_size > 10_000
