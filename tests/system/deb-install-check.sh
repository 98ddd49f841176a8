#!/bin/bash
# deb-install-check.sh — the circus-linux .deb's whole life in a throw-away systemd guest: install (the
# postinst creates the circus user, enables and starts circus.service), the autopkgtest
# debian/tests/service-smoke, an upgrade (restart, not stop/start), remove (stopped, config kept) and purge
# (config and state gone). Prints the time of every step.
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
before=$(systemctl show -P InvocationID $SVC)
step "upgrade (reinstall over itself)"
apt_do install --reinstall "$DEB" || fail "reinstall"
step "reinstalled"
[ "$(systemctl is-active $SVC)" = active ] || fail "$SVC not active after upgrade"
[ "$(systemctl show -P InvocationID $SVC)" != "$before" ] || fail "$SVC was not restarted by the upgrade"

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
