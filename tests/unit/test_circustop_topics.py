"""Pure tests of how circus-top files stats-stream messages into its model."""

from __future__ import annotations

from circus_linux.cli import circustop


def test_circustop_tells_a_dotted_watcher_aggregate_from_a_process_stat() -> None:
    model = circustop.Model()
    proc = {"pid": 24382, "name": "worker", "cpu": 1.0, "rss": 1000}
    circustop.apply_stream(model, "stat.worker.24382", proc, 0.0)
    # `worker.1`'s aggregate: its topic ends in digits, but its pid is a list.
    circustop.apply_stream(model, "stat.worker.1", {"name": "worker.1", "pid": [555], "restarts": 4}, 0.0)
    circustop.apply_stream(model, "stat.worker.1.555", {"pid": 555, "name": "worker.1", "cpu": 2.0}, 0.0)
    assert sorted(model.watchers["worker"].procs) == [24382]
    assert sorted(model.watchers["worker.1"].procs) == [555]
    assert model.watchers["worker.1"].restarts == 4
