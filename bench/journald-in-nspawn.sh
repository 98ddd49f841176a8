#!/bin/bash
# journald-in-nspawn.sh — the journald rows of bench/streams.py (relayed `stdout_stream.class = journal` vs
# direct `journal-direct`), measured inside a throw-away nspawn container whose PID 1 is systemd.
#
# usage (as root, from anywhere in the checkout):  bash bench/journald-in-nspawn.sh [streams.py options]
#   e.g.  bash bench/journald-in-nspawn.sh --workers 4 --journal-lines 50000 --line 100   (the defaults)
#         bash bench/journald-in-nspawn.sh --repeat 3
#         bash bench/journald-in-nspawn.sh --keep-ratelimit     (journald's default rate limit: shows the loss)
# On the host it boots the container with tests/lab/nspawn-run.sh and runs itself there with --guest. In the
# guest it: disables journald's rate limiting with a drop-in (RateLimitIntervalSec=0, RateLimitBurst=0: with
# the default 10000 lines per 30 s per service most of a 200k-line run would be dropped), keeps the journal
# in /run (Storage=volatile, room for 2G, no forwarding), restarts systemd-journald, pip-installs the
# checkout into a venv over Debian's python3-* packages (as tests/system/run-systemd-tests.sh does), and
# runs `bench/streams.py --only journald` with that venv's python.
# Must not: change the host's journald or anything outside the container (the container's root is a
# volatile overlay of the host root: every write here vanishes with it), or run the guest part on a host.
# Exit status: streams.py's, or nspawn-run.sh's (2 usage, 3 no boot, 124 timeout).
set -euo pipefail

if [ "${1:-}" != --guest ]; then
    cd "$(dirname "$(readlink -f "$0")")/.."
    # the guest reads --keep-ratelimit only as its first argument
    args=() keep=()
    for a in "$@"; do if [ "$a" = --keep-ratelimit ]; then keep=("$a"); else args+=("$a"); fi; done
    exec bash tests/lab/nspawn-run.sh --mask postgresql.service --timeout 1200 \
        bench/journald-in-nspawn.sh --guest "${keep[@]}" "${args[@]}"
fi
shift
RATELIMIT="RateLimitIntervalSec=0
RateLimitBurst=0"
if [ "${1:-}" = --keep-ratelimit ]; then RATELIMIT="# rate limit: journald's defaults (--keep-ratelimit)"; shift; fi

say() { echo "[bench-journald] $*"; }
[ "$(cat /proc/1/comm)" = systemd ] && systemd-detect-virt -q \
    || { say "the guest part runs only inside a container/VM booted with systemd"; exit 2; }
SRC=$(pwd)  # nspawn-run.sh runs us in the bound checkout
[ -f "$SRC/bench/streams.py" ] || { say "run from the checkout (cwd $SRC has no bench/streams.py)"; exit 2; }
VENV=/opt/circus-bench-venv

mkdir -p /etc/systemd/journald.conf.d
cat > /etc/systemd/journald.conf.d/90-circus-bench.conf <<EOF
# bench/journald-in-nspawn.sh: no rate limiting unless --keep-ratelimit (it drops most of the run), the journal in /run
# with room for the whole run, nothing forwarded (only storing is measured).
[Journal]
$RATELIMIT
Storage=volatile
RuntimeMaxUse=2G
RuntimeMaxFileSize=512M
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
EOF
systemctl restart systemd-journald
say "journald (pid $(systemctl show -P MainPID systemd-journald), $(journalctl --version | head -1)) restarted with:"
grep '^[A-Z]' /etc/systemd/journald.conf.d/90-circus-bench.conf | sed 's/^/    /'
say "/run: $(df -h --output=size,avail /run | tail -1)"

t0=$(date +%s%N)
mkdir -p /opt/circus-src
tar -C "$SRC" --exclude=.git --exclude='.venv*' --exclude=build --exclude='*.egg-info' --exclude='*.so' \
    --exclude=__pycache__ --exclude=dist-deb -cf - . | tar -C /opt/circus-src -xf -
/usr/bin/python3 -m venv --system-site-packages "$VENV"
# No network in the guest, so no build isolation: setuptools and cffi come from Debian.
"$VENV/bin/pip" install -q --no-build-isolation --no-deps --no-index /opt/circus-src
say "installed the checkout into $VENV in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
say "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; $(uname -r); $("$VENV/bin/python" -V); load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "python3-zmq $("$VENV/bin/python" -c 'import zmq; print(zmq.__version__)'), psutil $("$VENV/bin/python" -c 'import psutil; print(psutil.__version__)')"

# -P: the bench script's directory is not put on sys.path; circusd (`python -P -m circus_linux`) then runs
# the installed package, not the checkout.
cd /opt/circus-src
rc=0
"$VENV/bin/python" -P bench/streams.py --only journald "$@" || rc=$?
say "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
