"""Test helper: a SUB socket on circusd's event stream that keeps every event in order."""

from __future__ import annotations

import json
import time
from typing import Any

import zmq


class EventTap:
    def __init__(self, endpoint: str, prefix: bytes = b"watcher.") -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sub.connect(endpoint)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def pump(self, timeout: float = 0.0) -> None:
        if not self.sub.poll(int(timeout * 1000)):
            return
        while True:
            try:
                topic, body = self.sub.recv_multipart(zmq.NOBLOCK)[:2]
            except zmq.Again:
                return
            self.events.append((topic.decode(), json.loads(body)))

    def wait(self, predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.events)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; events: {self.topics()}")
            self.pump(min(left, 0.2))

    def topics(self, prefix: str = "") -> list[str]:
        return [t for t, _ in self.events if t.startswith(prefix)]

    def prime(self, daemon: Any, watcher: str = "primer", timeout: float = 10.0) -> None:
        """Wait until our subscription reached circusd's PUB (the zmq slow joiner): poke an idle watcher
        until its start event arrives. `watcher` must exist with autostart = false."""
        deadline = time.monotonic() + timeout
        topic = f"watcher.{watcher}.start"
        while topic not in self.topics():
            assert time.monotonic() < deadline, "event stream never reached the test"
            daemon.call("start", name=watcher)
            self.pump(0.2)
            if topic not in self.topics():
                daemon.call("stop", name=watcher)
        self.events.clear()

    def close(self) -> None:
        self.sub.close()
        self.ctx.term()


PRIMER = """
[watcher:primer]
cmd = sleep 600
autostart = false
"""
