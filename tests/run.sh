#!/usr/bin/env bash
# The test command: set up (tests/setup.sh), lint, then the whole suite twice: with the newest PyPI
# releases (.venv) and with Debian 12's own packages (.venv-debian). Exits non-zero if anything fails.
# Extra arguments go to both pytest runs (e.g. -k notify, or --run-slow for the long fault tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh

echo "== lint: ruff + mypy"
.venv/bin/ruff check circus_linux tests bench
.venv/bin/mypy circus_linux bench

echo "== tests with the newest PyPI releases ($(.venv/bin/python -c 'import zmq, psutil, cffi; print("pyzmq", zmq.__version__, "psutil", psutil.__version__, "cffi", cffi.__version__)'))"
# This run includes the slow fault/load tests and the lab (systemd in nspawn, full cgroup v2 in qemu).
.venv/bin/python -P -m pytest -p no:cacheprovider --run-slow "$@"

echo "== tests with Debian's packages ($(.venv-debian/bin/python -c 'import zmq, psutil, cffi; print("pyzmq", zmq.__version__, "psutil", psutil.__version__, "cffi", cffi.__version__)'))"
# The lab tests (systemd in nspawn, qemu; the nspawn one already runs on Debian's python3-* packages)
# and the slow fault tests ran above; this run proves the same code on Debian's library versions.
CIRCUS_SKIP_LAB=1 .venv-debian/bin/python -P -m pytest -p no:cacheprovider "$@"
