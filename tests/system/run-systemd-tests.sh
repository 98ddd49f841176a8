#!/bin/bash
# run-systemd-tests.sh — systemd-level checks of circus-linux, run INSIDE a booted guest by
#     tests/lab/nspawn-run.sh tests/system/run-systemd-tests.sh [--deb PATH] [--ssh-debs DIR]  (from the checkout)
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

DEB="" SSH_DEBS=""
while [ $# -gt 0 ]; do
    case $1 in
        --deb) DEB=$(readlink -f "$2"); shift 2 ;;
        --ssh-debs) SSH_DEBS=$(readlink -f "$2"); shift 2 ;;  # openssh-server + libwrap0 .debs, for t_ssh_tunnel
        *) echo "usage: $0 [--deb PATH] [--ssh-debs DIR]" >&2; exit 2 ;;
    esac
done
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
    # The packaged circus.ini sets endpoint_group = circus (mode 0660): the socket must be group-writable.
    if [ $((8#$mode & 8#020)) = 0 ]; then say "  the control socket is not group-writable ($mode)"; return 1; fi
    local out
    out=$(runuser -u circuslab-member -- timeout 20 "$CIRCUSCTL" --endpoint "$ENDPOINT" --timeout 5 list 2>&1) \
        || { say "  circus group member cannot use circusctl: $out"; return 1; }
    if runuser -u circuslab-other -- timeout 20 "$CIRCUSCTL" --endpoint "$ENDPOINT" --timeout 5 list >/dev/null 2>&1; then
        say "  a user outside the circus group could use circusctl"; return 1
    fi
}

# Type=notify + per-worker readiness: with a `notify = true` watcher whose workers need 1.5 s before their
# READY=1, `systemctl restart` returns only once they sent it (circusd's READY=1 waits for every autostart
# watcher), and the workers' own STATUS= is visible in `circusctl stats`.
t_notify_ready() {
    printf '%s\n' 'import os, signal, socket, time' 'time.sleep(1.5)' \
        'open("/run/circus-lab-ready-%d" % os.getpid(), "w").close()' \
        'a = os.environ["NOTIFY_SOCKET"]; a = "\0" + a[1:] if a.startswith("@") else a' \
        's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)' \
        's.sendto(b"READY=1\nSTATUS=warmed up", a)' 'while True: signal.pause()' > /etc/circus/slowstart.py
    printf '%s\n' '[watcher:slowstart]' 'cmd = /usr/bin/python3 /etc/circus/slowstart.py' 'numprocesses = 2' \
        'notify = true' 'ready_timeout = 20' > /etc/circus/circus.d/slowstart.ini
    rm -f /run/circus-lab-ready-*
    local t0 rc=0 ms; t0=$(date +%s%N)
    systemctl restart "$SVC" || { dump; rc=1; }
    ms=$(ms_since "$t0")
    local ready; ready=$(ls /run/circus-lab-ready-* 2>/dev/null | wc -l)
    say "  systemctl restart returned after $ms ms with $ready/2 workers ready; StatusText: $(prop "$SVC" StatusText)"
    [ "$ready" = 2 ] || { say "  circus.service was active before its notify workers were ready"; rc=1; }
    [ "$ms" -ge 1500 ] || rc=1
    [ "$(systemctl is-active "$SVC")" = active ] || rc=1
    if have_circusctl; then
        local stats; stats=$(ctl --json stats slowstart 2>&1)
        echo "$stats" | grep -q "warmed up" || { say "  worker STATUS= not in stats: $stats"; rc=1; }
    fi
    rm -f /etc/circus/circus.d/slowstart.ini /etc/circus/slowstart.py /run/circus-lab-ready-*
    return $rc
}

# circusd pets the watchdog: with WatchdogSec=2 it must still be the same process after 3 s (1.5 periods);
# then, frozen with SIGSTOP, it stops petting, and systemd kills it (SIGABRT, then SIGKILL after
# TimeoutAbortSec) and starts a new one (Restart=on-failure): a new MainPID.
t_watchdog() {
    mkdir -p /run/systemd/system/circus.service.d
    printf '[Service]\nWatchdogSec=2\nTimeoutAbortSec=2\n' > /run/systemd/system/circus.service.d/50-fast-watchdog.conf
    systemctl daemon-reload && systemctl restart "$SVC" || { dump; return 1; }
    local pid; pid=$(prop "$SVC" MainPID)
    local end=$(( $(date +%s) + 3 )) ok=0
    while [ "$(date +%s)" -lt "$end" ]; do
        [ "$(prop "$SVC" MainPID)" = "$pid" ] || { say "  watchdog fired: MainPID changed"; dump; ok=1; break; }
        sleep 0.5
    done
    [ "$(prop "$SVC" NRestarts)" = 0 ] || ok=1
    if [ $ok = 0 ]; then
        local t0; t0=$(date +%s%N)
        kill -STOP "$pid"
        if wait_for 20 sh -c "[ \"\$(systemctl show -P MainPID $SVC)\" != $pid ] && [ \"\$(systemctl show -P MainPID $SVC)\" != 0 ] && systemctl is-active -q $SVC"; then
            say "  frozen circusd $pid replaced by $(prop "$SVC" MainPID) after $(ms_since "$t0") ms (NRestarts=$(prop "$SVC" NRestarts))"
            journalctl -u "$SVC" --no-pager -o cat | grep -qi watchdog || { say "  no watchdog line in the journal"; ok=1; }
        else
            say "  frozen circusd was not restarted"; kill -CONT "$pid" 2>/dev/null; dump; ok=1
        fi
    fi
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
# Sockets= and LISTEN_FDNAMES=web, circusd adopts it for [socket:web], and two HTTP workers serve on it.
# systemd holds the port, so a circusd that bound [socket:web] itself instead of adopting the fd would fail
# with EADDRINUSE: an answer proves the hand-over. Beside it, [socket:stored] (127.0.0.1:18081) is bound by
# circusd itself and parked in the fd store (FDSTORE=1, FDNAME=stored).
# Then: `systemctl reload` rolls the workers (new pids, same sockets); `kill -9` of circusd under a steady
# request loop on both ports: systemd restarts it (Restart=on-failure), it takes both sockets back (the
# .socket unit's and the fd store's), and we count the requests that failed; `systemctl restart` keeps both.
t_socket_handover() {
    sed -e 's/^ListenStream=.*/ListenStream=127.0.0.1:18080/' "$SRC/units/circus-web.socket" \
        > /etc/systemd/system/circus-web.socket
    mkdir -p /etc/systemd/system/circus.service.d
    # RestartSec short: connections wait in the accept queue for the whole gap, so a short gap shows the
    # mechanism without stretching the run (the shipped 1 s works the same, with longer waits).
    printf '[Unit]\nRequires=circus-web.socket\nAfter=circus-web.socket\n[Service]\nSockets=circus-web.socket\nRestartSec=200ms\n' \
        > /etc/systemd/system/circus.service.d/50-web-socket.conf
    printf '%s\n' 'import http.server, os, socket, sys' \
        'class Hello(http.server.BaseHTTPRequestHandler):' \
        '    def do_GET(self):' \
        '        body = b"hello from circus %d\n" % os.getpid()' \
        '        self.send_response(200)' \
        '        self.send_header("Content-Length", str(len(body)))' \
        '        self.end_headers()' \
        '        self.wfile.write(body)' \
        '    def log_message(self, *args): pass' \
        'server = http.server.HTTPServer(("127.0.0.1", 0), Hello, bind_and_activate=False)' \
        'server.socket.close()' \
        'server.socket = socket.socket(fileno=int(sys.argv[1]))  # the fd circusd mapped in' \
        'server.serve_forever()' > /etc/circus/hello.py
    printf '%s\n' '[socket:web]' 'host = 127.0.0.1' 'port = 18080' 'systemd = only' '' \
        '[socket:stored]' 'host = 127.0.0.1' 'port = 18081' '' \
        '[watcher:hello]' 'cmd = /usr/bin/python3 /etc/circus/hello.py $(circus.sockets.web)' 'sockets = web' \
        'numprocesses = 2' '' \
        '[watcher:stored]' 'cmd = /usr/bin/python3 /etc/circus/hello.py $(circus.sockets.stored)' \
        'sockets = stored' > /etc/circus/circus.d/web.ini
    local rc=0 out port
    systemctl daemon-reload && systemctl restart "$SVC" || { dump; rc=1; }
    if [ $rc = 0 ]; then
        for port in 18080 18081; do
            out=$(http_get $port 2>&1) && [[ "$out" == "hello from circus "* ]] || { say "  first GET :$port: $out"; dump; rc=1; }
        done
        have_circusctl && say "  listsockets: $(ctl --json listsockets 2>&1 | tr '\n' ' ')"
    fi
    if [ $rc = 0 ] && have_circusctl; then
        local before; before=$(pids_of hello)
        systemctl reload "$SVC" || rc=1
        if pids_rolled "$before"; then
            say "  reload rolled hello: $(echo $before) -> $(echo $(pids_of hello))"
        else
            say "  reload did not roll the workers ($(echo $before) -> $(echo $(pids_of hello)))"; rc=1
        fi
    fi
    if [ $rc = 0 ]; then
        crash_under_load || rc=1
    fi
    if [ $rc = 0 ]; then
        systemctl restart "$SVC" || rc=1
        for port in 18080 18081; do
            out=$(http_get $port 2>&1) && [[ "$out" == "hello from circus "* ]] || { say "  after restart :$port: $out"; dump; rc=1; }
        done
        [ "$(systemctl is-active circus-web.socket)" = active ] || { say "  circus-web.socket is not active"; rc=1; }
    fi
    rm -f /etc/systemd/system/circus-web.socket /etc/systemd/system/circus.service.d/50-web-socket.conf \
        /etc/circus/circus.d/web.ini /etc/circus/hello.py
    systemctl stop circus-web.socket 2>/dev/null
    systemctl daemon-reload; systemctl restart "$SVC" || rc=1
    return $rc
}
http_get() {
    /usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=10).read().decode().strip())' "$1"
}
pids_of() { ctl list "$1" 2>/dev/null | tr -c '0-9' '\n' | grep . | sort; }
# pids_rolled OLD: poll (20 s) until `list hello` shows as many pids as before and none of the old ones.
pids_rolled() {
    local old="$1" now deadline=$(( $(date +%s) + 20 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        now=$(pids_of hello)
        if [ -n "$now" ] && [ "$(echo "$now" | wc -l)" = "$(echo "$old" | wc -l)" ] \
           && [ -z "$(comm -12 <(echo "$old") <(echo "$now"))" ]; then return 0; fi
        sleep 0.2
    done
    return 1
}
# A steady request loop (one GET every 10 ms, alternating :18080 and :18081, 10 s timeout) while circusd
# is killed with SIGKILL; prints and checks the counts. A refused connection would mean a socket was
# closed during the gap (a failure); a reset one, a connection accepted by a worker that was killed with
# circusd (reported as a NOTE with its count).
LOOP_PY='
import collections, json, os, sys, time, urllib.request
stop, result = sys.argv[1], sys.argv[2]
ok, failed, slowest, i = 0, collections.Counter(), 0.0, 0
while not os.path.exists(stop):
    port = 18080 + i % 2
    i += 1
    t0 = time.monotonic()
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10).read()
        ok += body.startswith(b"hello from circus")
    except Exception as exc:
        reason = getattr(exc, "reason", exc)
        failed["%s:%d" % (type(reason).__name__, port)] += 1
    slowest = max(slowest, time.monotonic() - t0)
    time.sleep(0.01)
with open(result, "w") as fh:
    json.dump({"ok": ok, "failed": sum(failed.values()), "by_error": failed, "slowest_s": round(slowest, 3)}, fh)
'
crash_under_load() {
    local stopfile=/run/circus-lab-loop.stop result=/run/circus-lab-loop.result
    rm -f $stopfile $result
    /usr/bin/python3 -c "$LOOP_PY" $stopfile $result &
    local loop=$! old new t0 rc=0 workers survivors=0 p
    sleep 1
    old=$(prop "$SVC" MainPID)
    workers=$(pids_of hello | tr '\n' ' ')
    t0=$(date +%s%N)
    kill -9 "$old"
    wait_for 20 sh -c "p=\$(systemctl show -P MainPID $SVC); [ \"\$p\" != $old ] && [ \"\$p\" != 0 ] && systemctl is-active -q $SVC" \
        || { say "  circusd was not restarted after kill -9"; rc=1; }
    new=$(prop "$SVC" MainPID)
    say "  kill -9 $old: active again as $new after $(ms_since "$t0") ms (NRestarts=$(prop "$SVC" NRestarts))"
    for p in $workers; do [ -d /proc/$p ] && survivors=$((survivors + 1)); done
    say "  old hello workers still alive after the restart: $survivors of $(echo $workers | wc -w)"
    sleep 1
    touch $stopfile; wait $loop
    say "  request loop: $(cat $result 2>/dev/null)"
    have_circusctl && say "  sockets after the crash: $(ctl --json listsockets 2>&1 | tr '\n' ' ')"
    if grep -q 'ConnectionRefusedError' $result 2>/dev/null || [ ! -s $result ]; then
        say "  connections were REFUSED (or the loop failed): a socket was closed during the restart"; rc=1
    fi
    grep -q '"failed": 0' $result || say "  NOTE: some requests failed (in flight on a worker killed with circusd)"
    rm -f $stopfile $result
    return $rc
}

# Worker output to journald: relayed (JournalStream: one entry per line with CIRCUS_WATCHER/WID/PID and
# PRIORITY 6/3) and direct (the worker's fd 1 is a journald stream socket; lines never pass through circusd).
t_journal_streams() {
    printf '%s\n' '[watcher:jrelay]' 'cmd = /bin/sh -c "echo relayed-out; echo relayed-err >&2; exec sleep 1000"' \
        'stdout_stream.class = journal' 'stderr_stream.class = journal' '' \
        '[watcher:jdirect]' 'cmd = /bin/sh -c "echo direct-out; exec sleep 1000"' \
        'stdout_stream.class = journal-direct' > /etc/circus/circus.d/journal.ini
    local rc=0
    systemctl restart "$SVC" || { dump; rc=1; }
    if [ $rc = 0 ]; then
        wait_for 10 sh -c 'journalctl -u circus CIRCUS_WATCHER=jrelay PRIORITY=6 -o cat | grep -qx relayed-out' \
            || { say "  relayed stdout line missing"; journalctl -u circus CIRCUS_WATCHER=jrelay -o verbose -n 5 --no-pager; rc=1; }
        wait_for 10 sh -c 'journalctl -u circus CIRCUS_WATCHER=jrelay PRIORITY=3 -o cat | grep -qx relayed-err' \
            || { say "  relayed stderr line missing"; rc=1; }
        wait_for 10 sh -c 'journalctl -u circus SYSLOG_IDENTIFIER=jdirect -o cat | grep -qx direct-out' \
            || { say "  direct line missing"; journalctl -u circus -n 20 --no-pager; rc=1; }
    fi
    rm -f /etc/circus/circus.d/journal.ini
    systemctl restart "$SVC" || rc=1
    return $rc
}

# circusctl --ssh for real (Circus's option): an OpenSSH server in this guest, whose network namespace is
# its own (nspawn --private-network), so nothing listens on the host. It is unpacked from the .debs the
# host downloaded (--ssh-debs; the guest has no network and its root is a throw-away overlay), runs as a
# plain process on the guest's loopback, and lets one key in for a forwarding-only user. A second circusd
# has its control endpoint on tcp://127.0.0.1 and is reached only through the tunnel.
t_ssh_tunnel() {
    [ -n "$SSH_DEBS" ] && ls "$SSH_DEBS"/openssh-server_*.deb >/dev/null 2>&1 \
        || { say "  skip: no openssh-server .deb given (--ssh-debs DIR): the host could not download it"; return 77; }
    local d=/run/circus-ssh-test port=2222 cport=5599 rc=0 out
    mkdir -p "$d" /run/sshd && chmod 0700 "$d"
    # Unpacked, not installed (no configuration, no service). --keep-directory-symlink: the guest's /lib is
    # merged-/usr's symlink to usr/lib, which a plain `dpkg-deb -x DEB /` replaces by a directory.
    for deb in "$SSH_DEBS"/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C / || return 1
    done
    id sshd >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
    useradd --create-home --shell /bin/sh tunneller && usermod -p '*' tunneller  # '*': no password, not locked
    ssh-keygen -q -t ed25519 -N '' -C host -f "$d/host_key" && ssh-keygen -q -t ed25519 -N '' -C ok -f "$d/key" \
        && ssh-keygen -q -t ed25519 -N '' -C other -f "$d/other_key" || return 1
    # sshd reads authorized_keys as the user: in the user's own home, as usual
    install -d -o tunneller -m 0700 /home/tunneller/.ssh
    install -o tunneller -m 0600 "$d/key.pub" /home/tunneller/.ssh/authorized_keys
    printf '%s\n' "ListenAddress 127.0.0.1" "Port $port" "HostKey $d/host_key" "PidFile $d/sshd.pid" \
        "UsePAM no" "PasswordAuthentication no" \
        "KbdInteractiveAuthentication no" "PermitRootLogin no" "AllowTcpForwarding local" "LogLevel VERBOSE" \
        > "$d/sshd_config"
    mkdir -p /root/.ssh && echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$d/host_key.pub")" >> /root/.ssh/known_hosts
    /usr/sbin/sshd -f "$d/sshd_config" -D -e 2>"$d/sshd.log" &
    local sshd_pid=$!
    printf '%s\n' '[circus]' "endpoint = tcp://127.0.0.1:$cport" "pubsub_endpoint = ipc://$d/pub.sock" \
        "stats_endpoint = ipc://$d/stats.sock" '' '[watcher:tunnelled]' 'cmd = sleep 600' 'numprocesses = 2' \
        > "$d/circus.ini"
    "$CIRCUSD" "$d/circus.ini" >"$d/circusd.log" 2>&1 &
    local circusd_pid=$!
    local tunnel=(timeout 30 "$CIRCUSCTL" --endpoint "tcp://127.0.0.1:$cport" --timeout 10 --ssh "tunneller@127.0.0.1:$port")
    if ! wait_for 20 grep -q "Server listening on 127.0.0.1 port $port" "$d/sshd.log"; then
        say "  sshd did not start:"; cat "$d/sshd.log"; rc=1
    elif ! wait_for 20 timeout 5 "$CIRCUSCTL" --endpoint "tcp://127.0.0.1:$cport" --timeout 1 list; then
        say "  circusd did not answer on tcp://127.0.0.1:$cport:"; cat "$d/circusd.log"; rc=1
    elif ! out=$("${tunnel[@]}" --ssh-keyfile "$d/key" list); then
        say "  circusctl --ssh list failed: $out"; tail -n 20 "$d/sshd.log" "$d/circusd.log"; rc=1
    elif [ "$out" != tunnelled ]; then
        say "  circusctl --ssh list printed '$out', not 'tunnelled'"; rc=1
    elif ! grep -q "Accepted publickey for tunneller" "$d/sshd.log"; then
        say "  sshd did not log the tunnel's login"; cat "$d/sshd.log"; rc=1
    else
        say "  circusctl --ssh tunneller@127.0.0.1:$port list: $out (sshd: $(grep -o 'Accepted publickey for tunneller' "$d/sshd.log"))"
    fi
    if [ $rc = 0 ]; then
        # a key the server does not know: refused, and circusctl says what ssh said
        out=$("${tunnel[@]}" --ssh-keyfile "$d/other_key" list 2>&1) && { say "  a wrong key got through: $out"; rc=1; }
        case $out in
            *"Permission denied (publickey)"*) say "  wrong key refused: $(echo "$out" | tail -1)" ;;
            *) say "  a wrong key failed, but not with ssh's refusal: $out"; rc=1 ;;
        esac
    fi
    kill "$circusd_pid" "$sshd_pid" 2>/dev/null
    wait "$circusd_pid" "$sshd_pid" 2>/dev/null
    return $rc
}

# Stop: KillMode=mixed, circusd stops its watchers, nothing is left in the service's cgroup.
t_stop() {
    local t0; t0=$(date +%s%N)
    systemctl stop "$SVC" || return 1
    say "  systemctl stop took $(ms_since "$t0") ms"
    [ "$(systemctl is-active "$SVC")" = inactive ] || { dump; return 1; }
    [ "$(prop "$SVC" Result)" = success ] || { say "  Result=$(prop "$SVC" Result)"; dump; return 1; }
}

TESTS=(units_verify config_check start_ready runtime_dir delegate circusctl_list group_access notify_ready watchdog reload
       template_instance socket_handover journal_streams ssh_tunnel stop)

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
