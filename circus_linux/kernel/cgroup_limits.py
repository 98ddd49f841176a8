"""Write watcher limits to cgroup v2 files (v1 cpu/pids fallbacks) and sample cgroup stats; no policy.

Never touches the v1 memory hierarchy: memory limits and stats are v2-only (see circus_linux.kernel.cgroup).
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from circus_linux.kernel.cgroup_io import CgroupError, read_file, write_file
from circus_linux.kernel.cgroup_parse import (
    Max,
    Pressure,
    cpu_weight_to_shares,
    format_cpu_max,
    parse_flat_keyed,
    parse_pressure,
    ticks_to_usec,
)


class Backend(enum.StrEnum):
    """Which cgroup interface serves a limit or a stat."""

    V2 = "v2"
    V1 = "v1"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class CgroupLimits:
    """Limits for one watcher; None leaves the kernel's value alone, "max" removes a limit."""

    memory_max: int | Max | None = None  # bytes
    memory_high: int | Max | None = None
    memory_swap_max: int | Max | None = None
    cpu_max: tuple[int | None, int] | None = None  # (quota_us or None for no quota, period_us)
    cpu_weight: int | None = None  # 1..10000, v2 default 100
    io_weight: int | None = None  # 1..10000, v2 default 100
    pids_max: int | Max | None = None

    @classmethod
    def of(cls, lim: Any) -> CgroupLimits:
        """The same limits from any object with these attribute names (config's per-watcher limits)."""
        return cls(**{f.name: getattr(lim, f.name) for f in fields(cls)})

    def over(self, old: CgroupLimits) -> CgroupLimits:
        """What to write to replace ``old`` with these limits: a limit ``old`` set and these leave
        unset goes back to the kernel's default for a new cgroup (cgroup-v2.rst: "max", weight 100)."""
        lifted = {f.name: _DEFAULTS[f.name] for f in fields(self) if getattr(self, f.name) is None
                  and getattr(old, f.name) is not None}
        return replace(self, **lifted)


# A new cgroup's value of each limit (cpu.max "max 100000": no quota, the default period).
_DEFAULTS: dict[str, Any] = {
    "memory_max": "max",
    "memory_high": "max",
    "memory_swap_max": "max",
    "cpu_max": (None, 100_000),
    "cpu_weight": 100,
    "io_weight": 100,
    "pids_max": "max",
}


@dataclass(frozen=True)
class CgroupStats:
    """One sample of a watcher's cgroup counters; None where no backend serves the field."""

    cpu_usage_usec: int | None = None
    cpu_user_usec: int | None = None
    cpu_system_usec: int | None = None
    cpu_nr_throttled: int | None = None
    memory_current: int | None = None
    memory_peak: int | None = None
    pids_current: int | None = None
    oom: int | None = None
    oom_kill: int | None = None
    pids_max_events: int | None = None
    cpu_pressure: Pressure | None = None
    memory_pressure: Pressure | None = None
    io_pressure: Pressure | None = None
    # Source of each group of fields: "cpu" (cpu_*), "memory" (memory_*), "oom" (oom, oom_kill),
    # "pids" (pids_*), "pressure" (*_pressure).
    backends: Mapping[str, Backend] = field(default_factory=dict)


def _set(limit: str, path: str, value: str) -> None:
    try:
        write_file(path, value)
    except OSError as e:
        raise CgroupError(f"cannot set {limit}={value!r}", path, e.errno) from e


def apply_limits(
    v2_dir: str | None, v2_controllers: frozenset[str], v1_paths: Mapping[str, str], limits: CgroupLimits
) -> dict[str, Backend]:
    """Write every limit that is not None; return which backend took each one.

    v2 files when the controller is enabled for this cgroup; else the v1 equivalent when one exists
    (cpu.cfs_quota_us/cfs_period_us, cpu.shares = weight*1024/100 clamped to 2..262144, pids.max);
    else ``Backend.UNSUPPORTED`` (no exception: the caller reports it). A write the kernel refuses
    raises CgroupError.
    """
    report: dict[str, Backend] = {}
    for limit, backend, writes in plan_limits(v2_dir, v2_controllers, v1_paths, limits):
        for path, value in writes:
            _set(limit, path, value)
        report[limit] = backend
    return report


def plan_limits(
    v2_dir: str | None, v2_controllers: frozenset[str], v1_paths: Mapping[str, str], limits: CgroupLimits
) -> list[tuple[str, Backend, list[tuple[str, str]]]]:
    """What apply_limits would write, without writing: (limit, backend, [(file, value), ...]) per limit
    that is not None, in order; an UNSUPPORTED limit has no writes. Only looks at which files exist."""
    plan: list[tuple[str, Backend, list[tuple[str, str]]]] = []
    v2c = v2_controllers
    p2 = v2_dir

    def v2file(name: str) -> str | None:
        if p2 is None:
            return None
        f = os.path.join(p2, name)
        return f if os.path.exists(f) else None

    def v1file(ctrl: str, name: str) -> str | None:
        d = v1_paths.get(ctrl)
        if d is None:
            return None
        f = os.path.join(d, name)
        return f if os.path.exists(f) else None

    def first(limit: str, *choices: tuple[str | None, str, Backend]) -> None:
        """The first file that exists (v2 before v1) takes the limit."""
        for path, value, backend in choices:
            if path is not None:
                plan.append((limit, backend, [(path, value)]))
                return
        plan.append((limit, Backend.UNSUPPORTED, []))

    for lim, fname in (
        ("memory_max", "memory.max"),
        ("memory_high", "memory.high"),
        ("memory_swap_max", "memory.swap.max"),
    ):
        val = getattr(limits, lim)
        if val is None:
            continue
        # never v1 memory: see the module docstring
        first(lim, (v2file(fname) if "memory" in v2c else None, str(val), Backend.V2))

    if limits.cpu_max is not None:
        quota, period = limits.cpu_max
        f = v2file("cpu.max") if "cpu" in v2c else None
        qf, pf = v1file("cpu", "cpu.cfs_quota_us"), v1file("cpu", "cpu.cfs_period_us")
        if f is not None:
            plan.append(("cpu_max", Backend.V2, [(f, format_cpu_max(quota, period))]))
        elif qf is not None and pf is not None:
            # Lift the quota first: a period shorter than the current quota would be refused.
            v1q = "-1" if quota is None else str(quota)
            plan.append(("cpu_max", Backend.V1, [(qf, "-1"), (pf, str(period)), (qf, v1q)]))
        else:
            plan.append(("cpu_max", Backend.UNSUPPORTED, []))

    if limits.cpu_weight is not None:
        first(
            "cpu_weight",
            (v2file("cpu.weight") if "cpu" in v2c else None, str(limits.cpu_weight), Backend.V2),
            (v1file("cpu", "cpu.shares"), str(cpu_weight_to_shares(limits.cpu_weight)), Backend.V1),
        )

    if limits.io_weight is not None:
        # v1 blkio.weight only works with CFQ/BFQ and is not in DEFAULT_V1: v2 only.
        io_file = v2file("io.weight") if "io" in v2c else None
        first("io_weight", (io_file, f"default {limits.io_weight}", Backend.V2))

    if limits.pids_max is not None:
        first(
            "pids_max",
            (v2file("pids.max") if "pids" in v2c else None, str(limits.pids_max), Backend.V2),
            (v1file("pids", "pids.max"), str(limits.pids_max), Backend.V1),
        )
    return plan


# -- stats-----------------------------------------------------------------------------------
def read_stats(v2_dir: str | None, v1_paths: Mapping[str, str]) -> CgroupStats:
    """Sample the counters; each field says its source in ``backends``."""
    vals: dict[str, object] = {}
    backends: dict[str, Backend] = {}

    def rd(d: str | None, name: str) -> str | None:
        if d is None:
            return None
        try:
            return read_file(os.path.join(d, name))
        except FileNotFoundError:
            return None

    p2 = v2_dir
    cpuacct = v1_paths.get("cpuacct")
    # cpu.stat exists in every v2 cgroup, with or without the cpu controller.
    cpu = rd(p2, "cpu.stat")
    if cpu is not None:
        kv = parse_flat_keyed(cpu)
        vals.update(
            cpu_usage_usec=kv.get("usage_usec"),
            cpu_user_usec=kv.get("user_usec"),
            cpu_system_usec=kv.get("system_usec"),
            cpu_nr_throttled=kv.get("nr_throttled"),
        )
        backends["cpu"] = Backend.V2
    elif (usage := rd(cpuacct, "cpuacct.usage")) is not None:
        kv = parse_flat_keyed(rd(cpuacct, "cpuacct.stat") or "")
        tck = os.sysconf("SC_CLK_TCK")
        vals.update(
            cpu_usage_usec=int(usage) // 1000,  # ns
            cpu_user_usec=ticks_to_usec(kv["user"], tck) if "user" in kv else None,
            cpu_system_usec=ticks_to_usec(kv["system"], tck) if "system" in kv else None,
        )
        backends["cpu"] = Backend.V1
    else:
        backends["cpu"] = Backend.UNSUPPORTED
    if "cpu_nr_throttled" not in vals or vals["cpu_nr_throttled"] is None:
        # v1 cpu.stat has the CFS throttling counters when only the v1 cpu hierarchy enforces quota.
        v1cpu = rd(v1_paths.get("cpu"), "cpu.stat")
        if v1cpu is not None:
            vals["cpu_nr_throttled"] = parse_flat_keyed(v1cpu).get("nr_throttled")

    mem = rd(p2, "memory.current")
    if mem is not None:
        vals["memory_current"] = int(mem)
        peak = rd(p2, "memory.peak")  # kernel >= 5.19
        vals["memory_peak"] = int(peak) if peak is not None else None
        backends["memory"] = Backend.V2
    else:
        backends["memory"] = Backend.UNSUPPORTED
    mev = rd(p2, "memory.events")
    if mev is not None:
        kv = parse_flat_keyed(mev)
        vals.update(oom=kv.get("oom"), oom_kill=kv.get("oom_kill"))
        backends["oom"] = Backend.V2
    else:
        backends["oom"] = Backend.UNSUPPORTED

    for src, d in ((Backend.V2, p2), (Backend.V1, v1_paths.get("pids"))):
        cur = rd(d, "pids.current")
        if cur is not None:
            vals["pids_current"] = int(cur)
            ev = rd(d, "pids.events")
            vals["pids_max_events"] = parse_flat_keyed(ev).get("max") if ev else None
            backends["pids"] = src
            break
    else:
        backends["pids"] = Backend.UNSUPPORTED

    psi_ok = False
    for res in ("cpu", "memory", "io"):
        try:
            txt = rd(p2, f"{res}.pressure")
        except OSError as e:
            # Reading a PSI file fails with EOPNOTSUPP when psi=0 is on the kernel command line.
            if e.errno != errno.EOPNOTSUPP:
                raise
            continue
        if txt is not None:
            vals[f"{res}_pressure"] = parse_pressure(txt)
            psi_ok = True
    backends["pressure"] = Backend.V2 if psi_ok else Backend.UNSUPPORTED
    return CgroupStats(**vals, backends=backends)  # type: ignore[arg-type]
