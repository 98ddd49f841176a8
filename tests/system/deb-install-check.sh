#!/bin/bash
# deb-install-check.sh — the circus-linux .deb's whole life in a throw-away systemd guest: install (the
# postinst creates the circus user, enables and starts circus.service), the autopkgtest
# debian/tests/service-smoke, an upgrade (restart, not stop/start), remove (stopped, config kept) and purge
# (config and state gone); between them, a watcher added with a drop-in config and circusctl (see below).
# Prints the time of every step.
#     tests/lab/deb-build.sh && tests/lab/nspawn-run.sh tests/system/deb-install-check.sh dist-deb/circus-linux_*.deb
# Must not: run on a real host (it disables policy-rc.d and installs packages).
# The package's dependencies must already be installed in the guest (no network): the host root has them
# once deb-build.sh ran; a make-rootfs.sh tree has them baked in.
set -uo pipefail
DEB=$(readlink -f "${1:?usage: deb-install-check.sh PATH/TO/circus-linux.deb}")
SRC=$(pwd)
SVC=circus.service
export DEBIAN_FRONTEND=noninteractive

T=$(date +%s%N)
step() { echo "== $* (+$(( ($(date +%s%N) - T) / 1000000 )) ms)"; T=$(date +%s%N); }
fail() { echo "FAIL: $*"; systemctl status --no-pager "$SVC" 2>&1 | tail -15; journalctl -u "$SVC" --no-pager -n 30 -o cat; exit 1; }
apt_do() { apt-get -y -q "$@" >/var/log/circus-lab-apt.log 2>&1 || { cat /var/log/circus-lab-apt.log; return 1; }; }
ENDPOINT=ipc:///run/circus/circus.sock
ctl() { timeout 30 circusctl --endpoint "$ENDPOINT" --timeout 10 "$@"; }
lab_pids() { ctl list lab 2>/dev/null | tr -c '0-9' '\n' | grep . | sort; }
# wait_until SECONDS CMD...: poll CMD every 0.1 s until it succeeds or the deadline passes.
wait_until() {
    local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
    until "$@" >/dev/null 2>&1; do [ "$(date +%s%N)" -lt "$deadline" ] || return 1; sleep 0.1; done
}
# rolled OLD: within 20 s, the lab watcher has as many pids as in OLD and none of them.
rolled() {
    local deadline=$(( $(date +%s) + 20 )) now
    while [ "$(date +%s)" -lt "$deadline" ]; do
        now=$(lab_pids)
        [ "$(echo "$now" | wc -l)" = "$(echo "$1" | wc -l)" ] && [ -z "$(comm -12 <(echo "$1") <(echo "$now"))" ] && return 0
        sleep 0.2
    done
    return 1
}

[ "$(cat /proc/1/comm)" = systemd ] && systemd-detect-virt -q || fail "run me in a guest: tests/lab/nspawn-run.sh"
# The host image's Docker-style policy-rc.d (exit 101) keeps maintainer scripts from starting services.
[ -e /usr/sbin/policy-rc.d ] && mv /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.circus-lab

step "install $(basename "$DEB")"
apt_do install "$DEB" || fail "apt-get install"
step "installed"
[ "$(systemctl is-enabled $SVC)" = enabled ] || fail "$SVC not enabled by the postinst"
[ "$(systemctl is-active $SVC)" = active ] || fail "$SVC not started by the postinst"
getent group circus >/dev/null && getent passwd circus >/dev/null || fail "no circus user/group (sysusers)"
dpkg-query -W -f='${Conffiles}\n' circus-linux | grep -q /etc/circus/circus.ini || fail "circus.ini is not a conffile"
[ -d /etc/circus/circus.d ] || fail "no /etc/circus/circus.d"
man -w circusd >/dev/null 2>&1 && man -w circusctl >/dev/null 2>&1 || echo "note: man pages not found by man -w (man-db missing?)"
[ -f /usr/share/bash-completion/completions/circusctl ] || echo "note: no bash completion installed"
circusd --check /etc/circus/circus.ini || fail "circusd --check of the shipped config"

step "autopkgtest service-smoke"
"$SRC/debian/tests/service-smoke" || fail "debian/tests/service-smoke"
step "service-smoke passed"

systemctl start $SVC || fail "start"

# The Debian operator's path: a watcher dropped into /etc/circus/circus.d/, `circusctl reloadconfig`, scaled
# with circusctl, its output in the journal (workers inherit circusd's stdout, the journal stream), circusd's
# own records in the journal with their priority, `systemctl reload` rolling it. The drop-in stays for the
# upgrade below, which must bring the watcher back.
step "watcher through a drop-in + circusctl"
cat > /etc/circus/circus.d/lab.ini <<'EOF'
[watcher:lab]
cmd = /bin/sh -c 'echo "lab worker $CIRCUS_WID says hello"; exec sleep 600'
numprocesses = 1
EOF
ctl reloadconfig >/dev/null || fail "circusctl reloadconfig"
ctl list | grep -qw lab || fail "reloadconfig did not add the drop-in watcher: $(ctl list)"
ctl incr lab 2 >/dev/null || fail "circusctl incr"
wait_until 15 test "$(lab_pids | wc -l)" = 3 || fail "scaling to 3 failed: $(lab_pids | tr '\n' ' ')"
wait_until 15 sh -c "journalctl -u $SVC --no-pager -o cat | grep -q 'lab worker 3 says hello'" \
    || fail "the workers' output is not in the journal"
# The watcher's own cgroup (Delegate=yes): its figures come back through `stats`, from the kernel's files.
stats=$(ctl --json stats lab) || fail "circusctl stats"
echo "$stats" | python3 -c '
import json, sys
cg = json.load(sys.stdin).get("cgroup") or {}
print("cgroup stats of lab:", {k: cg.get(k) for k in ("cpu_usage_usec", "pids_current", "backends")})
# cpu.stat exists in every cgroup2 dir; nspawn delegates no controllers, so pids may have no backend here
assert cg.get("cpu_usage_usec") is not None and cg.get("backends", {}).get("cpu") == "v2", cg
assert cg.get("pids_current") in (None, 3), cg
' || fail "no cgroup stats for the lab watcher: $stats"
grep -q "lab" /proc/$(lab_pids | head -1)/cgroup || fail "lab worker not in a lab cgroup: $(cat /proc/$(lab_pids | head -1)/cgroup)"
# circusd logs through the journal API under systemd (JOURNAL_STREAM): SYSLOG_IDENTIFIER=circusd, a PRIORITY.
journalctl -u $SVC -t circusd -o json --no-pager | grep -q '"PRIORITY"' || fail "no circusd journal records"
before=$(lab_pids)
systemctl reload $SVC || fail "systemctl reload"
rolled "$before" || fail "systemctl reload did not roll the lab workers ($(echo $before) -> $(echo $(lab_pids)))"
# A member of group circus (not root) may use circusctl: /run/circus is root:circus 0750, the sockets 0660.
id circuslab-member >/dev/null 2>&1 || useradd --no-create-home --groups circus circuslab-member
runuser -u circuslab-member -- circusctl --endpoint "$ENDPOINT" --timeout 10 list >/dev/null 2>&1 \
    || fail "a circus group member cannot use circusctl"
step "drop-in watcher added, scaled to 3, in the journal, rolled by reload"

invocation=$(systemctl show -P InvocationID $SVC)
step "upgrade (reinstall over itself)"
apt_do install --reinstall "$DEB" || fail "reinstall"
step "reinstalled"
[ "$(systemctl is-active $SVC)" = active ] || fail "$SVC not active after upgrade"
[ "$(systemctl show -P InvocationID $SVC)" != "$invocation" ] || fail "$SVC was not restarted by the upgrade"
wait_until 15 test "$(lab_pids | wc -l)" = 1 || fail "the drop-in watcher is not back after the upgrade (1 worker: its ini says so)"

step "remove"
apt_do remove circus-linux || fail "remove"
step "removed"
state=$(systemctl is-active $SVC 2>/dev/null || true)
[ "$state" != active ] || fail "$SVC still active after remove"
[ -f /etc/circus/circus.ini ] || fail "remove deleted the configuration (only purge may)"

step "purge"
apt_do purge circus-linux || fail "purge"
step "purged"
for p in /etc/circus /var/lib/circus /lib/systemd/system/circus.service; do
    [ ! -e "$p" ] || fail "$p still exists after purge"
done
echo "RESULT: PASS"
