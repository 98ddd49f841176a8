#!/bin/bash
# deb-build.sh — build the circus-linux binary .deb from a checkout with `dpkg-buildpackage -us -uc -b`, in a
# scratch copy (the checkout is never written to), and optionally run lintian on the result.
# Must not: build with a pyenv/venv Python (pybuild must see Debian's /usr/bin/python3 and its python3-*
# packages), or leave build trees behind.
#
# usage: tests/lab/deb-build.sh [--out DIR] [--lintian] [SRCDIR]      (as root; SRCDIR default: the checkout)
#   --out DIR    where the .deb, .buildinfo/.changes and the build log go (default: SRCDIR/dist-deb)
#   --lintian    run lintian on the .changes; its output goes to DIR/lintian.txt, and errors fail the build
# The toolchain and the Build-Depends are installed with apt only if dpkg-checkbuilddeps says they are missing.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
OUT="" LINTIAN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$(readlink -f "$2"); shift 2 ;;
        --lintian) LINTIAN=1; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) echo "deb-build: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
SRC=$(readlink -f "${1:-$HERE/../..}")
OUT=${OUT:-$SRC/dist-deb}
log() { echo "deb-build: $*" >&2; }
[ -f "$SRC/debian/control" ] || { log "$SRC/debian/control not found"; exit 2; }
[ "$(id -u)" = 0 ] || { log "must run as root (apt, and dh_installdeb ownership)"; exit 2; }

T0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
CLEAN_ENV=(env -u PYTHONPATH -u VIRTUAL_ENV -u PYENV_VERSION -u PYTHONHOME PATH=/usr/sbin:/usr/bin:/sbin:/bin)
if ! command -v dpkg-checkbuilddeps >/dev/null || ! (cd "$SRC" && dpkg-checkbuilddeps) 2>/dev/null \
        || { [ $LINTIAN = 1 ] && ! command -v lintian >/dev/null; }; then
    log "installing the toolchain and the Build-Depends"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends build-essential dpkg-dev debhelper fakeroot >/dev/null
    apt-get build-dep -y -qq "$SRC" >/dev/null
    [ $LINTIAN = 1 ] && apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
T1=$(date +%s)

NAME=$(cd "$SRC" && dpkg-parsechangelog -S Source)
VERSION=$(cd "$SRC" && dpkg-parsechangelog -S Version)
mkdir -p /var/cache/circus-lab
WORK=$(mktemp -d /var/cache/circus-lab/deb-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/$NAME-$VERSION
mkdir -p "$TREE"
# Only what the package is built from: no VCS data, venvs, caches or earlier build output.
tar -C "$SRC" --exclude=.git --exclude='.venv*' --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude=./build --exclude=./dist --exclude=./dist-deb --exclude='*.so' -cf - . | tar -C "$TREE" -xf -

log "building $NAME $VERSION"
if ! (cd "$TREE" && "${CLEAN_ENV[@]}" dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1; then
    tail -60 "$WORK/build.log" >&2
    mkdir -p "$OUT"; cp "$WORK/build.log" "$OUT/$NAME-build.log"
    log "FAILED (full log: $OUT/$NAME-build.log)"; exit 1
fi
T2=$(date +%s)
mkdir -p "$OUT"
rm -f "$OUT/${NAME}"_*.deb
cp "$WORK"/*.deb "$WORK"/*.changes "$WORK"/*.buildinfo "$OUT"/
cp "$WORK/build.log" "$OUT/$NAME-build.log"
log "deps $((T1 - T0)) s, build $((T2 - T1)) s"

RC=0
if [ $LINTIAN = 1 ]; then
    # --fail-on error: warnings are reported (and justified by overrides) but do not fail the build.
    "${CLEAN_ENV[@]}" lintian --info --display-info --fail-on error "$OUT"/"${NAME}_${VERSION}"_*.changes \
        >"$OUT/lintian.txt" 2>&1 || RC=$?
    log "lintian ($(( $(date +%s) - T2 )) s, exit $RC):"
    cat "$OUT/lintian.txt" >&2
fi
ls -1 "$OUT"/*.deb
exit $RC
