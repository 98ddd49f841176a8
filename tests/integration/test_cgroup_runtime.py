"""circusd's per-watcher cgroups on this host, through a real circusd: placement, tree kill, limits, stats.

This host is hybrid (a cgroup2 mount without controllers plus v1 cpu/cpuacct/pids), so limits go through
the v1 fallbacks here; the full v2 controllers are exercised in the qemu lab (test_lab_cgroups.py).
"""

from __future__ import annotations

import errno
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import wait_for

from circus_linux.kernel import cgroup as kcg
from circus_linux.kernel.cgroup_parse import parse_flat_keyed, parse_proc_cgroup

PY = sys.executable

DOUBLE_FORK = """
import os, signal, sys, time
pidfile = sys.argv[1]
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        # The grandchild ignores SIGTERM and is re-parented away from the worker: only the cgroup reaches it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        while True:
            signal.pause()
    os._exit(0)
os.waitpid(pid, 0)
while True:
    signal.pause()
"""

FORKER = """
import errno, os, signal, sys
out = sys.argv[1]
made, err = 0, 0
for _ in range(20):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    made += 1
with open(out + ".tmp", "w") as f:
    f.write(f"{made} {err}")
os.rename(out + ".tmp", out)
while True:
    signal.pause()
"""

BUSY = "while True: pass"


@pytest.fixture(scope="module")
def host() -> kcg.CgroupHost:
    if os.geteuid() != 0:
        pytest.skip("cgroup tests need root")
    h = kcg.detect()
    if h.v2_mount is None:
        pytest.skip("no cgroup2 mount on this host")
    return h


def v2_dir(host: kcg.CgroupHost, root: str, watcher: str) -> Path:
    assert host.v2_mount is not None
    return Path(host.v2_mount) / root.strip("/") / watcher


def v1_dir(host: kcg.CgroupHost, ctrl: str, root: str, watcher: str) -> Path:
    h = host.v1.get(ctrl)
    if h is None:
        pytest.skip(f"no v1 {ctrl} hierarchy on this host")
    return Path(h.mountpoint) / root.strip("/") / watcher


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply.get("status") == "ok", reply
    return reply


def watcher_ini(name: str, cmd: str, args: str = "", **opts: Any) -> str:
    lines = [f"[watcher:{name}]", f"cmd = {cmd}"]
    if args:
        lines.append(f"args = {args}")
    lines += [f"{k} = {v}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


def test_workers_are_spawned_into_their_cgroup(circusd: Any, cgroup_root: str, host: kcg.CgroupHost) -> None:
    d = circusd(watcher_ini("web", "sleep 600", numprocesses=2) + watcher_ini("db", "sleep 600"))
    pids = wait_for(lambda: (p := d.pids("web")) and len(p) == 2 and p, what="two web workers")
    for name in ("web", "db"):
        assert v2_dir(host, cgroup_root, name).is_dir()
    assert sorted(
        kcg.parse_pids(v2_dir(host, cgroup_root, "web").joinpath("cgroup.procs").read_text())
    ) == sorted(pids)
    for pid in pids:
        member = parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
        # CLONE_INTO_CGROUP puts the child there at birth: no window in circusd's own cgroup.
        assert member.v2 == f"{cgroup_root}/web"
        if "pids" in host.v1:
            assert member.v1["pids"] == f"{cgroup_root}/web"


def test_stop_kills_a_double_forked_grandchild(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost, tmp_path: Path
) -> None:
    script = tmp_path / "dfork.py"
    script.write_text(DOUBLE_FORK)
    pidfile = tmp_path / "grandchild.pid"
    d = circusd(watcher_ini("web", PY, f"{script} {pidfile}", graceful_timeout=1))
    grandchild = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="grandchild pid"))
    fd = os.pidfd_open(grandchild)
    try:
        assert grandchild not in d.pids("web")
        ok(d.call("stop", name="web", waiting=True))
        # The reply came after the cgroup was seen empty (cgroup.events populated 0).
        events = parse_flat_keyed(v2_dir(host, cgroup_root, "web").joinpath("cgroup.events").read_text())
        assert events["populated"] == 0
        assert select.select([fd], [], [], 5.0)[0] == [fd], "grandchild survived the stop"
    finally:
        os.close(fd)


def test_stats_reports_cgroup_cpu_usage(circusd: Any) -> None:
    d = circusd(watcher_ini("busy", PY, f'-c "{BUSY}"'))
    wait_for(lambda: d.pids("busy"), what="busy worker")
    first = ok(d.call("stats", name="busy"))["cgroup"]
    assert first["backends"]["cpu"] in ("v2", "v1")
    wait_for(
        lambda: (
            ok(d.call("stats", name="busy"))["cgroup"]["cpu_usage_usec"] > first["cpu_usage_usec"] + 50_000
        ),
        what="cgroup cpu usage to grow",
    )
    again = ok(d.call("stats", name="busy"))["cgroup"]
    assert isinstance(again["cpu_percent"], float) and again["cpu_percent"] >= 0
    assert again["cpu_user_usec"] is not None
    everything = ok(d.call("stats"))
    assert set(everything["cgroups"]) == {"busy"} and set(everything["infos"]) == {"busy"}
    info = next(iter(everything["infos"]["busy"].values()))
    assert isinstance(info["rss"], int) and isinstance(info["mem_info1"], str)


def test_dstats_says_which_backend_serves_what(circusd: Any, host: kcg.CgroupHost) -> None:
    d = circusd(watcher_ini("web", "sleep 600", pids_max=50, cpu_weight=200))
    cg = ok(d.call("dstats"))["info"]["cgroups"]
    assert cg["mode"] == "explicit"
    web = cg["watchers"]["web"]
    assert set(web["limits"]) == {"pids_max", "cpu_weight"}
    assert set(web["limits"].values()) <= {"v1", "v2"}
    assert set(web["stats"]) >= {"cpu", "memory", "pids", "pressure"}


def test_v1_pids_max_from_the_ini_makes_fork_fail(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost, tmp_path: Path
) -> None:
    pids_dir = v1_dir(host, "pids", cgroup_root, "forker")
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    out = tmp_path / "forks"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        d = circusd(watcher_ini("forker", PY, f"{script} {out}", pids_max=5, autostart="false"))
        sub.connect(d.pubsub_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"watcher.forker.limit")
        assert pids_dir.joinpath("pids.max").read_text().strip() == "5"
        ok(d.call("start", name="forker", waiting=True))
        made, err = map(int, wait_for(lambda: out.exists() and out.read_text(), what="fork count").split())
        assert (made, err) == (4, errno.EAGAIN)  # the worker itself is the fifth task
        assert sub.poll(10_000), "no watcher.forker.limit event"
        topic, body = sub.recv_multipart()
        payload = json.loads(body)
        assert topic == b"watcher.forker.limit" and payload["limit"] == "pids_max" and payload["count"] >= 1
    finally:
        sub.close()
        ctx.term()


def test_v1_cpu_max_from_the_ini_holds_a_busy_worker(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    acct = v1_dir(host, "cpuacct", cgroup_root, "busy") / "cpuacct.usage"
    v1_dir(host, "cpu", cgroup_root, "busy")
    d = circusd(watcher_ini("busy", PY, f'-c "{BUSY}"', cpu_max="20%"))
    wait_for(lambda: d.pids("busy") and int(acct.read_text()) > 0, what="busy worker running")
    u0, t0 = int(acct.read_text()), time.monotonic()
    time.sleep(2.0)  # the measurement window itself, not a wait for an event
    u1, t1 = int(acct.read_text()), time.monotonic()
    share = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.10 <= share <= 0.30, f"busy worker got {share:.0%} of a CPU with cpu_max = 20%"


def test_set_changes_limits_live_and_rejects_bad_values(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    pids_max = v1_dir(host, "pids", cgroup_root, "web") / "pids.max"
    quota = v1_dir(host, "cpu", cgroup_root, "web") / "cpu.cfs_quota_us"
    d = circusd(watcher_ini("web", "sleep 600"))
    ok(d.call("set", name="web", options={"pids_max": "3", "cpu_max": "50%"}))
    assert pids_max.read_text().strip() == "3"
    assert quota.read_text().strip() == "50000"
    assert ok(d.call("get", name="web", keys=["pids_max", "cpu_max"]))["options"] == {
        "pids_max": "3",
        "cpu_max": "50%",
    }
    ok(d.call("set", name="web", options={"pids_max": 10}))  # Circus's circusctl sends typed values
    assert pids_max.read_text().strip() == "10"
    bad = d.call("set", name="web", options={"pids_max": "lots"})
    assert bad["status"] == "error" and bad["errno"] == 3 and "pids_max" in bad["reason"]
    bad = d.call("set", name="web", options={"memory_max": "12Q"})
    assert bad["status"] == "error" and "memory_max" in bad["reason"]
    assert pids_max.read_text().strip() == "10"  # a refused set changed nothing


def _alive(pidfd: int) -> bool:
    """The process behind pidfd has not exited (a pidfd polls readable once it has)."""
    return not select.select([pidfd], [], [], 0)[0]


def test_exit_of_one_circusd_spares_the_workers_of_another_sharing_its_cgroup_root(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    a = circusd(watcher_ini("alpha", "sleep 600"))
    b = circusd(watcher_ini("beta", "sleep 600"))
    alpha = wait_for(lambda: a.pids("alpha"), what="alpha's worker")[0]
    beta = wait_for(lambda: b.pids("beta"), what="beta's worker")[0]
    fds = [os.pidfd_open(alpha), os.pidfd_open(beta)]
    try:
        assert a.stop() == 0
        assert not _alive(fds[0]), "circusd A's own worker outlived it"
        assert _alive(fds[1]), "circusd A's exit killed circusd B's worker"
        assert v2_dir(host, cgroup_root, "beta").is_dir()
        # B can still spawn into its cgroup: the worker killed by hand comes back.
        os.kill(beta, 9)
        wait_for(lambda: (p := b.pids("beta")) and p != [beta], what="beta respawned")
        assert "spawn of wid" not in b.log_text()
    finally:
        for fd in fds:
            os.close(fd)


def _limit_file(host: kcg.CgroupHost, root: str, watcher: str, v2name: str, ctrl: str, v1name: str) -> Path:
    """The file that serves a limit here: the v2 one when its controller is enabled, else the v1 one."""
    v2 = v2_dir(host, root, watcher) / v2name
    return v2 if v2.exists() else v1_dir(host, ctrl, root, watcher) / v1name


def test_reloadconfig_applies_changed_cgroup_limits_and_lifts_removed_ones(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    d = circusd(watcher_ini("sl", "sleep 600", pids_max=5, cpu_max="50%"))
    pids = _limit_file(host, cgroup_root, "sl", "pids.max", "pids", "pids.max")
    cpu = _limit_file(host, cgroup_root, "sl", "cpu.max", "cpu", "cpu.cfs_quota_us")
    assert pids.read_text().split() == ["5"] and cpu.read_text().split()[0] == "50000"
    d.path.write_text(d.path.read_text().replace("pids_max = 5", "pids_max = 50").replace("50%", "20%"))
    assert ok(d.call("reloadconfig", waiting=True))["changed"] == ["sl"]
    assert pids.read_text().split() == ["50"] and cpu.read_text().split()[0] == "20000"
    d.path.write_text(d.path.read_text().replace("pids_max = 50\n", "").replace("cpu_max = 20%\n", ""))
    assert ok(d.call("reloadconfig", waiting=True))["changed"] == ["sl"]
    assert pids.read_text().split() == ["max"]
    assert cpu.read_text().split()[0] in ("max", "-1")


def _refuse_cpu_quota_above_10_percent(host: kcg.CgroupHost, root: str) -> None:
    """v1 cpu refuses a child quota above its parent's (EINVAL): a value only the kernel can refuse.

    Written to the private root circusd made for this test, which circusd removes when it exits."""
    h = host.v1.get("cpu")
    if h is None:
        pytest.skip("no v1 cpu hierarchy: no value the config accepts that the kernel refuses")
    Path(h.mountpoint, root.strip("/"), "cpu.cfs_quota_us").write_text("10000")


def test_add_whose_limit_the_kernel_refuses_leaves_no_cgroup_fd_or_watcher(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    d = circusd("")
    _refuse_cpu_quota_above_10_percent(host, cgroup_root)
    fds = ok(d.call("dstats"))["info"]["num_fds"]
    for i in range(3):
        bad = d.call("add", name=f"bad{i}", cmd="sleep 600", options={"cpu_max": "50%"}, start=True)
        assert bad["status"] == "error" and "cpu_max" in bad["reason"], bad
    info = ok(d.call("dstats"))["info"]
    assert info["num_fds"] <= fds + 1  # the dstats reply's own socket may come and go
    assert info["cgroups"]["watchers"] == {}
    assert ok(d.call("list"))["watchers"] == []
    mounts = [host.v2_mount, *(h.mountpoint for h in host.v1.values())]
    roots = [Path(m, cgroup_root.strip("/")) for m in mounts if m is not None]
    left = [p for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir() and p.name.startswith("bad")]
    assert left == []


def test_reloadconfig_whose_limit_the_kernel_refuses_changes_nothing(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    d = circusd(watcher_ini("keep", "sleep 600", pids_max=5) + watcher_ini("gone", "sleep 600"))
    _refuse_cpu_quota_above_10_percent(host, cgroup_root)
    gone = wait_for(lambda: d.pids("gone"), what="gone's worker")
    pids = _limit_file(host, cgroup_root, "keep", "pids.max", "pids", "pids.max")
    text = watcher_ini("keep", "sleep 600", pids_max=7) + watcher_ini("rb", "sleep 600", cpu_max="50%")
    d.path.write_text(d.path.read_text().split("[watcher:")[0] + text)
    bad = d.call("reloadconfig", waiting=True)
    assert bad["status"] == "error" and "watcher rb" in bad["reason"] and "nothing changed" in bad["reason"]
    assert pids.read_text().split() == ["5"], "a refused reload changed a running watcher's limit"
    assert d.pids("gone") == gone, "a refused reload removed a watcher"
    assert sorted(ok(d.call("list"))["watchers"]) == ["gone", "keep"]
    assert set(ok(d.call("dstats"))["info"]["cgroups"]["watchers"]) == {"gone", "keep"}
    assert not v2_dir(host, cgroup_root, "rb").exists()


def test_v1_pids_max_caps_the_workers_themselves_with_a_limit_event(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    if "pids" in host.v2_controllers:
        pytest.skip("the v2 pids controller serves pids_max here: the kernel refuses the clone itself")
    pids_dir = v1_dir(host, "pids", cgroup_root, "sl")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        d = circusd(watcher_ini("sl", "sleep 600", numprocesses=3, pids_max=2, autostart="false"))
        sub.connect(d.pubsub_endpoint)
        for topic in (b"watcher.sl.limit", b"watcher.sl.exec_error"):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        # A subscription takes effect asynchronously; the refused spawn is retried (backoff) until the
        # watcher gives up, so an exec_error and a limit event still come after it has.
        time_limit = time.monotonic() + 10
        got: dict[bytes, dict[str, Any]] = {}
        ok(d.call("start", name="sl"))
        while len(got) < 2 and time.monotonic() < time_limit:
            if sub.poll(100):
                topic, body = sub.recv_multipart()
                got.setdefault(topic, json.loads(body))
            assert int(pids_dir.joinpath("pids.current").read_text()) <= 2
        assert got[b"watcher.sl.exec_error"]["stage"] == "clone"
        assert got[b"watcher.sl.exec_error"]["errno"] == errno.EAGAIN
        limit = got[b"watcher.sl.limit"]
        assert limit["limit"] == "pids_max" and limit["source"] == "pids.current" and limit["total"] == 2
        assert len(d.pids("sl")) <= 2
    finally:
        sub.close()
        ctx.term()


def test_rm_nostop_then_add_of_the_same_name_does_not_adopt_the_old_workers(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    d = circusd("")
    ok(d.call("add", name="w", cmd="sleep 600", start=True, waiting=True))
    old = wait_for(lambda: d.pids("w"), what="the first w's worker")[0]
    fd = os.pidfd_open(old)
    try:
        ok(d.call("rm", name="w", nostop=True, waiting=True))
        assert ok(d.call("dstats"))["info"]["cgroups"]["watchers"] == {}, "dstats lists a removed watcher"
        ok(d.call("add", name="w", cmd="sleep 600", start=True, waiting=True))
        new = wait_for(lambda: d.pids("w"), what="the second w's worker")
        assert old not in new
        assert ok(d.call("stats", name="w"))["cgroup"]["pids_current"] == len(new)
        assert ok(d.call("dstats"))["info"]["cgroups"]["watchers"]["w"]["v2"] != str(
            v2_dir(host, cgroup_root, "w")
        )
        ok(d.call("stop", name="w", waiting=True))
        assert _alive(fd), "stopping the new watcher killed the workers rm --nostop left running"
        assert d.stop() == 0
        assert not _alive(fd), "a worker left by rm --nostop outlived circusd"
    finally:
        os.close(fd)


def test_set_of_a_limit_this_host_cannot_apply_is_refused_and_changes_nothing(
    circusd: Any, cgroup_root: str, host: kcg.CgroupHost
) -> None:
    d = circusd(watcher_ini("sl", "sleep 600", pids_max=5))
    if v2_dir(host, cgroup_root, "sl").joinpath("memory.max").exists():
        pytest.skip("the v2 memory controller serves memory_max here")
    pids = _limit_file(host, cgroup_root, "sl", "pids.max", "pids", "pids.max")
    bad = d.call("set", name="sl", options={"memory_max": "64M", "pids_max": "7"})
    assert bad["status"] == "error" and bad["errno"] == 5 and "memory_max" in bad["reason"], bad
    assert pids.read_text().split() == ["5"]
    assert ok(d.call("get", name="sl", keys=["pids_max"]))["options"] == {"pids_max": "5"}
    assert d.call("get", name="sl", keys=["memory_max"])["status"] == "error"  # never configured


def test_cgroup_root_off_warns_that_configured_limits_are_not_applied(circusd: Any) -> None:
    import subprocess

    from conftest import circusd_argv

    d = circusd(watcher_ini("sl", "sleep 600", pids_max=5, cpu_max="50%"), cgroup_root="off")
    wait_for(lambda: d.pids("sl"), what="sl's worker")
    wanted = "[watcher:sl] cpu_max, pids_max: not applied, [circus] cgroup_root = off"
    wait_for(lambda: wanted in d.log_text(), what="the start-up warning")
    check = subprocess.run(circusd_argv("--check", str(d.path)), capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and f"warning: {wanted}" in check.stderr, check.stderr


def test_cgroup_cpu_percent_is_never_negative_after_rm_and_add_of_the_same_name(circusd: Any) -> None:
    d = circusd("")
    ok(d.call("add", name="busy", cmd=PY, args=["-c", BUSY], start=True, waiting=True))
    first = ok(d.call("stats", name="busy"))["cgroup"]["cpu_usage_usec"]
    wait_for(
        lambda: ok(d.call("stats", name="busy"))["cgroup"]["cpu_usage_usec"] > first + 200_000,
        what="the busy watcher's cgroup to count CPU",
    )
    ok(d.call("rm", name="busy", waiting=True))
    ok(d.call("add", name="busy", cmd="sleep 600", start=True, waiting=True))
    pct = ok(d.call("stats", name="busy"))["cgroup"]["cpu_percent"]
    assert pct is None or pct >= 0, pct
