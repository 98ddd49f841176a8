"""Pure parsers and formatters for cgroup kernel file formats; no I/O, no policy.

Formats are those of the kernel's Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/*.rst:
/proc/<pid>/cgroup, /proc/<pid>/mountinfo (proc(5)), flat-keyed files (cgroup.events, cpu.stat,
memory.events, pids.events, cpuacct.stat), single values with "max", cpu.max and PSI files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: v1 controllers the kernel knows; anything else in a v1 mount's super options is a mount flag.
KNOWN_V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    }
)

#: "max" is how v2 (and v1 pids.max) spell "no limit".
Max = Literal["max"]


@dataclass(frozen=True)
class Membership:
    """Where a process sits: its v2 path and its path in each v1 hierarchy, keyed by controller.

    Named v1 hierarchies (``name=systemd``) are keyed by their ``name=...`` token.
    """

    v2: str | None
    v1: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup filesystem mount from mountinfo."""

    mountpoint: str
    root: str  # the hierarchy path that is the root of this mount (not "/" for bind mounts)
    version: Literal[1, 2]
    controllers: frozenset[str]  # v1 only: controllers (and name=...) attached; empty for v2
    read_only: bool


@dataclass(frozen=True)
class PressureLine:
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


@dataclass(frozen=True)
class Pressure:
    """One PSI file (cpu.pressure, memory.pressure, io.pressure)."""

    some: PressureLine
    full: PressureLine | None  # cpu.pressure has no "full" line before 5.13


def parse_proc_cgroup(text: str) -> Membership:
    """Parse /proc/<pid>/cgroup: ``hierarchy-id:controller-list:path`` per line (cgroups(7))."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        # The path may itself contain ':' so split at most twice.
        hid, ctrls, path = line.split(":", 2)
        if hid == "0" and ctrls == "":
            v2 = path
            continue
        for ctrl in ctrls.split(","):
            if ctrl:
                v1[ctrl] = path
    return Membership(v2=v2, v1=v1)


def _unescape_mountinfo(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """Return the cgroup and cgroup2 mounts listed in a mountinfo text, in file order."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")  # optional fields come before the lone "-" separator
        if len(fields) < sep + 4 or sep < 6:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root = _unescape_mountinfo(fields[3])
        mountpoint = _unescape_mountinfo(fields[4])
        mount_opts = fields[5].split(",")
        super_opts = fields[sep + 3].split(",")
        read_only = "ro" in mount_opts or "ro" in super_opts
        if fstype == "cgroup2":
            mounts.append(CgroupMount(mountpoint, root, 2, frozenset(), read_only))
        else:
            ctrls = frozenset(o for o in super_opts if o in KNOWN_V1_CONTROLLERS or o.startswith("name="))
            mounts.append(CgroupMount(mountpoint, root, 1, ctrls, read_only))
    return mounts


def cgroup_dir(mount: CgroupMount, path: str) -> str | None:
    """Filesystem directory of hierarchy ``path`` through ``mount``; None if the mount cannot reach it."""
    root = mount.root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    rel = path[len(root) :].strip("/")
    return mount.mountpoint.rstrip("/") + ("/" + rel if rel else "") or "/"


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse ``key value`` lines (cgroup.events, cpu.stat, memory.events, pids.events, cpuacct.stat)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_max_value(text: str) -> int | None:
    """Parse a single value file that may say "max" (memory.max, pids.max ...); "max" -> None."""
    s = text.strip()
    return None if s == "max" else int(s)


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """Parse cpu.max ``$MAX $PERIOD``; a quota of "max" -> None."""
    quota, period = text.split()
    return (None if quota == "max" else int(quota), int(period))


def format_cpu_max(quota_us: int | None, period_us: int) -> str:
    return f"{'max' if quota_us is None else quota_us} {period_us}"


def parse_pressure(text: str) -> Pressure:
    """Parse a PSI file: ``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` and optionally ``full ...``."""
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        lines[parts[0]] = PressureLine(
            float(kv["avg10"]), float(kv["avg60"]), float(kv["avg300"]), int(kv["total"])
        )
    if "some" not in lines:
        raise ValueError(f"no 'some' line in pressure text {text!r}")
    return Pressure(lines["some"], lines.get("full"))


def parse_pids(text: str) -> list[int]:
    """Parse cgroup.procs / tasks: one pid per line."""
    return [int(s) for s in text.split()]


# cpu.weight (v2, 1..10000, default 100) <-> cpu.shares (v1, 2..262144, default 1024): the same linear
# mapping systemd uses, so a v2 default of 100 lands on the v1 default of 1024.
CPU_WEIGHT_DEFAULT = 100
CPU_SHARES_DEFAULT = 1024
CPU_SHARES_MIN = 2
CPU_SHARES_MAX = 262144


def cpu_weight_to_shares(weight: int) -> int:
    shares = weight * CPU_SHARES_DEFAULT // CPU_WEIGHT_DEFAULT
    return max(CPU_SHARES_MIN, min(CPU_SHARES_MAX, shares))


def ticks_to_usec(ticks: int, clk_tck: int) -> int:
    """cpuacct.stat counts USER_HZ ticks; convert to microseconds."""
    return ticks * 1_000_000 // clk_tck


_SAFE = re.compile(r"[A-Za-z0-9_-]")
#: Names the tree itself uses inside the watchers' directory.
RESERVED_NAMES = frozenset({"supervisor"})
_NAME_MAX = 255


def sanitize_name(name: str) -> str:
    """Map a watcher name to a cgroup directory name, injectively.

    Letters, digits, '_' and '-' pass; every other UTF-8 byte becomes ``%XX``, so '.' (every cgroup
    interface file has one) and '/' can never reach the path. A reserved name gets a '%' prefix, which the
    escaping never produces before a non-hex pair. Over-long names are cut and suffixed with a hash.
    """
    out = "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02x}" for b in ch.encode("utf-8")) for ch in name
    )
    if not out or out in RESERVED_NAMES:
        out = "%" + out
    if len(out) > _NAME_MAX:
        import hashlib  # over-long names only: OpenSSL's libcrypto is ~1 MiB of RSS for a circusd

        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
        out = out[: _NAME_MAX - 17] + "~" + digest
    return out
