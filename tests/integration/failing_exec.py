"""Runs circusd with os.execv failing, as when a package upgrade removed the python binary (for
test_upgrade: an in-place upgrade whose exec fails)."""

import os
import sys
from typing import NoReturn


def _execv_fails(path: str, args: object) -> NoReturn:
    raise FileNotFoundError(2, "No such file or directory (the test's failing exec)", path)


os.execv = _execv_fails

from circus_linux.cli.circusd import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
