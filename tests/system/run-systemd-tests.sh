#!/bin/bash
# run-systemd-tests.sh — systemd-level checks of circus-linux, run INSIDE a booted guest by
#     tests/lab/nspawn-run.sh tests/system/run-systemd-tests.sh [--deb PATH]      (from the checkout)
# It installs the project (default: pip install of the checkout into a venv over Debian's python3-* packages,
# so the old Debian versions of pyzmq/psutil/pyroute2/cffi are what runs; or --deb: the built package),
# installs units/ and a configuration, then runs every t_* function below in order.
# Must not: run on a real host (it refuses unless PID 1 is systemd inside a container or a VM).
#
# Adding a check: write a function t_<name> and add <name> to TESTS. It returns 0 (pass), 1 (fail),
# 77 (skip: print why) or 78 (known gap, reported as XFAIL without failing the run: say what it waits for).
# Helpers: wait_for SECONDS CMD, ctl ARGS (circusctl on the packaged endpoint), prop UNIT PROPERTY, dump.
# The service under test is $SVC (circus.service); its config is /etc/circus/circus.ini (+ circus.d/*.ini).
# Exit status: 0 no failure, 1 a failure, 77 nothing could run (no circusd in the checkout yet).
set -uo pipefail

DEB=""
[ "${1:-}" = --deb ] && DEB=$(readlink -f "$2")
SRC=$(pwd)            # nspawn-run.sh / qemu-run.sh run us in the bound checkout
SVC=circus.service
ENDPOINT=ipc:///run/circus/circus.sock
VENV=/opt/circus-venv
CIRCUSD="" CIRCUSCTL=""

say() { echo "[systemd-tests] $*"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds or the deadline passes.
wait_for() {
    local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s%N)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
ctl() { timeout 30 "$CIRCUSCTL" --endpoint "$ENDPOINT" --timeout 10 "$@"; }
have_circusctl() { [ -n "$CIRCUSCTL" ] && "${CIRCUSD%circusd}python3" -c 'import circus_linux.cli.circusctl' 2>/dev/null; }
prop() { systemctl show -P "$2" "$1"; }
dump() { systemctl status --no-pager "$SVC" 2>&1 | tail -20; journalctl -u "$SVC" --no-pager -n 30 -o cat 2>&1; }

[ "$(cat /proc/1/comm)" = systemd ] || { say "PID 1 is not systemd: run me through tests/lab/nspawn-run.sh"; exit 2; }
systemd-detect-virt -q || { say "refusing to run outside a container/VM"; exit 2; }
[ -f "$SRC/units/circus.service" ] || { say "run me from the checkout (cwd $SRC has no units/)"; exit 2; }

# ---------------------------------------------------------------------------------------------------------
install_from_checkout() {
    if [ ! -f "$SRC/circus_linux/cli/circusd.py" ]; then
        say "SKIP everything: circus_linux/cli/circusd.py does not exist yet"; exit 77
    fi
    local t0; t0=$(date +%s%N)
    # Build from a copy: pip builds in the source tree, and the checkout is the host's (bound read-write).
    mkdir -p /opt/circus-src
    tar -C "$SRC" --exclude=.git --exclude='.venv*' --exclude=build --exclude='*.egg-info' --exclude='*.so' \
        --exclude=__pycache__ --exclude=dist-deb -cf - . | tar -C /opt/circus-src -xf -
    /usr/bin/python3 -m venv --system-site-packages "$VENV" || return 1
    # No network in the guest, so no build isolation: setuptools and cffi come from Debian.
    "$VENV/bin/pip" install -q --no-build-isolation --no-deps --no-index /opt/circus-src || return 1
    CIRCUSD=$VENV/bin/circusd CIRCUSCTL=$VENV/bin/circusctl
    install -m 0644 "$SRC/units/circus.service" "$SRC/units/circus@.service" /etc/systemd/system/
    mkdir -p /etc/systemd/system/circus.service.d /etc/systemd/system/circus@.service.d
    for d in circus.service.d circus@.service.d; do
        printf '[Service]\nExecStart=\nExecStart=%s %s\n' "$CIRCUSD" \
            "$([ $d = circus.service.d ] && echo /etc/circus/circus.ini || echo /etc/circus/%i.ini)" \
            > /etc/systemd/system/$d/10-venv.conf
    done
    systemd-sysusers "$SRC/debian/circus-linux.sysusers" || return 1
    mkdir -p /etc/circus/circus.d
    install -m 0644 "$SRC/debian/circus.ini" /etc/circus/circus.ini
    systemctl daemon-reload
    say "installed the checkout into $VENV in $(ms_since "$t0") ms"
}

install_from_deb() {
    local t0; t0=$(date +%s%N)
    # The host image's policy-rc.d (exit 101) would stop the maintainer scripts from starting services.
    [ -e /usr/sbin/policy-rc.d ] && mv /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.circus-lab
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$DEB" >/var/log/circus-lab-apt.log 2>&1 \
        || { cat /var/log/circus-lab-apt.log; return 1; }
    CIRCUSD=/usr/bin/circusd CIRCUSCTL=/usr/bin/circusctl
    say "installed $DEB in $(ms_since "$t0") ms"
}

# ---------------------------------------------------------------------------------------------------------
# The checks. Order matters only where noted.

t_units_verify() {
    local u out rc=0
    for u in circus.service circus@.service; do
        out=$(systemd-analyze verify --man=no "$(systemctl show -P FragmentPath "$u" 2>/dev/null || echo /etc/systemd/system/$u)" 2>&1)
        # Units of other packages on the host image may draw warnings of their own: only ours count.
        out=$(echo "$out" | grep -E 'circus' || true)
        [ -z "$out" ] || { echo "$out"; rc=1; }
    done
    return $rc
}

t_config_check() {
    "$CIRCUSD" --check /etc/circus/circus.ini
}

# Type=notify: `systemctl start` returns only after circusd sent READY=1.
t_start_ready() {
    local t0; t0=$(date +%s%N)
    systemctl start "$SVC" || { dump; return 1; }
    say "  systemctl start took $(ms_since "$t0") ms"
    [ "$(systemctl is-active "$SVC")" = active ] || { dump; return 1; }
    say "  StatusText: $(prop "$SVC" StatusText)"
}

t_runtime_dir() {
    local perm; perm=$(stat -c '%U:%G %a' /run/circus)
    [ "$perm" = "root:circus 750" ] || { say "  /run/circus is $perm"; return 1; }
    wait_for 10 test -S /run/circus/circus.sock || { say "  no control socket"; dump; return 1; }
}

t_delegate() {
    [ "$(prop "$SVC" Delegate)" = yes ] || return 1
    local cg; cg=$(prop "$SVC" ControlGroup)
    local v2=/sys/fs/cgroup$cg; [ -d "/sys/fs/cgroup/unified$cg" ] && v2=/sys/fs/cgroup/unified$cg
    say "  controllers delegated: $(cat "$v2/cgroup.controllers" 2>/dev/null || echo '?')"
    say "  cgroup $cg: $(find "/sys/fs/cgroup/unified$cg" "/sys/fs/cgroup$cg" -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sed "s|.*$cg/||" | tr '\n' ' ')"
}

t_circusctl_list() {
    have_circusctl || { say "  SKIP: circus_linux.cli.circusctl does not exist yet"; return 77; }
    local out; out=$(ctl list) || { echo "$out"; dump; return 1; }
    say "  circusctl list: ${out:-<none>}"
}

# A member of the circus group (not root) may use circusctl on the packaged socket; anyone else may not.
t_group_access() {
    have_circusctl || { say "  SKIP: circus_linux.cli.circusctl does not exist yet"; return 77; }
    id circuslab-member >/dev/null 2>&1 || useradd --no-create-home --groups circus circuslab-member || return 1
    id circuslab-other >/dev/null 2>&1 || useradd --no-create-home circuslab-other || return 1
    local mode; mode=$(stat -c '%a' /run/circus/circus.sock)
    say "  socket: $(stat -c '%U:%G' /run/circus/circus.sock) $mode"
    # Known gap: control/server.py creates ipc sockets 0600 (owner only), so the group gate in /run/circus
    # cannot work yet. Reported as XFAIL until the socket is group-writable; then this is a real check.
    if [ $((8#$mode & 8#020)) = 0 ]; then say "  XFAIL: the control socket is not group-writable ($mode)"; return 78; fi
    local out
    out=$(runuser -u circuslab-member -- timeout 20 "$CIRCUSCTL" --endpoint "$ENDPOINT" --timeout 5 list 2>&1) \
        || { say "  circus group member cannot use circusctl: $out"; return 1; }
    if runuser -u circuslab-other -- timeout 20 "$CIRCUSCTL" --endpoint "$ENDPOINT" --timeout 5 list >/dev/null 2>&1; then
        say "  a user outside the circus group could use circusctl"; return 1
    fi
}

# circusd pets the watchdog: with WatchdogSec=2 it must still be the same process after 5 s.
t_watchdog() {
    mkdir -p /run/systemd/system/circus.service.d
    printf '[Service]\nWatchdogSec=2\n' > /run/systemd/system/circus.service.d/50-fast-watchdog.conf
    systemctl daemon-reload && systemctl restart "$SVC" || { dump; return 1; }
    local pid; pid=$(prop "$SVC" MainPID)
    local end=$(( $(date +%s) + 5 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        [ "$(prop "$SVC" MainPID)" = "$pid" ] || { say "  watchdog fired: MainPID changed"; dump; break; }
        sleep 0.5
    done
    local ok=0
    [ "$(prop "$SVC" MainPID)" = "$pid" ] && [ "$(prop "$SVC" NRestarts)" = 0 ] || ok=1
    rm -f /run/systemd/system/circus.service.d/50-fast-watchdog.conf
    systemctl daemon-reload && systemctl restart "$SVC"
    return $ok
}

# SIGHUP reloads in place: same main process, still active.
t_reload() {
    local pid; pid=$(prop "$SVC" MainPID)
    systemctl reload "$SVC" || { dump; return 1; }
    wait_for 10 test "$(systemctl is-active "$SVC")" = active || { dump; return 1; }
    [ "$(prop "$SVC" MainPID)" = "$pid" ] || { say "  MainPID changed on reload"; return 1; }
}

t_template_instance() {
    cat > /etc/circus/demo.ini <<'EOF'
[circus]
endpoint = ipc:///run/circus/demo/circus.sock
pubsub_endpoint = ipc:///run/circus/demo/pubsub.sock
stats_endpoint = ipc:///run/circus/demo/stats.sock
logoutput = -
EOF
    systemctl start circus@demo.service || { journalctl -u circus@demo --no-pager -n 20; return 1; }
    wait_for 10 test -S /run/circus/demo/circus.sock || { say "  no /run/circus/demo/circus.sock"; return 1; }
    systemctl stop circus@demo.service
    # circus.service must have kept its own socket: the instance removed only its subdirectory
    [ ! -e /run/circus/demo ] && [ -S /run/circus/circus.sock ]
}

# units/circus-web.socket as documented in it: systemd owns 127.0.0.1:18080, circus.service gets it through
# Sockets= and LISTEN_FDNAMES=web, circusd adopts it for [socket:web], a watcher serves on it, and the
# socket keeps listening across `systemctl restart circus`. systemd holds the port, so a circusd that bound
# [socket:web] itself instead of adopting the fd would fail with EADDRINUSE: an answer proves the hand-over.
t_socket_handover() {
    sed -e 's/^ListenStream=.*/ListenStream=127.0.0.1:18080/' "$SRC/units/circus-web.socket" \
        > /etc/systemd/system/circus-web.socket
    mkdir -p /etc/systemd/system/circus.service.d
    printf '[Unit]\nRequires=circus-web.socket\nAfter=circus-web.socket\n[Service]\nSockets=circus-web.socket\n' \
        > /etc/systemd/system/circus.service.d/50-web-socket.conf
    printf '%s\n' 'import socket, sys' 'listener = socket.socket(fileno=int(sys.argv[1]))' 'while True:' \
        '    conn, _ = listener.accept()' '    conn.sendall(b"hello from circus\n")' '    conn.close()' \
        > /etc/circus/hello.py
    printf '%s\n' '[socket:web]' 'host = 127.0.0.1' 'port = 18080' '' '[watcher:hello]' \
        'cmd = /usr/bin/python3 /etc/circus/hello.py $(circus.sockets.web)' 'use_sockets = true' \
        > /etc/circus/circus.d/web.ini
    local rc=0 out
    systemctl daemon-reload && systemctl restart "$SVC" || { dump; rc=1; }
    if [ $rc = 0 ]; then
        out=$(socket_hello 2>&1) && [ "$out" = "hello from circus" ] || { say "  first connection: $out"; dump; rc=1; }
    fi
    if [ $rc = 0 ]; then
        systemctl restart "$SVC" || rc=1
        out=$(socket_hello 2>&1) && [ "$out" = "hello from circus" ] || { say "  after restart: $out"; dump; rc=1; }
        [ "$(systemctl is-active circus-web.socket)" = active ] || { say "  circus-web.socket is not active"; rc=1; }
    fi
    rm -f /etc/systemd/system/circus-web.socket /etc/systemd/system/circus.service.d/50-web-socket.conf \
        /etc/circus/circus.d/web.ini /etc/circus/hello.py
    systemctl stop circus-web.socket 2>/dev/null
    systemctl daemon-reload; systemctl restart "$SVC" || rc=1
    return $rc
}
socket_hello() {
    /usr/bin/python3 -c 'import socket; s = socket.create_connection(("127.0.0.1", 18080), timeout=10); print(s.recv(100).decode().strip())'
}

# Stop: KillMode=mixed, circusd stops its watchers, nothing is left in the service's cgroup.
t_stop() {
    local t0; t0=$(date +%s%N)
    systemctl stop "$SVC" || return 1
    say "  systemctl stop took $(ms_since "$t0") ms"
    [ "$(systemctl is-active "$SVC")" = inactive ] || { dump; return 1; }
    [ "$(prop "$SVC" Result)" = success ] || { say "  Result=$(prop "$SVC" Result)"; dump; return 1; }
}

TESTS=(units_verify config_check start_ready runtime_dir delegate circusctl_list group_access watchdog reload
       template_instance socket_handover stop)

# ---------------------------------------------------------------------------------------------------------
if [ -n "$DEB" ]; then install_from_deb || exit 1; else install_from_checkout || exit 1; fi
PASS=0 FAIL=0 SKIP=0 XFAIL=0 FAILED=()
for t in "${TESTS[@]}"; do
    t0=$(date +%s%N)
    "t_$t"; rc=$?
    case $rc in
        0) PASS=$((PASS + 1)); say "PASS $t ($(ms_since "$t0") ms)" ;;
        77) SKIP=$((SKIP + 1)); say "SKIP $t" ;;
        78) XFAIL=$((XFAIL + 1)); say "XFAIL $t (known gap)" ;;
        *) FAIL=$((FAIL + 1)); FAILED+=("$t"); say "FAIL $t ($(ms_since "$t0") ms)" ;;
    esac
done
say "passed $PASS, failed $FAIL${FAILED:+ (${FAILED[*]})}, skipped $SKIP, known gaps $XFAIL"
[ $FAIL = 0 ]
