"""The ROUTER server over real ipc:// sockets, against a fake arbiter (protocol and dispatch only)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from conftest import wait_for
from integration.control_fakes import ControlThread, running_control

from circus_linux.control.client import CallError, Client

FRAME_LIMIT = 1 << 20


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def recv_json(sock: zmq.Socket, timeout: float = 10.0) -> dict[str, Any]:
    assert sock.poll(int(timeout * 1000)), "no reply"
    reply: dict[str, Any] = json.loads(sock.recv_multipart()[-1])
    return reply


@pytest.fixture
def ctl(tmp_path: Path):
    with running_control(tmp_path, {"web": 2, "db": 1}) as control:
        yield control


@pytest.fixture
def client(ctl: ControlThread):
    with Client(ctl.endpoint, timeout=10) as c:
        yield c


def test_reply_shapes_of_the_read_commands(client: Client, ctl: ControlThread) -> None:
    assert client.call("list")["watchers"] == ["web", "db"]
    pids = client.call("list", name="web")["pids"]
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    assert client.call("numwatchers")["numwatchers"] == 2
    assert client.call("numprocesses")["numprocesses"] == 3
    assert client.call("numprocesses", name="db")["numprocesses"] == 1
    assert client.call("status")["statuses"] == {"web": "active", "db": "active"}
    assert client.call("status", name="web")["status"] == "active"  # Circus: the status key carries it
    assert client.call("options", name="web")["options"]["flapping.max_retry"] == "3"
    assert client.call("get", name="web", keys=["numprocesses"])["options"] == {"numprocesses": 2}
    assert client.call("listsockets")["sockets"] == [
        {"fd": 7, "name": "web", "backlog": 2048, "host": "127.0.0.1", "port": 8080}
    ]
    assert client.call("globaloptions", option="endpoint")["options"] == {"endpoint": "ipc://x"}
    reply = client.call("list")
    assert set(reply) == {"status", "time", "id", "watchers"} and reply["status"] == "ok"


def test_stats_shapes_with_real_processes(client: Client) -> None:
    pids = client.call("list", name="web")["pids"]
    infos = client.call("stats")["infos"]
    assert set(infos) == {"web", "db"} and set(infos["web"]) == {str(p) for p in pids}
    reply = client.call("stats", name="web")
    assert reply["name"] == "web"
    info = reply["info"][str(pids[0])]
    for key in ("pid", "cpu", "mem", "mem_info1", "mem_info2", "ctime", "username", "nice", "create_time",
                "cmdline", "children", "age", "started", "wid"):  # fmt: skip
        assert key in info, key
    assert info["pid"] == pids[0] and info["cmdline"] == "sleep 600" and info["wid"] in (1, 2)
    one = client.call("stats", name="web", process=pids[1])
    assert one["process"] == pids[1] and one["info"]["pid"] == pids[1]
    dstats = client.call("dstats")["info"]
    assert dstats["pid"] == os.getpid() and dstats["num_children"] == 3


def test_errors_carry_circus_errnos(client: Client) -> None:
    def err(command: str, **props: Any) -> dict[str, Any]:
        with pytest.raises(CallError) as info:
            client.call(command, **props)
        assert info.value.reply is not None
        return info.value.reply

    assert err("nope")["errno"] == 2
    missing = err("incr", name="missing")
    assert missing["errno"] == 3 and missing["reason"] == "program missing not found"
    assert err("get", name="web", keys=["nokey"])["errno"] == 3
    assert err("stats", name="web", process=1)["errno"] == 3
    assert err("incr", name="web", nb="lots")["errno"] == 3
    assert err("start", name="zz*")["errno"] == 3
    assert err("add", name="web", cmd="true")["errno"] == 5  # already exists


def test_incr_decr_set_scale_live(client: Client, ctl: ControlThread) -> None:
    assert client.call("incr", name="web", nb=3, waiting=True)["numprocesses"] == 5
    assert len(client.call("list", name="web")["pids"]) == 5
    assert client.call("decr", name="web", waiting=True)["numprocesses"] == 4
    client.call("set", name="web", options={"numprocesses": "1"}, waiting=True)  # text, as old scripts send
    assert len(client.call("list", name="web")["pids"]) == 1
    # without waiting the reply carries the count asked for, the work follows
    assert client.call("incr", name="web")["numprocesses"] == 2
    wait_for(lambda: len(client.call("list", name="web")["pids"]) == 2, what="incr without waiting")


def test_without_waiting_the_reply_comes_before_the_action(client: Client, ctl: ControlThread) -> None:
    web = ctl.arbiter.watchers["web"]
    ctl.call_soon(web.gate.clear)
    started = time.monotonic()
    assert client.call("stop", name="web")["status"] == "ok"
    assert time.monotonic() - started < 5
    assert client.call("status", name="web")["status"] == "stopping"
    ctl.call_soon(web.gate.set)
    wait_for(lambda: client.call("status", name="web")["status"] == "stopped", what="stop to finish")


def test_with_waiting_the_reply_comes_after_the_action(client: Client, ctl: ControlThread) -> None:
    reply = client.call("stop", name="w*", waiting=True)
    assert reply["info"] == {"web": "stopped"}
    assert client.call("list", name="web")["pids"] == []
    reply = client.call("start", waiting=True)
    assert reply["info"] == {"web": "active", "db": "active"}


def test_two_slow_commands_on_two_watchers_while_200_lists_are_answered(ctl: ControlThread) -> None:
    web, db = ctl.arbiter.watchers["web"], ctl.arbiter.watchers["db"]
    for w in (web, db):
        ctl.call_soon(w.gate.clear)
        ctl.call_soon(w.entered.clear)
    results: dict[str, dict[str, Any]] = {}

    def slow(name: str) -> None:
        with Client(ctl.endpoint, timeout=30) as c:
            results[name] = c.request("restart", name=name, waiting=True)

    threads = [threading.Thread(target=slow, args=(n,)) for n in ("web", "db")]
    for t in threads:
        t.start()
    # both restarts are inside their watcher at the same time: no global lock
    wait_for(
        lambda: ctl.call_soon(lambda: web.entered.is_set() and db.entered.is_set()), what="both in flight"
    )
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, ctl.endpoint)
        for i in range(200):  # pipelined: all sent before any reply is read
            sock.send(json.dumps({"id": f"l{i}", "command": "list", "properties": {}}).encode())
        ids = set()
        for _ in range(200):
            reply = recv_json(sock)
            assert reply["status"] == "ok" and reply["watchers"] == ["web", "db"]
            ids.add(reply["id"])
        assert ids == {f"l{i}" for i in range(200)}
        sock.close()
    finally:
        ctx.destroy(linger=0)
    assert not results  # the slow ones are still waiting on their gates
    for w in (web, db):
        ctl.call_soon(w.gate.set)
    for t in threads:
        t.join(30)
    assert results["web"]["status"] == "ok" and results["db"]["status"] == "ok"
    assert results["web"]["info"] == {"web": "active"}


def test_commands_on_one_watcher_queue_in_order(ctl: ControlThread) -> None:
    web = ctl.arbiter.watchers["web"]
    ctl.call_soon(web.gate.clear)
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, ctl.endpoint)
        sock.send(
            json.dumps(
                {"id": "s", "command": "stop", "properties": {"name": "web", "waiting": True}}
            ).encode()
        )
        sock.send(
            json.dumps(
                {"id": "i", "command": "incr", "properties": {"name": "web", "waiting": True}}
            ).encode()
        )
        assert not sock.poll(200)  # both queue behind the gate, neither fails with "already running"
        ctl.call_soon(web.gate.set)
        replies = [recv_json(sock), recv_json(sock)]
        assert [r["id"] for r in replies] == ["s", "i"] and all(r["status"] == "ok" for r in replies)
        sock.close()
    finally:
        ctx.destroy(linger=0)


def test_oversized_and_garbage_frames_never_stop_the_server(ctl: ControlThread) -> None:
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, ctl.endpoint)
        sock.send(b"x" * (FRAME_LIMIT + 1))
        reply = recv_json(sock)
        assert (reply["status"], reply["errno"], reply["id"]) == ("error", 3, None)
        for junk in (b"", b"\x00\xff", b"{}", b'{"command": "list", "properties": 5}', b"[]" * 1000):
            sock.send(junk)
            reply = recv_json(sock)
            assert reply["status"] == "error" and reply["errno"] in (1, 2, 3), (junk, reply)
        # multipart garbage: extra frames, empty frames; the last frame is taken as the body
        sock.send_multipart([b"", b"junk", b"\x00"])
        assert recv_json(sock)["errno"] == 1
        sock.send_multipart([b"a", b"b", json.dumps({"id": "m", "command": "numwatchers"}).encode()])
        assert recv_json(sock)["numwatchers"] == 2
        # a REQ peer (empty delimiter frame) gets its reply through the same envelope
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(ctl.endpoint)
        req.send(json.dumps({"id": "r", "command": "list"}).encode())
        assert req.poll(10000) and json.loads(req.recv())["id"] == "r"
        req.close()
        sock.send(json.dumps({"id": "alive", "command": "list"}).encode())
        assert recv_json(sock)["id"] == "alive"
        sock.close()
    finally:
        ctx.destroy(linger=0)


def test_cast_gets_no_reply_but_runs(ctl: ControlThread, client: Client) -> None:
    client.cast("incr", name="db", nb=1)
    wait_for(lambda: ctl.arbiter.watchers["db"].numprocesses == 2, what="cast incr")
    client.cast("nope")  # an error to a cast is not answered either
    assert client.call("list")["status"] == "ok"


def test_handler_failures_become_error_replies(ctl: ControlThread, client: Client) -> None:
    web = ctl.arbiter.watchers["web"]

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("kaput")

    def oserror(*a: Any, **k: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    ctl.call_soon(setattr, web, "options", boom)
    with pytest.raises(CallError) as info:
        client.call("options", name="web")
    assert info.value.errno == 5 and "kaput" in str(info.value)
    ctl.call_soon(setattr, web, "options", oserror)
    with pytest.raises(CallError) as info:
        client.call("options", name="web")
    assert info.value.errno == 4
    assert client.call("list")["status"] == "ok"


def test_signal_and_kill_reach_the_runtime(ctl: ControlThread, client: Client) -> None:
    web = ctl.arbiter.watchers["web"]
    pid = client.call("list", name="web")["pids"][0]
    client.call("signal", name="web", signum="hup", pid=str(pid), children=True)
    client.call("kill", name="web", signum="TERM", graceful_timeout=2, waiting=True)
    assert web.signals == [(signal.SIGHUP, pid, True, False)]
    assert web.kills == [(None, signal.SIGTERM, 2)]
    with pytest.raises(CallError) as info:
        client.call("signal", name="web", signum=15, pid=1)
    assert info.value.errno == 3


def test_add_rm_reloadconfig_quit(ctl: ControlThread, client: Client) -> None:
    client.call("add", name="new", cmd="sleep 600", options={"numprocesses": 2}, start=True, waiting=True)
    assert len(client.call("list", name="new")["pids"]) == 2
    client.call("rm", name="new", waiting=True)
    assert "new" not in client.call("list")["watchers"]
    client.call("reloadconfig", waiting=True)
    assert ctl.arbiter.reloaded == 1
    assert client.call("quit")["status"] == "ok"
    wait_for(lambda: ctl.call_soon(ctl.arbiter.quitting.is_set), what="quit after the reply")


def test_one_client_cannot_queue_without_bound(tmp_path: Path) -> None:
    with running_control(tmp_path, {"web": 1}, max_inflight=1, max_pending=4) as ctl:
        web = ctl.arbiter.watchers["web"]
        ctl.call_soon(web.gate.clear)
        ctx = zmq.Context()
        try:
            sock = dealer(ctx, ctl.endpoint)
            for i in range(10):
                msg = {"id": str(i), "command": "stop", "properties": {"name": "web", "waiting": True}}
                sock.send(json.dumps(msg).encode())
            rejected = [recv_json(sock) for _ in range(6)]
            assert all(r["errno"] == 5 and "too many" in r["reason"] for r in rejected)
            with Client(ctl.endpoint, timeout=10) as other:  # another client is not affected
                assert other.call("list")["status"] == "ok"
            ctl.call_soon(web.gate.set)
            assert all(recv_json(sock)["status"] == "ok" for _ in range(4))
            sock.close()
        finally:
            ctx.destroy(linger=0)


def test_ipc_endpoint_is_private(ctl: ControlThread) -> None:
    assert os.stat(ctl.endpoint[len("ipc://") :]).st_mode & 0o777 == 0o600


def test_events_reach_subscribers(ctl: ControlThread, client: Client) -> None:
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"watcher.db.")
        sub.connect(ctl.pubsub)
        marker = uuid.uuid4().hex

        def got_one() -> list[bytes] | None:
            # PUB drops events until the subscription has propagated: keep emitting until one arrives
            ctl.call_soon(ctl.publisher.emit, "watcher.db.probe", {"m": marker})
            return sub.recv_multipart() if sub.poll(50) else None

        topic, body = wait_for(got_one, what="subscription")
        assert topic == b"watcher.db.probe" and json.loads(body)["m"] == marker and "time" in json.loads(body)
        while sub.poll(100):
            sub.recv_multipart()
        client.call("incr", name="db", waiting=True)
        topic, body = sub.recv_multipart()
        assert topic == b"watcher.db.spawn" and json.loads(body)["process_pid"] > 0
        sub.close()
    finally:
        ctx.destroy(linger=0)


def test_publisher_never_raises() -> None:
    from circus_linux.control.publisher import Publisher

    pub = Publisher("inproc://nobody")
    pub.emit("watcher.x.spawn", {"process_pid": 1})  # not started: dropped and counted
    assert pub.dropped == 1
    pub.start()
    pub.emit("watcher.x.spawn", {"process_pid": 1, "bad": object()})  # str() fallback
    assert pub.sent == 1
    pub.close()


def test_commands_without_waiting_cannot_pile_up_without_bound(tmp_path: Path) -> None:
    # Each command sent without `waiting` runs as a task after its reply; past max_background of them
    # (10,000 by default), new ones are refused with an error reply instead of growing circusd's memory.
    with running_control(tmp_path, {"web": 1}, max_background=3) as ctl:
        web = ctl.arbiter.watchers["web"]
        ctl.call_soon(web.gate.clear)
        with Client(ctl.endpoint, timeout=10) as client:
            for _ in range(3):
                assert client.call("stop", name="web")["status"] == "ok"  # queued behind the gate
            with pytest.raises(CallError, match="too many commands in progress") as refused:
                client.call("stop", name="web")
            assert refused.value.errno == 5
            assert client.call("list")["status"] == "ok"  # a command that needs no task still runs
            ctl.call_soon(web.gate.set)
            wait_for(lambda: not ctl.call_soon(lambda: len(ctl.server._background)), what="the queue drained")
            assert client.call("stop", name="web")["status"] == "ok"
