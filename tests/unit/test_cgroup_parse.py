"""Pure tests of the cgroup file-format parsers and host detection from sample texts."""

from __future__ import annotations

import pytest

from circus_linux.kernel.cgroup import host_from_texts
from circus_linux.kernel.cgroup_parse import (
    cgroup_dir,
    cpu_weight_to_shares,
    format_cpu_max,
    parse_cpu_max,
    parse_flat_keyed,
    parse_max_value,
    parse_mountinfo,
    parse_pids,
    parse_pressure,
    parse_proc_cgroup,
    sanitize_name,
    ticks_to_usec,
)

PURE_V2_CGROUP = "0::/system.slice/circus.service\n"
PURE_V2_MOUNTINFO = (
    "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)

# This project's CI host: v1 controllers each on their own hierarchy, cgroup2 at unified.
HYBRID_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/process_api/ee18
2:cpuacct:/
1:cpu:/
0::/
"""
HYBRID_MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# A classic Debian 10 / systemd hybrid layout with co-mounted cpu,cpuacct, as seen by a service.
V1_ONLY_CGROUP = """12:pids:/system.slice/circus.service
5:cpu,cpuacct:/system.slice/circus.service
3:memory:/system.slice/circus.service
1:name=systemd:/system.slice/circus.service
"""
V1_ONLY_MOUNTINFO = """25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
35 25 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:19 - cgroup cgroup rw,pids
"""


def test_proc_cgroup_pure_v2() -> None:
    m = parse_proc_cgroup(PURE_V2_CGROUP)
    assert m.v2 == "/system.slice/circus.service"
    assert dict(m.v1) == {}


def test_proc_cgroup_hybrid_and_named_hierarchy() -> None:
    m = parse_proc_cgroup(HYBRID_CGROUP)
    assert m.v2 == "/"
    assert m.v1["memory"] == "/process_api/ee18"
    assert m.v1["name=systemd"] == "/"
    assert m.v1["cpu"] == "/"


def test_proc_cgroup_comounted_and_colon_in_path() -> None:
    m = parse_proc_cgroup("5:cpu,cpuacct:/a:b\n0::/x:y\n")
    assert m.v1 == {"cpu": "/a:b", "cpuacct": "/a:b"}
    assert m.v2 == "/x:y"


def test_mountinfo_pure_v2() -> None:
    mounts = parse_mountinfo(PURE_V2_MOUNTINFO)
    assert [(m.mountpoint, m.version) for m in mounts] == [("/sys/fs/cgroup", 2)]


def test_mountinfo_hybrid_controllers_filter_flags() -> None:
    mounts = {m.mountpoint: m for m in parse_mountinfo(HYBRID_MOUNTINFO)}
    assert mounts["/sys/fs/cgroup/unified"].version == 2
    assert mounts["/sys/fs/cgroup/cpu"].controllers == {"cpu"}
    assert mounts["/sys/fs/cgroup/systemd"].controllers == {"name=systemd"}  # 'xattr' is a flag
    assert "/sys/fs/cgroup" not in mounts  # tmpfs


def test_mountinfo_escapes_and_optional_fields_and_ro() -> None:
    text = "50 1 0:40 /sub /mnt/my\\040cg ro,relatime shared:1 master:2 - cgroup2 none ro\n"
    (m,) = parse_mountinfo(text)
    assert m.mountpoint == "/mnt/my cg"
    assert m.root == "/sub"
    assert m.read_only


def test_cgroup_dir_maps_through_mount_root() -> None:
    (m,) = parse_mountinfo("50 1 0:40 /payload /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup_dir(m, "/payload/a.service") == "/sys/fs/cgroup/a.service"
    assert cgroup_dir(m, "/payload") == "/sys/fs/cgroup"
    assert cgroup_dir(m, "/other") is None
    (r,) = parse_mountinfo(PURE_V2_MOUNTINFO)
    assert cgroup_dir(r, "/") == "/sys/fs/cgroup"


def test_host_pure_v2() -> None:
    _, _, host = host_from_texts(PURE_V2_CGROUP, PURE_V2_MOUNTINFO)
    assert host.v2_mount == "/sys/fs/cgroup"
    assert host.v2_dir == "/sys/fs/cgroup/system.slice/circus.service"
    assert not host.v1
    assert not host.hybrid


def test_host_hybrid() -> None:
    _, _, host = host_from_texts(HYBRID_CGROUP, HYBRID_MOUNTINFO)
    assert host.v2_mount == "/sys/fs/cgroup/unified"
    assert host.v2_dir == "/sys/fs/cgroup/unified"
    assert host.hybrid
    assert host.v1["pids"].own_dir == "/sys/fs/cgroup/pids"
    assert host.v1["memory"].own_dir == "/sys/fs/cgroup/memory/process_api/ee18"


def test_host_v1_only_comounted() -> None:
    _, _, host = host_from_texts(V1_ONLY_CGROUP, V1_ONLY_MOUNTINFO)
    assert host.v2_mount is None
    assert host.v2_dir is None
    assert host.v1["cpu"] == host.v1["cpuacct"]  # one co-mounted hierarchy
    assert host.v1["cpu"].own_dir == "/sys/fs/cgroup/cpu,cpuacct/system.slice/circus.service"


def test_flat_keyed() -> None:
    assert parse_flat_keyed("populated 1\nfrozen 0\n") == {"populated": 1, "frozen": 0}
    cpu = "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 0\n"
    assert parse_flat_keyed(cpu)["user_usec"] == 6
    ev = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"
    assert parse_flat_keyed(ev)["oom_kill"] == 1


def test_max_values_and_cpu_max() -> None:
    assert parse_max_value("max\n") is None
    assert parse_max_value("1048576\n") == 1048576
    assert parse_cpu_max("max 100000\n") == (None, 100000)
    assert parse_cpu_max("20000 100000\n") == (20000, 100000)
    assert format_cpu_max(None, 100000) == "max 100000"
    assert format_cpu_max(5000, 10000) == "5000 10000"


def test_pressure_some_and_full() -> None:
    p = parse_pressure(
        "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
    )
    assert p.some.avg10 == 1.5
    assert p.some.total_usec == 12345
    assert p.full is not None and p.full.total_usec == 7


def test_pressure_without_full_line() -> None:
    p = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert p.full is None
    with pytest.raises(ValueError):
        parse_pressure("")


def test_pids_and_conversions() -> None:
    assert parse_pids("12\n345\n") == [12, 345]
    assert parse_pids("") == []
    assert cpu_weight_to_shares(100) == 1024
    assert cpu_weight_to_shares(1) == 10
    assert cpu_weight_to_shares(10000) == 102400
    assert cpu_weight_to_shares(0) == 2
    assert ticks_to_usec(250, 100) == 2_500_000


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web", "web"),
        ("my_app-2", "my_app-2"),
        ("web.1", "web%2e1"),
        ("../etc", "%2e%2e%2fetc"),
        ("cpu.max", "cpu%2emax"),
        ("supervisor", "%supervisor"),
        ("", "%"),
        ("é", "%c3%a9"),
    ],
)
def test_sanitize_name(name: str, expected: str) -> None:
    assert sanitize_name(name) == expected


def test_sanitize_name_long_is_bounded_and_distinct() -> None:
    a, b = sanitize_name("x" * 300 + "a"), sanitize_name("x" * 300 + "b")
    assert len(a) <= 255 and len(b) <= 255
    assert a != b


def test_reload_limits_lift_a_limit_the_new_section_no_longer_has() -> None:
    from circus_linux.kernel.cgroup_limits import CgroupLimits

    old = CgroupLimits(pids_max=5, cpu_max=(50_000, 100_000), cpu_weight=200, memory_max=1 << 20)
    new = CgroupLimits(pids_max=50)
    assert new.over(old) == CgroupLimits(
        pids_max=50, cpu_max=(None, 100_000), cpu_weight=100, memory_max="max"
    )
    assert old.over(new) == old  # the undo writes the old ones back
    assert CgroupLimits().over(CgroupLimits()) == CgroupLimits()
