"""Pure parts of the cgroup-fed plugins: ResourceWatcher looks and rules, the Autoscaler pressure input."""

from __future__ import annotations

from typing import Any

import pytest

from circus_linux.cli import circustop
from circus_linux.plugins.autoscaler import Policy, Reading, cpu_pressure
from circus_linux.plugins.resource_watcher import (
    CpuMark,
    Look,
    MemLimit,
    ResourceWatcher,
    Sample,
    look_from_reply,
)

GIB = 1024**3


def _reply(
    usage: int | None, memory: int | None = None, procs: int = 1, psi: float | None = None
) -> dict[str, Any]:
    info = {str(10 + i): {"pid": 10 + i, "cpu": 5.0, "mem": 1.0, "rss": 1000} for i in range(procs)}
    pressure = None if psi is None else {"some": {"avg10": psi, "avg60": 0.0, "avg300": 0.0, "total_usec": 1}}
    cgroup = {"cpu_usage_usec": usage, "memory_current": memory, "cpu_pressure": pressure}
    return {"status": "ok", "name": "w", "info": info, "cgroup": cgroup}


def test_cgroup_cpu_is_the_usage_delta_over_the_time_between_looks() -> None:
    first, mark = look_from_reply(_reply(1_000_000), None, 100.0, 4 * GIB)
    assert first.cpu == () and first.cpu_source == "cgroup" and mark == CpuMark(100.0, 1_000_000)
    # 1.5 CPU-seconds in 2 s: 75 % of one CPU, for the watcher as a whole
    second, mark2 = look_from_reply(_reply(2_500_000), mark, 102.0, 4 * GIB)
    assert second.cpu == (75.0,) and mark2 == CpuMark(102.0, 2_500_000)
    # a counter that went back is a new cgroup: a new baseline, no figure
    third, _ = look_from_reply(_reply(10), mark2, 104.0, 4 * GIB)
    assert third.cpu == ()


def test_memory_falls_back_to_circus_per_process_figures_without_memory_current() -> None:
    look, _ = look_from_reply(_reply(5, memory=None, procs=2), None, 1.0, 4 * GIB)
    assert look.mem_source == "process" and look.mem == (1.0, 1.0) and look.mem_bytes == (1000.0, 1000.0)
    look, _ = look_from_reply(_reply(5, memory=GIB, procs=2), None, 1.0, 4 * GIB)
    assert look.mem_source == "cgroup" and look.mem == (25.0,) and look.mem_bytes == (GIB,)
    # no cgroup at all (circusd without cgroups), or cgroup = false: Circus's per-process cpu
    look, mark = look_from_reply({"info": _reply(5)["info"], "cgroup": None}, None, 1.0, GIB)
    assert look.cpu_source == "process" and look.cpu == (5.0,) and mark is None
    look, mark = look_from_reply(_reply(5), None, 1.0, GIB, use_cgroup=False)
    assert look.cpu_source == "process" and mark is None
    # watcher_totals: one sample, the sums
    look, _ = look_from_reply(_reply(None, procs=3), None, 1.0, GIB, totals=True)
    assert look.cpu == (15.0,) and look.mem_bytes == (3000.0,) and len(look.health) == 3


def test_rules_on_a_cgroup_look() -> None:
    rw = ResourceWatcher(watcher="w", max_cpu="30", min_cpu="1", max_mem="1G", health_threshold="75")
    try:
        health = (Sample(cpu=99.0, mem=0.1, rss=1),)
        busy = Look((80.0,), (0.5,), (2.0 * GIB,), health, "cgroup", "cgroup")
        v = rw.verdicts(busy)
        assert v["max_cpu"] and v["max_mem"] and not v["min_cpu"]
        assert not v["health"]  # Circus's score per worker: (99 + 0.1) / 2 < 75
        idle = Look((0.0,), (0.1,), (1e6,), (Sample(0.0, 0.1, 1),), "cgroup", "process")
        v = rw.verdicts(idle)
        assert not v["max_cpu"] and v["min_cpu"] and not v["max_mem"]
        # the first cgroup look (no CPU baseline yet) breaks no CPU rule
        pending = Look((), (0.1,), (1e6,), (Sample(0.0, 0.1, 1),), "cgroup", "process")
        v = rw.verdicts(pending)
        assert not v["max_cpu"] and not v["min_cpu"]
        assert rw.verdicts(Look((), (), (), ())) == {}
        sick = Look((1.0,), (1.0,), (1.0,), (Sample(cpu=100.0, mem=60.0, rss=1),))
        assert rw.verdicts(sick)["health"]
    finally:
        rw.context.term()


def test_autoscaler_cpu_pressure_decisions() -> None:
    pol = Policy(min_workers=1, max_workers=4, max_cpu_pressure=40)
    assert pol.pressure_low == 20  # the default low-water mark: half the high one
    up = pol.decide(Reading(2, None, None, 55.0))
    assert up.delta == 1 and "cpu_pressure=55% > 40%" in up.reason
    assert pol.decide(Reading(4, None, None, 90.0)).delta == 0  # at max_workers
    assert pol.decide(Reading(2, None, None, 30.0)).delta == 0  # between the marks: steady
    down = pol.decide(Reading(2, None, None, 5.0))
    assert down.delta == -1 and "cpu_pressure=5.0 <= 20" in down.reason
    assert pol.decide(Reading(1, None, None, 0.0)).delta == 0  # at min_workers
    assert pol.decide(Reading(2, None, None, None)).delta == 0  # not measured: no guess
    both = Policy(
        min_workers=1, max_workers=4, queue_high=1, queue_low=0, max_cpu_pressure=40, min_cpu_pressure=10
    )
    assert both.decide(Reading(2, 0, None, 30.0)).delta == 0  # an empty queue alone is not idle
    assert both.decide(Reading(2, 0, None, 10.0)).delta == -1
    assert both.decide(Reading(2, 10, None, 0.0)).delta == 1  # a full queue is enough to scale up


def test_cpu_pressure_is_read_from_the_stats_reply() -> None:
    assert cpu_pressure(_reply(1, psi=12.5)) == 12.5
    assert cpu_pressure(_reply(1)) is None
    assert cpu_pressure({"status": "ok", "info": {}}) is None
    assert cpu_pressure({"cgroup": None}) is None


@pytest.mark.parametrize("source", ["stream", "polling"])
def test_circustop_shows_restarts(source: str) -> None:
    model = circustop.Model()
    circustop.apply_stats(model, {"web": {"11": {"pid": 11, "wid": 1, "cpu": 1.0, "mem": 1.0, "rss": 1}}})
    w = model.watcher("web")
    w.status, w.numprocesses = "active", 1
    if source == "stream":
        circustop.apply_stream(model, "stat.web", {"restarts": 7, "cgroup": None}, 0.0)
    else:
        circustop.apply_restarts(model, {"web": 7, "gone": 3})
    header, row = (
        next(line for line in circustop.render(model, "cpu", "x") if line.startswith(p))
        for p in ("WATCHER", "web")
    )
    column = header.index("RESTARTS")
    assert row[column : column + 8].strip() == "7"


def test_resource_watcher_keeps_circus_defaults_and_comparisons() -> None:
    """No max_cpu/max_mem by default (Circus: 90 and 90 %), min_cpu compared with `<` (Circus: `<=`), and a
    health score per worker (Circus: the highest CPU and the highest mem % of any workers)."""
    rw = ResourceWatcher(watcher="w", min_cpu="0")
    off = ResourceWatcher(watcher="w", max_cpu="0", max_mem="0", health_threshold="0")
    try:
        assert rw.max_cpu == 90.0 and rw.max_mem == MemLimit(90.0, True)
        assert rw.verdicts([Sample(cpu=99.0, mem=1.0, rss=1)])["max_cpu"]
        assert rw.verdicts([Sample(cpu=1.0, mem=95.0, rss=1)])["max_mem"]
        assert rw.verdicts([Sample(cpu=0.0, mem=1.0, rss=1)])["min_cpu"]  # 0 <= 0
        # Health: worker A's CPU and worker B's memory make the score together, (80 + 80) / 2 > 75.
        assert rw.verdicts([Sample(cpu=80.0, mem=1.0, rss=1), Sample(cpu=1.0, mem=80.0, rss=1)])["health"]
        # The defaults are Circus's per-worker limits: a busy pool of 4 (a cgroup total of 200 %, every
        # worker at 50 %) is not restarted by them...
        pool = tuple(Sample(cpu=50.0, mem=1.0, rss=1) for _ in range(4))
        assert not rw.verdicts(Look((200.0,), (4.0,), (4.0,), pool, "cgroup", "cgroup"))["max_cpu"]
        # ...while a max_cpu written in the section is the whole watcher's.
        explicit = ResourceWatcher(watcher="w", max_cpu="90")
        try:
            assert explicit.verdicts(Look((200.0,), (4.0,), (4.0,), pool, "cgroup", "cgroup"))["max_cpu"]
        finally:
            explicit.context.term()
        assert not any(off.verdicts([Sample(cpu=100.0, mem=100.0, rss=1)]).values())  # 0 turns them off
    finally:
        rw.context.term()
        off.context.term()
