#!/usr/bin/env bash
# Set up everything circus-linux needs on a fresh Debian 12 machine, as root:
#  - apt: compiler and headers for the cffi extension, libsystemd for systemd-python, and Debian's own
#    python3-zmq/psutil/systemd/pyroute2/cffi (the versions the .deb runs on);
#  - .venv: the newest releases from PyPI, the package installed editable with its dev tools;
#  - .venv-debian: Debian's /usr/bin/python3 with Debian's packages only, the package installed into it,
#    so the test suite can show the code works with both sets of versions.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential python3-dev python3-venv python3-pip pkg-config libsystemd-dev
  python3-zmq python3-psutil python3-systemd python3-pyroute2 python3-cffi python3-setuptools
  python3-pytest python3-hypothesis
  procps iproute2 tmux
  python3-prometheus-client chromium
  libzmq3-dev
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# compat: a plain path entry in a .pth. The default editable finder is imported by site at every
# interpreter start (pathlib, importlib.util: ~10-15 ms on each circusctl/circusd/test subprocess).
# setuptools calls compat transitional: when a release drops it, fall back to the default mode.
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat \
  || .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'

if [ ! -x .venv-debian/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv-debian
fi
# --no-deps/--no-build-isolation: build and run against Debian's cffi 1.15, pyzmq 24, psutil 5.9, ...
.venv-debian/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall .
