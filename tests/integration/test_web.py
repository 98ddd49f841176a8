"""The dashboard's HTTP side on a real circusd: page, JSON API, SSE, buttons through the control layer."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

import pytest
from conftest import wait_for

WATCHER = """
[watcher:pool]
cmd = sleep 600
numprocesses = 1
"""


def httpd_port(daemon: Any) -> int:
    """circusd logs the port it bound (httpd_port = 0 lets the kernel pick a free one)."""
    found = wait_for(
        lambda: re.search(r"dashboard on http://[^:]+:(\d+)/", daemon.log_text()),
        10,
        what="httpd port in log",
    )
    return int(found.group(1))


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def web(circusd: Any) -> tuple[Any, int]:
    daemon = circusd(WATCHER, httpd="true", httpd_port=0)
    return daemon, httpd_port(daemon)


def test_page_and_assets_are_served(web: tuple[Any, int]) -> None:
    _, port = web
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/static/app.js" in body
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, _ = request(port, "GET", f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind)
    assert request(port, "GET", "/static/../app.py")[0] == 404
    assert request(port, "GET", "/nope")[0] == 404


def test_snapshot_matches_the_control_channel(web: tuple[Any, int]) -> None:
    daemon, port = web
    pids = wait_for(lambda: daemon.pids("pool"), 10, what="pool worker")

    def pool_sample() -> Any:
        status, _, body = request(port, "GET", "/api/snapshot")
        assert status == 200
        data = json.loads(body)
        (pool,) = [w for w in data["snapshot"]["watchers"] if w["name"] == "pool"]
        return (data, pool) if pool["status"] == "active" and pool["procs"] else None

    data, pool = wait_for(pool_sample, 10, what="a sample with the pool active")  # sampled once a second
    assert pool["numprocesses"] == 1
    assert [p["pid"] for p in pool["procs"]] == pids
    assert pool["restarts"] == 0
    assert data["history"], "history holds at least the first sample"


def test_incr_button_goes_through_the_control_layer(web: tuple[Any, int]) -> None:
    daemon, port = web
    status, _, body = request(
        port, "POST", "/api/command", {"command": "incr", "properties": {"name": "pool"}}
    )
    assert status == 200, body
    assert json.loads(body)["numprocesses"] == 2
    assert daemon.call("numprocesses", name="pool")["numprocesses"] == 2
    wait_for(lambda: len(daemon.pids("pool")) == 2, 10, what="second worker")
    status, _, body = request(
        port, "POST", "/api/command", {"command": "decr", "properties": {"name": "pool"}}
    )
    assert status == 200 and daemon.call("numprocesses", name="pool")["numprocesses"] == 1
    # Errors come back the way the control channel words them.
    status, _, body = request(port, "POST", "/api/command", {"command": "incr", "properties": {"name": "zz"}})
    assert status == 400 and "zz" in json.loads(body)["reason"]


def test_actions_are_limited_and_cross_site_requests_refused(web: tuple[Any, int]) -> None:
    daemon, port = web
    status, _, body = request(port, "POST", "/api/command", {"command": "quit", "properties": {}})
    assert status == 403 and b"not a dashboard action" in body
    incr = {"command": "incr", "properties": {"name": "pool"}}
    # A page of another site names itself in Origin; a rebound DNS name shows in Host.
    assert request(port, "POST", "/api/command", incr, {"Origin": "http://evil.example"})[0] == 403
    assert request(port, "POST", "/api/command", incr, {"Host": "evil.example:80"})[0] == 421
    # A plain HTML form cannot send JSON: text/plain is refused.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/command", body=json.dumps(incr), headers={"Content-Type": "text/plain"})
    assert conn.getresponse().status == 415
    conn.close()
    assert daemon.call("numprocesses", name="pool")["numprocesses"] == 1
    assert daemon.proc.poll() is None


def test_server_sent_events_deliver_samples(web: tuple[Any, int]) -> None:
    _, port = web
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/events")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        event = None
        for _ in range(200):  # bounded: a sample arrives about once a second
            line = resp.readline().decode()
            if line.startswith("event: "):
                event = line[len("event: ") :].strip()
            if event == "sample" and line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                assert "pool" in data["point"]["watchers"]
                break
        else:
            pytest.fail("no sample event on /api/events")
    finally:
        conn.close()


def test_logs_say_nothing_captured_when_no_output(web: tuple[Any, int]) -> None:
    _, port = web
    status, _, body = request(port, "GET", "/api/logs?name=pool")
    assert status == 200
    data = json.loads(body)
    assert data["name"] == "pool" and isinstance(data["lines"], list)


def test_httpd_off_by_default(circusd: Any) -> None:
    daemon = circusd(WATCHER)
    assert "dashboard on" not in daemon.log_text()


def test_output_tail_shows_captured_lines(circusd: Any, tmp_path: Any) -> None:
    daemon = circusd(
        f"""
[watcher:talk]
cmd = sh -c 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.2; done'
numprocesses = 1
stdout_stream.class = FileStream
stdout_stream.filename = {tmp_path}/talk.log
""",
        httpd="true",
        httpd_port=0,
    )
    port = httpd_port(daemon)

    def tail() -> Any:
        status, _, body = request(port, "GET", "/api/logs?name=talk")
        assert status == 200
        data = json.loads(body)
        return (
            data if data["captured"] and any(x["line"].startswith("line ") for x in data["lines"]) else None
        )

    data = wait_for(tail, 10, interval=0.1, what="captured output in /api/logs")
    assert all(x["watcher"] == "talk" for x in data["lines"])
