"""circusd loads at start only what serving needs: TLS, psutil and the stats code come on first use.

Read from the live process's /proc/PID/maps (what is really mapped), not from an in-process import list.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import wait_for

from circus_linux.runtime import upgrade
from circus_linux.runtime.aio import import_asyncio

WATCHER = """
[watcher:idle]
cmd = /bin/sleep 1000
numprocesses = 2
"""


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_fresh_circusd_maps_no_tls_and_no_psutil_until_asked(circusd: Any) -> None:
    d = circusd(WATCHER)
    wait_for(lambda: len(d.pids("idle")) == 2, what="2 workers")
    maps = _mapped(d.proc.pid)
    assert "/_ssl." not in maps and "libssl.so" not in maps, "asyncio pulled in OpenSSL"
    assert "_psutil_linux" not in maps, "psutil imported before anybody asked for stats"
    assert "/_lzma." not in maps and "/_bz2." not in maps, "shutil imported (argparse's width, which)"
    # First use loads them and works.
    stats = d.call("stats", name="idle")
    assert stats["status"] == "ok", stats
    assert len(stats["info"]) == 2
    dstats = d.call("dstats")
    assert dstats["status"] == "ok" and dstats["info"]["pid"] == d.proc.pid
    assert "_psutil_linux" in _mapped(d.proc.pid)


def test_ssl_can_still_be_imported_after_the_lean_asyncio(tmp_path: Path) -> None:
    # In a fresh interpreter: asyncio comes without ssl, and a later `import ssl` (a hook, a library)
    # still gets the real module.
    code = (
        "import sys\n"
        "from circus_linux.runtime.aio import import_asyncio\n"
        "import_asyncio({})\n"
        "assert 'ssl' not in sys.modules, 'ssl loaded with asyncio'\n"
        "import asyncio.base_events as be\n"
        "assert be.ssl is None\n"
        "import ssl\n"
        "assert ssl.create_default_context() is not None\n"
        "print('ok')\n"
    )
    script = tmp_path / "lean.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_asyncio_tls_escape_hatch(tmp_path: Path) -> None:
    script = tmp_path / "tls.py"
    script.write_text(
        "import sys\n"
        "from circus_linux.runtime.aio import import_asyncio\n"
        "import_asyncio({'CIRCUS_ASYNCIO_TLS': '1'})\n"
        "import asyncio.base_events as be\n"
        "assert be.ssl is not None and 'ssl' in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_import_asyncio_returns_the_loaded_module_when_already_imported() -> None:
    import asyncio

    assert import_asyncio({}) is asyncio


def test_upgrade_state_env_name_is_the_one_the_arbiter_checks() -> None:
    # arbiter._take_upgrade_state checks this name without importing runtime.upgrade.
    from circus_linux.runtime import arbiter

    assert upgrade.STATE_ENV == "CIRCUS_LINUX_UPGRADE_FD"
    assert upgrade.STATE_ENV not in os.environ
    assert arbiter._take_upgrade_state() is None


def test_every_command_module_loads_on_demand_under_its_wire_name() -> None:
    from circus_linux.control.command_names import NAMES
    from circus_linux.control.commands import COMMANDS, SPECS

    assert list(COMMANDS) == list(NAMES) and len(SPECS) == len(NAMES)
    for name in NAMES:
        module = COMMANDS[name]
        assert name == module.NAME and callable(module.execute)
        assert SPECS[name] is module.PROPERTIES
    assert "nosuchcommand" not in COMMANDS
