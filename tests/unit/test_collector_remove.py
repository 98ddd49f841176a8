"""Pure tests of the dashboard collector's event bookkeeping."""

from __future__ import annotations

from circus_linux.web.collector import Collector


def test_metrics_drop_series_and_output_tails_of_removed_watchers() -> None:
    col = Collector(arbiter=None)
    col.listen("watcher.a.b.spawn", {"spawn_ms": 1.5})
    col.listen("watcher.a.b.stdout", {"data": "hello\n", "pid": 7})
    col.listen("watcher.keep.spawn", {"spawn_ms": 1.0})
    assert set(col.spawn) == {"a.b", "keep"} and set(col.tails) == {"a.b"}
    col.listen("watcher.a.b.remove", {"name": "a.b"})
    assert set(col.spawn) == {"keep"} and col.tails == {}
