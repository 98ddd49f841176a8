"""The dashboard's HTTP side on a real circusd: page, JSON API, SSE, buttons through the control layer."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


def dashboard_token(daemon: Any) -> str:
    """The token circusd wrote beside its control socket (`circusctl dashboard-url` prints that file)."""
    path = Path(daemon.endpoint[len("ipc://") :] + ".dashboard")
    wait_for(path.exists, 10, what=f"{path}")
    return parse_qs(urlsplit(path.read_text().strip()).query)["token"][0]


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


def act(daemon: Any, port: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST /api/command with the token, as the page does once its cookie is set."""
    hdrs = {"Cookie": f"circus_token={dashboard_token(daemon)}", **(headers or {})}
    status, _, data = request(port, "POST", "/api/command", body, hdrs)
    return status, data


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
    status, body = act(daemon, port, {"command": "incr", "properties": {"name": "pool"}})
    assert status == 200, body
    assert json.loads(body)["numprocesses"] == 2
    assert daemon.call("numprocesses", name="pool")["numprocesses"] == 2
    wait_for(lambda: len(daemon.pids("pool")) == 2, 10, what="second worker")
    status, body = act(daemon, port, {"command": "decr", "properties": {"name": "pool"}})
    assert status == 200 and daemon.call("numprocesses", name="pool")["numprocesses"] == 1
    # Errors come back the way the control channel words them.
    status, body = act(daemon, port, {"command": "incr", "properties": {"name": "zz"}})
    assert status == 400 and "zz" in json.loads(body)["reason"]


def test_actions_are_limited_and_cross_site_requests_refused(web: tuple[Any, int]) -> None:
    daemon, port = web
    status, body = act(daemon, port, {"command": "quit", "properties": {}})
    assert status == 403 and b"not a dashboard action" in body
    incr = {"command": "incr", "properties": {"name": "pool"}}
    # A page of another site names itself in Origin (and Sec-Fetch-Site); a rebound DNS name shows in Host.
    assert act(daemon, port, incr, {"Origin": "http://evil.example"})[0] == 403
    assert act(daemon, port, incr, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert act(daemon, port, incr, {"Host": "evil.example:80"})[0] == 421
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


def test_httpd_bypass_auth_dashboard_actions_need_the_control_sockets_token(circusd: Any) -> None:
    """Regression (security review #2): the dashboard let any local user stop watchers the control
    socket's permissions kept them from. Every action now needs the token circusd writes beside the
    control socket with the socket's own owner/group/mode; pages and /metrics stay open."""
    daemon = circusd(WATCHER, httpd="true", httpd_port=0)
    port = httpd_port(daemon)
    token_file = Path(daemon.endpoint[len("ipc://") :] + ".dashboard")
    wait_for(token_file.exists, 10, what="token file")
    sock = Path(daemon.endpoint[len("ipc://") :])
    st, sst = token_file.stat(), sock.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (sst.st_uid, sst.st_gid, 0o600)
    stop = {"command": "stop", "properties": {"name": "pool", "waiting": True}}
    # No token, a wrong one (header, cookie, query): 403, logged, the watcher untouched.
    assert request(port, "POST", "/api/command", stop)[0] == 403
    assert request(port, "POST", "/api/command", stop, {"X-Circus-Token": "nope"})[0] == 403
    assert request(port, "POST", "/api/command", stop, {"Cookie": "circus_token=nope"})[0] == 403
    assert request(port, "POST", "/api/command?token=nope", stop)[0] == 403
    wait_for(lambda: "httpd: refused POST /api/command from 127.0.0.1" in daemon.log_text(), 10)
    assert daemon.call("status", name="pool")["status"] == "active"
    # Read-only pages and /metrics stay open.
    assert request(port, "GET", "/api/snapshot")[0] == 200
    assert request(port, "GET", "/metrics")[0] == 200
    # uid nobody can neither read the token nor act without it.
    nobody = pwd.getpwnam("nobody").pw_uid
    probe = (
        "import http.client, json, sys\n"
        "try:\n    open(sys.argv[2]).read(); print('read')\nexcept PermissionError:\n    print('denied')\n"
        "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=5)\n"
        "c.request('POST', '/api/command', json.dumps({'command': 'stop', 'properties': {'name': 'pool'}}),"
        " {'Content-Type': 'application/json'})\n"
        "print(c.getresponse().status)\n"
    )
    done = subprocess.run(
        ["setpriv", f"--reuid={nobody}", "--regid=nogroup", "--clear-groups", sys.executable, "-c", probe,
         str(port), str(token_file)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.split() == ["denied", "403"], done.stderr
    assert daemon.call("status", name="pool")["status"] == "active"
    # The URL `circusctl dashboard-url` prints sets an HttpOnly, SameSite=Strict cookie and drops the
    # token from the address bar; the cookie then acts.
    url = subprocess.run(
        [sys.executable, "-P", "-m", "circus_linux.cli.circusctl", "--endpoint", daemon.endpoint,
         "dashboard-url"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert url.returncode == 0, url.stderr
    parts = urlsplit(url.stdout.strip())
    assert parts.port == port and parts.path == "/"
    status, headers, _ = request(port, "GET", f"/?{parts.query}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, body = request(port, "POST", "/api/command", stop, {"Cookie": cookie.split(";")[0]})
    assert status == 200, body
    assert daemon.call("status", name="pool")["status"] == "stopped"
    # circusd's exit removes the file.
    daemon.stop()
    assert not token_file.exists()


def test_httpd_exposed_non_loopback_host_needs_insecure(tmp_path: Path) -> None:
    """Regression (security review #1): httpd_host = 0.0.0.0 started without CURVE or `insecure`."""
    ini = tmp_path / "c.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp_path}/c.sock\npubsub_endpoint = ipc://{tmp_path}/p.sock\n"
        f"stats_endpoint = ipc://{tmp_path}/s.sock\nhttpd = true\nhttpd_host = 0.0.0.0\n"
        "[watcher:a]\ncmd = sleep 1\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-m", "circus_linux", "--check", str(ini)],
        capture_output=True, text=True, timeout=30, env={**os.environ},
    )  # fmt: skip
    assert done.returncode != 0
    assert f"{ini}" in done.stderr + done.stdout and "httpd_host" in done.stderr + done.stdout
