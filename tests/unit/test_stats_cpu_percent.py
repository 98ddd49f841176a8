"""Pure tests of the cgroup CPU % the stats collector reports between two samples."""

from __future__ import annotations

from circus_linux.runtime.stats import cpu_percent_since


def test_cgroup_cpu_percent_is_never_negative_after_rm_and_add_of_the_same_name() -> None:
    old, new = object(), object()  # the removed watcher's cgroup handle, and its successor's
    assert cpu_percent_since((old, 10.0, 5_000_000), new, 11.0, 10_000) is None  # another cgroup
    assert cpu_percent_since((new, 10.0, 5_000_000), new, 11.0, 10_000) is None  # counter went back
    assert cpu_percent_since((new, 10.0, 0), new, 11.0, 500_000) == 50.0
    assert cpu_percent_since(None, new, 11.0, 500_000) is None  # the first sample
    assert cpu_percent_since((new, 11.0, 0), new, 11.0, 500_000) is None  # no time has passed
