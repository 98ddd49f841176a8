"""Probes of the fault/load tests: a persistent control connection, an event subscriber, /proc readers."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy, against a deadline; fail the test otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class Wire:
    """One DEALER kept open for a whole test (a socket per call would churn circusd's fds under load)."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def call(self, command: str, timeout: float = 10.0, **props: Any) -> dict[str, Any]:
        ident = uuid.uuid4().hex
        self.sock.send(json.dumps({"id": ident, "command": command, "properties": props}).encode())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise TimeoutError(f"no reply to {command} within {timeout}s")
            reply: dict[str, Any] = json.loads(self.sock.recv())
            if reply.get("id") == ident:  # skip late replies to earlier timed-out calls
                return reply

    def pids(self, name: str) -> list[int]:
        reply = self.call("list", name=name)
        assert reply["status"] == "ok", reply
        return [int(p) for p in reply["pids"]]

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class Events:
    """A SUB on circusd's pubsub endpoint collecting (topic, payload) pairs."""

    def __init__(self, endpoint: str, topic: str = "") -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoint)
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        while self.sock.poll(0):
            frames = self.sock.recv_multipart()
            self.seen.append((frames[0].decode(), json.loads(frames[1])))
        return self.seen

    def wait(self, suffix: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event whose topic ends with `suffix`, seen so far or arriving before the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            for topic, payload in self.drain():
                if topic.endswith(suffix):
                    return payload
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no event *{suffix} within {timeout}s; saw {[t for t, _ in self.seen][-20:]}")
            self.sock.poll(int(left * 1000) + 1)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def proc_children(pid: int) -> list[int]:
    """Direct children of pid, every thread's list (a child belongs to the thread that forked it)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            kids.extend(int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            continue
    return kids


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat (after the parenthesised comm), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def zombie_children(pid: int) -> list[int]:
    return [c for c in proc_children(pid) if proc_state(c) == "Z"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    out: list[str] = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out
