#!/bin/bash
# qemu-run.sh — run SCRIPT in a throw-away Debian VM (kernel 6.1, systemd as PID 1, pure cgroup v2 with every
# controller: memory, cpu, pids, io ...) as the unit circus-lab-script.service (Delegate=yes); stream its
# output; exit with its status. For the tests that need real cgroup v2 limits, which this host lacks.
# Must not: modify the rootfs (the disk image is booted with -snapshot) or share /tmp, /var/tmp with the guest.
#
# usage: tests/lab/qemu-run.sh [options] SCRIPT [ARGS...]           (as root, from the checkout)
#   --rootfs DIR      root tree from make-rootfs.sh (default /var/cache/circus-lab/rootfs, built if missing)
#   --accel auto|kvm|tcg   auto = kvm only with real vmx/svm and not PVM (this host's /dev/kvm is PVM: TCG)
#   --cpus N, --mem MB     guest size (default 2, 2048)
#   --no-share-cwd    do not mount the cwd in the guest (default: 9p, read-write, same path, SCRIPT's cwd)
#   -E NAME=VALUE     environment for SCRIPT (repeatable)
#   --timeout S       kill the VM after S seconds (default 1200), exit 124
#   --console FILE    keep the guest's serial console (kernel + systemd log) in FILE
# Exit status: SCRIPT's, or 2 usage, 3 the VM ended without a result, 124 timeout.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOTFS=/var/cache/circus-lab/rootfs ACCEL=auto CPUS=2 MEM=2048 SHARE_CWD=1 TIMEOUT=1200 CONSOLE_COPY=""
ENVS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rootfs) ROOTFS=$(readlink -f "$2"); shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --cpus) CPUS=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --no-share-cwd) SHARE_CWD=0; shift ;;
        -E) ENVS+=("$2"); shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --console) CONSOLE_COPY=$(readlink -f "$2"); shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) echo "qemu-run: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { sed -n '7p' "$0" >&2; exit 2; }
SCRIPT=$(readlink -f "$1"); shift
log() { echo "qemu-run: $*" >&2; }
[ -f "$SCRIPT" ] || { log "no such script: $SCRIPT"; exit 2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
if [ $SHARE_CWD = 1 ]; then
    # the guest's systemd-tmpfiles would age-clean a share mounted at a tmp path
    case "$PWD" in /|/tmp|/tmp/*|/var/tmp|/var/tmp/*|/run|/run/*|/proc*|/sys*|/dev*)
        log "refusing to share cwd $PWD: run from the checkout, or --no-share-cwd"; exit 2 ;; esac
fi
T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - T0) / 1000000 )) ms"; }

if ! command -v qemu-system-x86_64 >/dev/null; then
    log "installing qemu-system-x86"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
# make-rootfs.sh is idempotent: a no-op when the tree is current
[ -f "$ROOTFS/.circus-lab-rootfs" ] || bash "$HERE/make-rootfs.sh" "$ROOTFS" >&2
KERNEL=$(ls "$ROOTFS"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
INITRD=$(ls "$ROOTFS"/boot/initrd.img-* 2>/dev/null | sort -V | tail -1)
[ -n "$KERNEL" ] && [ -n "$INITRD" ] || { log "$ROOTFS has no kernel/initrd (rebuild: make-rootfs.sh --force)"; exit 2; }

# The tree becomes a sparse ext4 image once (mke2fs -d copies a directory into a new filesystem); rebuilt when
# the tree's stamp is newer.
IMG=$ROOTFS.ext4
if [ ! -f "$IMG" ] || [ "$ROOTFS/.circus-lab-rootfs" -nt "$IMG" ]; then
    log "making $IMG"
    rm -f "$IMG"
    size=$(( $(du -sm "$ROOTFS" | cut -f1) + 1536 ))
    mke2fs -q -t ext4 -L circuslab -d "$ROOTFS" "$IMG" "${size}M"
fi

if [ "$ACCEL" = auto ]; then
    ACCEL=tcg
    # PVM's /dev/kvm (module kvm_pvm) cannot run a stock kernel: it hangs in the decompressor.
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; fi
fi
case "$ACCEL" in
    kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
    tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
    *) log "bad --accel $ACCEL"; exit 2 ;;
esac

mkdir -p /var/cache/circus-lab
WORK=$(mktemp -d /var/cache/circus-lab/qemu.XXXXXX)
QPID="" TAILPID=""
cleanup() {
    set +e
    if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
        kill -TERM "$QPID"
        for _ in $(seq 30); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$QPID" 2>/dev/null; wait "$QPID" 2>/dev/null
    fi
    [ -n "$TAILPID" ] && { kill "$TAILPID" 2>/dev/null; wait "$TAILPID" 2>/dev/null; }
    [ -n "$CONSOLE_COPY" ] && cp "$WORK/console.log" "$CONSOLE_COPY" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SHARE=$WORK/share
mkdir -p "$SHARE"
install -m 0755 "$SCRIPT" "$SHARE/script"
# NUL-separated so that any value survives the trip
: > "$SHARE/env"; for e in "${ENVS[@]}"; do printf '%s\0' "$e" >> "$SHARE/env"; done
: > "$SHARE/args"; for a in "$@"; do printf '%s\0' "$a" >> "$SHARE/args"; done
: > "$WORK/output.log"
SHARES=(-virtfs "local,path=$SHARE,mount_tag=circuslab,security_model=none,id=circuslab")
if [ $SHARE_CWD = 1 ]; then
    printf '%s' "$PWD" > "$SHARE/cwd"
    SHARES+=(-virtfs "local,path=$PWD,mount_tag=circuslabcwd,security_model=none,id=circuslabcwd")
fi

log "booting $(basename "$KERNEL") (accel $ACCEL, $CPUS cpus, ${MEM} MB)"
qemu-system-x86_64 "${ACCEL_ARGS[@]}" -smp "$CPUS" -m "$MEM" \
    -nodefaults -no-user-config -display none -no-reboot -snapshot \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet circus.lab=1 systemd.unit=multi-user.target" \
    -drive "file=$IMG,format=raw,if=virtio" \
    -serial "file:$WORK/console.log" \
    -device virtio-serial-pci,id=vser \
    -chardev "file,id=labout,path=$WORK/output.log" \
    -device virtserialport,bus=vser.0,chardev=labout,name=circus.lab.out \
    -device virtio-rng-pci \
    "${SHARES[@]}" </dev/null >"$WORK/qemu.log" 2>&1 &
QPID=$!
tail -n +1 -f --pid="$QPID" "$WORK/output.log" &
TAILPID=$!

deadline=$(( $(date +%s) + TIMEOUT ))
while kill -0 "$QPID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
if kill -0 "$QPID" 2>/dev/null; then
    log "timeout after ${TIMEOUT}s; console tail:"; tail -30 "$WORK/console.log" >&2; exit 124
fi
wait "$QPID" 2>/dev/null || true
QPID=""
wait "$TAILPID" 2>/dev/null || true
TAILPID=""
if [ ! -s "$SHARE/rc" ]; then
    log "the VM stopped without a result after $(elapsed); qemu said:"; cat "$WORK/qemu.log" >&2
    log "console tail:"; tail -40 "$WORK/console.log" >&2
    exit 3
fi
RC=$(cat "$SHARE/rc")
log "boot state $(cat "$SHARE/boot-state" 2>/dev/null); script exited $RC; VM off after $(elapsed)"
exit "$RC"
