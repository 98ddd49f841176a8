#!/bin/bash
# nspawn-run.sh — run SCRIPT inside a throw-away systemd-nspawn container whose PID 1 is systemd, as the
# transient unit circus-lab-script.service (Delegate=yes), stream its output, exit with its status.
# Must not: touch the host root (the container boots it with --volatile=overlay: writes go to a tmpfs),
# bind /tmp or /var/tmp into the container, or write into cgroups it did not create (it makes circus-lab-*).
#
# usage: tests/lab/nspawn-run.sh [options] SCRIPT [ARGS...]          (as root, from the checkout)
#   --rootfs DIR      boot DIR (made by tests/lab/make-rootfs.sh) instead of the host's root
#   --unified         pure cgroup v2 inside the container (default: hybrid, like this host)
#   --bind SRC[:DST]  extra read-write bind (repeatable); the cwd is always bound at the same path
#   --no-bind-cwd     do not bind the cwd (SCRIPT then runs in /)
#   -E NAME=VALUE     environment for SCRIPT (repeatable)
#   --mask UNIT       mask UNIT for this boot (repeatable), e.g. --mask postgresql.service (saves ~0.5 s)
#   --timeout S       give SCRIPT S seconds (default 900), then exit 124
#   --console FILE    keep the container console (boot log) in FILE
# SCRIPT is copied into the container (/run/circus-lab/script) and executed directly: it needs a shebang.
# Exit status: SCRIPT's, or 2 usage error, 3 container did not boot, 124 timeout.
set -euo pipefail

ROOTFS=/ UNIFIED=0 BIND_CWD=1 TIMEOUT=900 CONSOLE_COPY="" BOOT_TIMEOUT=120
BINDS=() ENVS=() KERNEL_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rootfs) ROOTFS=$(readlink -f "$2"); shift 2 ;;
        --unified) UNIFIED=1; shift ;;
        --bind) BINDS+=("$2"); shift 2 ;;
        --no-bind-cwd) BIND_CWD=0; shift ;;
        -E) ENVS+=("--setenv=$2"); shift 2 ;;
        --mask) KERNEL_ARGS+=("systemd.mask=$2"); shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --console) CONSOLE_COPY=$(readlink -f "$2"); shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) echo "nspawn-run: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { sed -n '7p' "$0" >&2; exit 2; }
SCRIPT=$(readlink -f "$1"); shift
log() { echo "nspawn-run: $*" >&2; }
[ -f "$SCRIPT" ] || { log "no such script: $SCRIPT"; exit 2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
[ -x "$ROOTFS/sbin/init" ] || [ -x "$ROOTFS/lib/systemd/systemd" ] || { log "$ROOTFS has no systemd"; exit 2; }

# The container's systemd-tmpfiles cleans /tmp and /var/tmp at boot; a bind there would empty the HOST dir.
# API filesystems and / itself make no sense as binds either.
unsafe_path() {
    case "$(readlink -f "$1")" in /|/tmp|/tmp/*|/var/tmp|/var/tmp/*|/run|/run/*|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) return 0 ;; esac
    return 1
}
NSPAWN_BINDS=()
for b in "${BINDS[@]}"; do
    src=${b%%:*} dst=${b#*:}
    if unsafe_path "$src" || unsafe_path "$dst"; then log "refusing bind $b (tmp/API directory)"; exit 2; fi
    NSPAWN_BINDS+=("--bind=$b")
done
WD=/
if [ $BIND_CWD = 1 ]; then
    unsafe_path "$PWD" && { log "refusing to bind cwd $PWD: run from the checkout, or --no-bind-cwd"; exit 2; }
    NSPAWN_BINDS+=("--bind=$PWD"); WD=$PWD
fi

if ! command -v systemd-nspawn >/dev/null; then
    log "installing systemd-container"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container >/dev/null
fi

T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - T0) / 1000000 )) ms"; }
# Scratch space lives under /var/cache (not /tmp) so that nothing bound into the container is under a tmp dir.
mkdir -p /var/cache/circus-lab
WORK=$(mktemp -d /var/cache/circus-lab/nspawn.XXXXXX)
MACHINE=circus-lab-$(basename "$WORK" | cut -d. -f2 | tr -dc 'a-zA-Z0-9')
mkdir -p "$WORK/root" "$WORK/share"
install -m 0755 "$SCRIPT" "$WORK/share/script"

# Our own cgroups, one per hierarchy nspawn uses; the container's tree is created below them.
CG=circus-lab-nspawn-$$
CGDIRS=()
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    CGDIRS=("/sys/fs/cgroup/$CG")
else
    [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && CGDIRS+=("/sys/fs/cgroup/unified/$CG")
    mountpoint -q /sys/fs/cgroup/systemd && CGDIRS+=("/sys/fs/cgroup/systemd/$CG")
fi

NSPAWN_PID="" LEADER=""
cleanup() {
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        [ -n "$LEADER" ] && timeout 20 nsenter -t "$LEADER" -a systemctl poweroff --no-block >/dev/null 2>&1
        for _ in $(seq 150); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    for d in "${CGDIRS[@]}"; do
        [ -d "$d" ] || continue
        # cgroup.kill exists only in cgroup2; in name=systemd stragglers are gone once v2 is killed
        [ -e "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
        for _ in $(seq 50); do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; [ -d "$d" ] || break; sleep 0.1; done
        [ -d "$d" ] && log "warning: could not remove cgroup $d"
    done
    [ -n "$CONSOLE_COPY" ] && cp "$WORK/console.log" "$CONSOLE_COPY" 2>/dev/null
    rm -rf "$WORK" "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ $UNIFIED = 1 ] && export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
# --register=no --keep-unit: there is no machined (PID 1 is not systemd) and no unit to make a scope in.
NSPAWN_ARGS=(--quiet --register=no --keep-unit --private-network --machine="$MACHINE" --console=read-only
             --volatile=overlay --boot --bind-ro="$WORK/share:/run/circus-lab" "${NSPAWN_BINDS[@]}")
# nspawn refuses "-D /" (even with --volatile=overlay), so boot a private bind mount of the root instead; the
# mount lives in its own mount namespace and disappears with it.
(
    for d in "${CGDIRS[@]}"; do mkdir -p "$d"; echo "$BASHPID" > "$d/cgroup.procs"; done
    exec unshare --mount --propagation private /bin/sh -c \
        'src=$1 dst=$2; shift 2; mount --bind "$src" "$dst" && exec systemd-nspawn -D "$dst" "$@"' \
        sh "$ROOTFS" "$WORK/root" "${NSPAWN_ARGS[@]}" -- systemd.unit=multi-user.target "${KERNEL_ARGS[@]}"
) >"$WORK/console.log" 2>&1 </dev/null &
NSPAWN_PID=$!

boot_failed() { log "$1"; tail -40 "$WORK/console.log" >&2; exit 3; }
# The container's init is the child of nspawn whose innermost pid is 1.
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while [ -z "$LEADER" ]; do
    kill -0 "$NSPAWN_PID" 2>/dev/null || boot_failed "systemd-nspawn exited early"
    [ "$(date +%s)" -lt "$deadline" ] || boot_failed "no container init after ${BOOT_TIMEOUT}s"
    for c in $(pgrep -P "$NSPAWN_PID" || true); do
        awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$c/status" 2>/dev/null && LEADER=$c
    done
    [ -n "$LEADER" ] || sleep 0.05
done
# systemctl talks to PID 1 over /run/systemd/private, which appears shortly after exec.
until nsenter -t "$LEADER" -a test -S /run/systemd/private 2>/dev/null; do
    kill -0 "$NSPAWN_PID" 2>/dev/null || boot_failed "systemd-nspawn exited early"
    [ "$(date +%s)" -lt "$deadline" ] || boot_failed "no systemd manager socket after ${BOOT_TIMEOUT}s"
    sleep 0.05
done
STATE=$(timeout "$BOOT_TIMEOUT" nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>/dev/null || true)
log "container $MACHINE booted ($STATE) in $(elapsed)"
case "$STATE" in
    running) ;;
    degraded) nsenter -t "$LEADER" -a systemctl --failed --no-legend --plain >&2 || true ;;
    *) boot_failed "boot ended in state '$STATE'" ;;
esac

# machinectl/systemd-run -M need machined; entering all namespaces of the container's init works without it.
set +e
timeout --kill-after=10 "$TIMEOUT" nsenter -t "$LEADER" -a systemd-run --quiet --wait --pipe --collect \
    --unit=circus-lab-script -p Delegate=yes -p WorkingDirectory="$WD" -p TimeoutStartSec=infinity \
    "${ENVS[@]}" /run/circus-lab/script "$@" </dev/null
RC=$?
set -e
[ $RC = 124 ] && log "script timed out after ${TIMEOUT}s"
log "script exited $RC after $(elapsed); powering off"
exit $RC
