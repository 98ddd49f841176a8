#!/bin/bash
# run-cgroup-tests.sh — cgroup v2 limits, events and stats of circusd with real controllers, run INSIDE a
# booted VM by
#     tests/lab/qemu-run.sh tests/system/run-cgroup-tests.sh            (from the checkout, as root)
# circusd runs as the transient unit circus-lab-cg.service with Delegate=yes (DELEGATED mode), and one
# Python process drives every check over the wire (Python start-up is slow under TCG: one start, not one
# per check). Checks: circusd moved itself to the supervisor leaf; memory_max OOM-kills a hog, emits
# watcher.hog.oom and respawns it; pids_max caps a fork bomb and emits watcher.bomb.limit; cpu_max holds a
# busy loop to its share; `stats` matches the kernel files; a live `set` of a limit reaches the kernel.
#
# Getting the code in without network: the checkout is 9p-mounted at the same path. The cffi module must be
# the one built for Debian's python3 and cffi 1.15 (the .venv-debian install, built on the host by
# tests/run.sh): the package is copied to /opt/circus-lab (guest disk, thrown away with the -snapshot VM)
# with that module, and run as PYTHONPATH=/opt/circus-lab /usr/bin/python3 -P -m circus_linux. No pip, no
# compiler in the guest.
# Must not: run on a real host (refuses unless PID 1 is systemd inside a VM).
# Exit status: 0 all passed, 1 a check failed, 77 nothing could run (no module built for Debian's python).
set -uo pipefail

SRC=$(pwd)
LAB=/opt/circus-lab
RUN=/run/circus-cgtest  # not /run/circus-lab: that is the lab's 9p share (no unix sockets on 9p)
UNIT=circus-lab-cg.service
say() { echo "[cgroup-tests] $*"; }

[ "$(cat /proc/1/comm)" = systemd ] || { say "PID 1 is not systemd: run me through tests/lab/qemu-run.sh"; exit 2; }
[ "$(systemd-detect-virt --vm 2>/dev/null)" != none ] && systemd-detect-virt -q --vm \
    || { say "refusing to run outside a VM"; exit 2; }
[ -f "$SRC/circus_linux/cli/circusd.py" ] || { say "run me from the checkout (cwd $SRC)"; exit 2; }

NATIVE=$(ls "$SRC"/.venv-debian/lib/python3*/site-packages/circus_linux/_native*.so 2>/dev/null | head -1)
if [ -z "$NATIVE" ]; then
    say "SKIP: no cffi module built for Debian's python3 (.venv-debian); run tests/run.sh once on the host"
    exit 77
fi
T0=$(date +%s)
mkdir -p "$LAB" "$RUN"
chmod 0700 "$RUN"
cp -r "$SRC/circus_linux" "$LAB/"
find "$LAB" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$LAB"/circus_linux/_native*.so
cp "$NATIVE" "$LAB/circus_linux/"

cat > "$LAB/hog.py" <<'EOF'
import time
chunks = []
while True:  # touch every page: b"x" * n writes it, so the cgroup is charged
    chunks.append(b"x" * (8 << 20))
    time.sleep(0.01)
EOF
cat > "$LAB/bomb.py" <<'EOF'
import os, signal, sys
made, err = 0, 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    made += 1
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{made} {err}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    signal.pause()
EOF
cat > "$LAB/cg.ini" <<EOF
[circus]
endpoint = ipc://$RUN/ctl.sock
pubsub_endpoint = ipc://$RUN/pub.sock
stats_endpoint = ipc://$RUN/stats.sock

[watcher:hog]
cmd = /usr/bin/python3 $LAB/hog.py
autostart = false
memory_max = 48M
memory_swap_max = 0
max_retry = -1

[watcher:bomb]
cmd = /usr/bin/python3 $LAB/bomb.py $RUN/bomb.out
autostart = false
pids_max = 8

[watcher:busy]
cmd = /usr/bin/python3 -c "while True: pass"
cpu_max = 25%
EOF

say "starting circusd as $UNIT (Delegate=yes)"
if ! systemd-run --quiet --unit="$UNIT" -p Delegate=yes -p Type=notify -p NotifyAccess=main \
        -p TimeoutStartSec=120 --setenv=PYTHONPATH="$LAB" \
        /usr/bin/python3 -P -m circus_linux "$LAB/cg.ini"; then
    say "FAIL: circusd did not start"; journalctl -u "$UNIT" --no-pager -n 40 -o cat; exit 1
fi
say "circusd ready after $(( $(date +%s) - T0 )) s"

CG=/sys/fs/cgroup$(systemctl show -P ControlGroup "$UNIT")
export CG RUN UNIT
/usr/bin/python3 - <<'EOF'
import errno, json, os, sys, time, uuid
import zmq

CG, RUN = os.environ["CG"], os.environ["RUN"]
ctx = zmq.Context()
failed = []


def call(command, **props):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"ipc://{RUN}/ctl.sock")
    s.send(json.dumps({"id": uuid.uuid4().hex, "command": command, "properties": props}).encode())
    if not s.poll(30000):
        raise TimeoutError(command)
    reply = json.loads(s.recv())
    s.close()
    if reply.get("status") != "ok":
        raise AssertionError(f"{command}: {reply}")
    return reply


sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.LINGER, 0)
sub.connect(f"ipc://{RUN}/pub.sock")
sub.setsockopt(zmq.SUBSCRIBE, b"watcher.")
time.sleep(0.5)  # let the subscription reach the PUB before the first event we wait for


def event(topic, timeout=60.0, pred=lambda body: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub.poll(int((deadline - time.monotonic()) * 1000) + 1):
            t, body = sub.recv_multipart()
            body = json.loads(body)
            if t.decode() == topic and pred(body):
                return body
    raise AssertionError(f"no {topic} event within {timeout}s")


def read(watcher, name):
    with open(f"{CG}/{watcher}/{name}") as f:
        return f.read()


def flat(text):
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if len(line.split()) == 2)}


def check(name):
    def deco(fn):
        t0 = time.monotonic()
        try:
            fn()
            print(f"[cgroup-tests] PASS {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception as exc:  # report every check, not only the first failure
            failed.append(name)
            print(f"[cgroup-tests] FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        return fn
    return deco


@check("delegated: circusd moved itself to the supervisor leaf, controllers enabled")
def _():
    info = call("dstats")["info"]
    cg = info["cgroups"]
    assert cg["mode"] == "delegated", cg["mode"]
    with open(f"/proc/{info['pid']}/cgroup") as f:
        own = [l.split(":", 2)[2].strip() for l in f if l.startswith("0::")][0]
    assert own.endswith(".service/supervisor"), own
    assert {"cpu", "memory", "pids"} <= set(cg["v2_controllers"]), cg["v2_controllers"]
    assert cg["watchers"]["hog"]["limits"]["memory_max"] == "v2", cg["watchers"]["hog"]
    assert cg["watchers"]["busy"]["limits"]["cpu_max"] == "v2"
    assert read("hog", "memory.max").strip() == str(48 << 20)


@check("memory_max OOM-kills the hog, emits watcher.hog.oom, and the watcher respawns it")
def _():
    call("start", name="hog")
    oom = event("watcher.hog.oom")
    assert oom["oom_kill"] >= 1 and oom["limit"] == "memory_max", oom
    event("watcher.hog.spawn")  # the respawn after the kill
    assert flat(read("hog", "memory.events"))["oom_kill"] >= 1
    stats = call("stats", name="hog")["cgroup"]
    assert stats["oom_kill"] >= 1 and stats["backends"]["memory"] == "v2", stats
    call("stop", name="hog", waiting=True)


@check("pids_max caps a fork bomb and emits watcher.bomb.limit")
def _():
    call("start", name="bomb")
    out = f"{RUN}/bomb.out"
    deadline = time.monotonic() + 60
    while not os.path.exists(out):
        assert time.monotonic() < deadline, "the bomb never reported"
        time.sleep(0.1)
    made, err = map(int, open(out).read().split())
    assert (made, err) == (7, errno.EAGAIN), (made, err)
    lim = event("watcher.bomb.limit")
    assert lim["limit"] == "pids_max" and lim["count"] >= 1, lim
    assert int(read("bomb", "pids.current")) == 8
    call("stop", name="bomb", waiting=True)


def share(watcher, window):
    u0, t0 = flat(read(watcher, "cpu.stat"))["usage_usec"], time.monotonic()
    time.sleep(window)  # the measurement window
    u1, t1 = flat(read(watcher, "cpu.stat"))["usage_usec"], time.monotonic()
    return (u1 - u0) / 1e6 / (t1 - t0)


@check("cpu_max = 25% holds a busy loop to its share")
def _():
    assert read("busy", "cpu.max").split() == ["25000", "100000"]
    s = share("busy", 3.0)
    assert 0.12 <= s <= 0.38, f"busy got {s:.0%} of a CPU"
    assert flat(read("busy", "cpu.stat"))["nr_throttled"] > 0


@check("stats match the kernel files")
def _():
    before = flat(read("busy", "cpu.stat"))["usage_usec"]
    st = call("stats", name="busy")["cgroup"]
    after = flat(read("busy", "cpu.stat"))["usage_usec"]
    assert before <= st["cpu_usage_usec"] <= after, (before, st["cpu_usage_usec"], after)
    assert st["pids_current"] == int(read("busy", "pids.current"))
    mem = int(read("busy", "memory.current"))
    assert abs(st["memory_current"] - mem) <= max(mem // 5, 1 << 20), (st["memory_current"], mem)
    assert st["memory_peak"] >= st["memory_current"] or st["memory_peak"] is None
    assert st["cpu_pressure"] is not None and st["backends"] == {
        "cpu": "v2", "memory": "v2", "oom": "v2", "pids": "v2", "pressure": "v2"
    }, st["backends"]


@check("a live set of a limit takes effect")
def _():
    call("set", name="busy", options={"cpu_max": "50%"})
    assert read("busy", "cpu.max").split() == ["50000", "100000"]
    s = share("busy", 2.0)
    assert 0.35 <= s <= 0.65, f"busy got {s:.0%} of a CPU after set cpu_max 50%"
    call("set", name="hog", options={"memory_max": "64M", "pids_max": 20})
    assert read("hog", "memory.max").strip() == str(64 << 20)
    assert read("hog", "pids.max").strip() == "20"
    opts = call("get", name="hog", keys=["memory_max"])["options"]
    assert opts == {"memory_max": "64M"}, opts
    s = ctx.socket(zmq.DEALER)
    s.connect(f"ipc://{RUN}/ctl.sock")
    s.send(json.dumps({"id": "x", "command": "set", "properties": {"name": "hog", "options": {"memory_max": "lots"}}}).encode())
    assert s.poll(30000)
    bad = json.loads(s.recv())
    s.close()
    assert bad["status"] == "error" and "memory_max" in bad["reason"], bad


sub.close()
ctx.term()
sys.exit(1 if failed else 0)
EOF
rc=$?
systemctl stop "$UNIT"
left=$(find "$CG" -mindepth 1 -maxdepth 1 -type d ! -name supervisor 2>/dev/null)
if [ -n "$left" ]; then
    say "FAIL: watcher cgroups left after stop: $left"; rc=1
fi
[ $rc = 0 ] || journalctl -u "$UNIT" --no-pager -n 40 -o cat
say "done in $(( $(date +%s) - T0 )) s"
if [ $rc = 0 ]; then say "passed"; else say "failed"; fi
exit $rc
