#!/bin/bash
# make-rootfs.sh — build (once) a minimal Debian bookworm root tree with systemd as init, a kernel and the
# runtime dependencies of circus-linux, for tests/lab/qemu-run.sh (and nspawn-run.sh --rootfs).
# Must not: touch the host system beyond installing debootstrap and writing DIR (and DIR.*).
#
# usage: tests/lab/make-rootfs.sh [--packages a,b] [--mirror URL] [--force] [DIR]
#   DIR          default /var/cache/circus-lab/rootfs
#   --packages   more Debian packages to bake in (guests have no network)
#   --force      rebuild even if DIR is up to date
# Up to date = DIR/.circus-lab-rootfs holds the same package list; then nothing is done.
set -euo pipefail
# What circusd needs at run time on Debian (python3-cffi-backend: the compiled module's ABI), and what the
# system tests use. Keep in step with debian/control's Depends.
PKGS=systemd,systemd-sysv,udev,dbus,kmod,procps,iproute2,ca-certificates,python3,python3-venv
PKGS=$PKGS,python3-zmq,python3-psutil,python3-pyroute2,python3-systemd,python3-cffi-backend
PKGS=$PKGS,linux-image-amd64,initramfs-tools
MIRROR=http://deb.debian.org/debian FORCE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --packages) PKGS=$PKGS,$2; shift 2 ;;
        --mirror) MIRROR=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) echo "make-rootfs: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
DIR=${1:-/var/cache/circus-lab/rootfs}
log() { echo "make-rootfs: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
STAMP="packages=$PKGS"
if [ $FORCE = 0 ] && [ "$(cat "$DIR/.circus-lab-rootfs" 2>/dev/null)" = "$STAMP" ]; then
    log "$DIR is up to date"; exit 0
fi
if ! command -v debootstrap >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

T0=$(date +%s)
rm -rf "$DIR" "$DIR.ext4"
mkdir -p "$(dirname "$DIR")"
log "debootstrap bookworm into $DIR"
debootstrap --variant=minbase --include="$PKGS" bookworm "$DIR" "$MIRROR" >"$DIR.debootstrap.log" 2>&1 \
    || { tail -30 "$DIR.debootstrap.log" >&2; exit 1; }

echo circus-lab > "$DIR/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 circus-lab\n::1 localhost ip6-localhost ip6-loopback\n' > "$DIR/etc/hosts"
echo 'LABEL=circuslab / ext4 rw,errors=remount-ro 0 1' > "$DIR/etc/fstab"
# The serial console carries the boot log, not a login prompt; e2scrub costs seconds of emulated boot.
ln -sf /dev/null "$DIR/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$DIR/etc/systemd/system/e2scrub_reap.service"

# The guest side of qemu-run.sh. Inert unless the kernel command line has circus.lab=1 (so the tree can also
# be booted by nspawn). It mounts the 9p shares, runs the script as a unit with Delegate=yes, sends its
# output to the virtio port circus.lab.out, leaves the exit status in the share, and powers off.
cat > "$DIR/usr/local/sbin/circus-lab-guest" <<'EOF'
#!/bin/bash
OUT=/dev/virtio-ports/circus.lab.out
for _ in $(seq 200); do [ -e "$OUT" ] && break; sleep 0.05; done
exec >"$OUT" 2>&1
SHARE=/run/circus-lab
mkdir -p "$SHARE"
P9=trans=virtio,version=9p2000.L,msize=262144
if ! mount -t 9p -o "$P9" circuslab "$SHARE"; then echo "circus-lab: cannot mount the 9p share"; systemctl poweroff; exit 1; fi
WD=/
if [ -s "$SHARE/cwd" ]; then
    WD=$(cat "$SHARE/cwd"); mkdir -p "$WD"
    mount -t 9p -o "$P9,cache=none" circuslabcwd "$WD" || { echo "circus-lab: cannot mount cwd"; WD=/; }
fi
systemctl is-system-running --wait > "$SHARE/boot-state" 2>&1
PROPS=()
while IFS= read -r -d '' e; do PROPS+=("--setenv=$e"); done < "$SHARE/env"
ARGS=()
while IFS= read -r -d '' a; do ARGS+=("$a"); done < "$SHARE/args"
systemd-run --quiet --wait --pipe --collect --unit=circus-lab-script -p Delegate=yes \
    -p WorkingDirectory="$WD" -p TimeoutStartSec=infinity "${PROPS[@]}" "$SHARE/script" "${ARGS[@]}" </dev/null
echo $? > "$SHARE/rc"
sync
systemctl poweroff
EOF
chmod 0755 "$DIR/usr/local/sbin/circus-lab-guest"
cat > "$DIR/etc/systemd/system/circus-lab-guest.service" <<'EOF'
[Unit]
Description=circus-lab: run the script handed in by qemu-run.sh, then power off
ConditionKernelCommandLine=circus.lab=1
After=multi-user.target
[Service]
# exec, not oneshot: the boot job must finish (is-system-running = running) while the script runs.
Type=exec
ExecStart=/usr/local/sbin/circus-lab-guest
[Install]
WantedBy=multi-user.target
EOF
ln -sf ../circus-lab-guest.service "$DIR/etc/systemd/system/multi-user.target.wants/circus-lab-guest.service"

# A small initramfs boots seconds faster under emulation: only virtio disk + ext4 are needed.
sed -i 's/^MODULES=.*/MODULES=list/' "$DIR/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$DIR/etc/initramfs-tools/modules"
unshare --mount --propagation private sh -c \
    "mount -t proc proc '$DIR/proc' && chroot '$DIR' update-initramfs -u -k all" >/dev/null 2>&1

# No network in the guest: apt lists would only make every in-guest dpkg/apt run slower.
chroot "$DIR" apt-get clean
rm -rf "$DIR"/var/lib/apt/lists/* "$DIR"/var/cache/apt/*.bin
mkdir -p "$DIR/var/lib/apt/lists/partial"
echo "$STAMP" > "$DIR/.circus-lab-rootfs"
log "done in $(( $(date +%s) - T0 )) s, $(du -sh --exclude=proc "$DIR" | cut -f1)"
