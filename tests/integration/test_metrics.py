"""/metrics: Prometheus text that a real Prometheus parser reads, with numbers that match `stats`."""

from __future__ import annotations

import http.client
import math
import re
from typing import Any

import pytest
from conftest import wait_for

from circus_linux.web import metrics
from circus_linux.web.snapshot import Histogram, ProcSample, Snapshot, SocketSample, WatcherSample

parser = pytest.importorskip("prometheus_client.parser", reason="needs prometheus_client")

WATCHERS = """
[watcher:pool]
cmd = sleep 600
numprocesses = 2

[watcher:idle]
cmd = sleep 600
numprocesses = 0
"""


def scrape(port: int) -> tuple[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_render_escapes_and_parses() -> None:
    hist = Histogram()
    for v in (0.0004, 0.003, 0.003, 2.0):
        hist.observe(v)
    snap = Snapshot(
        1.0,
        (WatcherSample('we"ird\\name\n', "active", 3, (ProcSample(10, 1, 12.5, 0.1, 4096, 3.0),), 4, 1, 0),),
        (SocketSample("web", 5, 128, "127.0.0.1:80"),),
    )
    text = metrics.render(snap, {"w": hist})
    got = samples(text)
    name = 'we"ird\\name\n'
    assert got[("circus_watcher_restarts_total", (("watcher", name),))] == 4
    assert got[("circus_watcher_oom_kills_total", (("watcher", name),))] == 1
    assert got[("circus_process_cpu_percent", (("watcher", name), ("wid", "1")))] == 12.5
    assert got[("circus_socket_queued_connections", (("socket", "web"),))] == 5
    buckets = {dict(k[1])["le"]: v for k, v in got.items() if k[0] == "circus_spawn_duration_seconds_bucket"}
    assert buckets["0.0005"] == 1 and buckets["0.005"] == 3 and buckets["1.0"] == 3 and buckets["+Inf"] == 4
    assert got[("circus_spawn_duration_seconds_count", (("watcher", "w"),))] == 4
    assert math.isclose(got[("circus_spawn_duration_seconds_sum", (("watcher", "w"),))], 2.0064)


def test_scrape_matches_stats(circusd: Any) -> None:
    daemon = circusd(WATCHERS, httpd="true", httpd_port=0)
    port = int(
        wait_for(lambda: re.search(r"dashboard on http://[^:]+:(\d+)/", daemon.log_text()), 10).group(1)
    )
    wait_for(lambda: len(daemon.pids("pool")) == 2, 10, what="two pool workers")
    ctype, text = scrape(port)
    assert ctype.startswith("text/plain; version=0.0.4")
    got = samples(text)
    stats = daemon.call("stats", name="pool")["info"]
    assert got[("circus_watcher_processes", (("watcher", "pool"),))] == 2
    assert got[("circus_watcher_processes", (("watcher", "idle"),))] == 0
    assert got[("circus_watcher_desired_processes", (("watcher", "pool"),))] == 2
    assert got[("circus_watcher_active", (("watcher", "pool"),))] == 1
    assert got[("circus_watcher_restarts_total", (("watcher", "pool"),))] == 0
    for pid, info in stats.items():
        labels = (("watcher", "pool"), ("wid", str(info["wid"])))
        assert got[("circus_process_pid", labels)] == int(pid)
        # rss moves by a page or two between two reads of /proc; age by the time between them.
        assert abs(got[("circus_process_memory_rss_bytes", labels)] - info["rss"]) <= 64 * 1024
        assert abs(got[("circus_process_age_seconds", labels)] - info["age"]) < 5
    total_rss = sum(i["rss"] for i in stats.values())
    assert abs(got[("circus_watcher_memory_rss_bytes", (("watcher", "pool"),))] - total_rss) <= 128 * 1024
    # Each spawn went through the histogram (spawn_ms in the spawn event).
    assert got[("circus_spawn_duration_seconds_count", (("watcher", "pool"),))] == 2
    assert got[("circus_spawn_duration_seconds_bucket", (("le", "+Inf"), ("watcher", "pool")))] == 2
    # A worker dying unasked is respawned, and that restart is counted.
    assert daemon.call("signal", name="pool", pid=int(next(iter(stats))), signum=9)["status"] == "ok"
    wait_for(
        lambda: samples(scrape(port)[1])[("circus_watcher_restarts_total", (("watcher", "pool"),))] >= 1,
        10,
        what="restart counted",
    )


def test_metrics_drop_series_and_output_tails_of_removed_watchers(circusd: Any) -> None:
    daemon = circusd(WATCHERS, httpd="true", httpd_port=0)
    port = int(
        wait_for(lambda: re.search(r"dashboard on http://[^:]+:(\d+)/", daemon.log_text()), 10).group(1)
    )
    for i in range(3):
        ok = daemon.call("add", name=f"gone-{i}", cmd="sleep 600", start=True, waiting=True)
        assert ok["status"] == "ok", ok
    wait_for(lambda: "gone-2" in scrape(port)[1], 10, what="the added watchers' series")
    for i in range(3):
        assert daemon.call("rm", name=f"gone-{i}", waiting=True)["status"] == "ok"
    text = scrape(port)[1]
    assert "gone-" not in text, [line for line in text.splitlines() if "gone-" in line][:5]
    assert ("circus_spawn_duration_seconds_count", (("watcher", "pool"),)) in samples(text)
