"""WatchDog: kill workers that stop sending UDP heartbeats (`<pid>;<timestamp>`); wire only.

Options (Circus's): loop_rate (60 s between checks), watchers_regex (`.*`: every watcher; matched with
re.match, so anchored at the start of the name), msg_regex (`^(?P<pid>.*);(?P<timestamp>.*)$`), ip
(127.0.0.1), port (1664), max_count (3 missed periods before the kill), watchers_stop_signal and
watchers_graceful_timeout (unset: the watcher's own stop_signal and graceful_timeout apply; `stop_signal`
and `graceful_timeout` are accepted as older names). The kill goes through circusd's `kill` command, so
the watcher respawns the worker as for any other exit. Unlike Circus, plugin watchers (`plugin:*`) are
never watched: they send no heartbeats, and Circus's `.*` would have the watchdog kill itself.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from circus_linux.plugins.base import CircusPlugin, Frame, option

log = logging.getLogger("circus_linux.plugins.watchdog")


@dataclass
class Monitored:
    watcher: str
    last_activity: float
    missed: int = 0


def parse_signal(value: Any) -> int:
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    return int(getattr(signal, text if text.startswith("SIG") else "SIG" + text))


class WatchDog(CircusPlugin):
    name = "watchdog"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loop_rate = option(self.config, "loop_rate", 60.0, float)
        self.watchers_regex = re.compile(option(self.config, "watchers_regex", ".*"))
        self.msg_regex = re.compile(option(self.config, "msg_regex", r"^(?P<pid>.*);(?P<timestamp>.*)$"))
        self.max_count = option(self.config, "max_count", 3, int)
        self.ip = option(self.config, "ip", "127.0.0.1")
        self.port = option(self.config, "port", 1664, int)
        # None: the kill carries no signum / graceful_timeout, so the watcher's own settings apply (Circus).
        signum = self.config.get("watchers_stop_signal", self.config.get("stop_signal")) or None
        self.stop_signal = None if signum is None else parse_signal(signum)
        timeout = self.config.get("watchers_graceful_timeout", self.config.get("graceful_timeout")) or None
        self.graceful_timeout = None if timeout is None else float(timeout)
        self.pids: dict[int, Monitored] = {}
        self.udp: socket.socket | None = None

    def handle_init(self) -> None:
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.setblocking(False)
        self.udp.bind((self.ip, self.port))
        self.loop.add_reader(self.udp.fileno(), self.read_heartbeats)
        self.loop.call_later(0, self.discover)
        self.loop.call_every(self.loop_rate, self.look_after)

    def handle_stop(self) -> None:
        if self.udp is not None:
            self.udp.close()

    def monitors(self, watcher: str) -> bool:
        return not watcher.startswith("plugin:") and self.watchers_regex.match(watcher) is not None

    def discover(self) -> None:
        """Monitor the workers already running in matching watchers (spawn events cover the later ones)."""
        for watcher in self.call("list").get("watchers") or []:
            if not self.monitors(watcher):
                continue
            for pid in self.call("list", name=watcher).get("pids") or []:
                self.pids.setdefault(int(pid), Monitored(watcher, time.monotonic()))

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        watcher, action, msg = self.split_data(data)
        if not self.monitors(watcher):
            return
        pid = self.load_message(msg).get("process_pid")
        if pid is None:
            return
        if action == "spawn":
            self.pids[int(pid)] = Monitored(watcher, time.monotonic())
        elif action in ("reap", "kill"):
            self.pids.pop(int(pid), None)

    def read_heartbeats(self) -> None:
        assert self.udp is not None
        while True:
            try:
                payload = self.udp.recv(4096)
            except BlockingIOError:
                return
            match = self.msg_regex.search(payload.decode("utf-8", "replace").strip())
            if match is None:
                log.debug("watchdog: heartbeat %r does not match msg_regex", payload)
                continue
            try:
                pid = int(match.group("pid"))
            except (IndexError, ValueError):
                continue
            entry = self.pids.get(pid)
            if entry is not None:
                entry.last_activity = time.monotonic()
                entry.missed = 0

    def look_after(self) -> None:
        now = time.monotonic()
        for pid, entry in list(self.pids.items()):
            if now - entry.last_activity <= self.loop_rate:
                continue
            entry.missed += 1
            if entry.missed < self.max_count:
                continue
            log.info(
                "watchdog: %s pid %d sent no heartbeat for %d periods: killing it",
                entry.watcher,
                pid,
                entry.missed,
            )
            self.pids.pop(pid, None)
            props: dict[str, Any] = {"name": entry.watcher, "pid": pid}
            if self.stop_signal is not None:
                props["signum"] = self.stop_signal
            if self.graceful_timeout is not None:
                props["graceful_timeout"] = self.graceful_timeout
            self.cast("kill", **props)
