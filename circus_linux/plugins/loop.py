"""A small single-threaded loop for one plugin process: zmq sockets, fds and timers; no asyncio, no I/O."""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger("circus_linux.plugins.loop")

Callback = Callable[[], Any]


class Timer:
    """A scheduled call; `cancel()` makes it a no-op. Periodic timers re-arm themselves after each run."""

    def __init__(self, when: float, callback: Callback, interval: float | None) -> None:
        self.when = when
        self.callback = callback
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class PluginLoop:
    """Polls readers (zmq sockets or fds) and runs timers until `stop()`.

    A callback that raises is logged and the loop goes on: one bad event must not kill a plugin. Callbacks
    run one at a time in the main thread, so a plugin needs no locks.
    """

    def __init__(self) -> None:
        self._poller = zmq.Poller()
        self._readers: dict[Any, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._running = False
        self._stop_requested = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def stop_requested(self) -> bool:
        """stop() was called and no run() has ended since (a stop asked before run() is kept)."""
        return self._stop_requested

    def add_reader(self, source: zmq.Socket[Any] | int, callback: Callback) -> None:
        self._readers[source] = callback
        self._poller.register(source, zmq.POLLIN)

    def remove_reader(self, source: zmq.Socket[Any] | int) -> None:
        if self._readers.pop(source, None) is not None:
            self._poller.unregister(source)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self._schedule(Timer(time.monotonic() + max(delay, 0.0), callback, None))

    def call_every(self, interval: float, callback: Callback, first: float | None = None) -> Timer:
        """Run `callback` every `interval` seconds, the first time after `first` (default: one interval)."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        start = interval if first is None else first
        return self._schedule(Timer(time.monotonic() + start, callback, interval))

    def _schedule(self, timer: Timer) -> Timer:
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def stop(self) -> None:
        self._running = False
        self._stop_requested = True

    def run(self) -> None:
        """Run until stop(); at once back when stop() came before (a SIGTERM during a plugin's start)."""
        if self._stop_requested:
            self._stop_requested = False
            return
        self._running = True
        try:
            self._loop()
        finally:
            self._running = False
            self._stop_requested = False

    def _loop(self) -> None:
        while self._running:
            timeout = self._run_due_timers()
            if not self._running:
                break
            try:
                events = self._poller.poll(None if timeout is None else max(int(timeout * 1000), 0))
            except zmq.ZMQError as exc:
                log.error("plugin loop: poll failed: %s", exc)
                break
            for source, _mask in events:
                callback = self._readers.get(source)
                if callback is not None:
                    self._run(callback)

    def _run_due_timers(self) -> float | None:
        """Run what is due; return seconds until the next timer (None: no timer)."""
        while self._timers and self._running:
            when, _, timer = self._timers[0]
            if timer.cancelled:
                heapq.heappop(self._timers)
                continue
            now = time.monotonic()
            if when > now:
                return when - now
            heapq.heappop(self._timers)
            if timer.interval is not None:
                # Re-arm from the schedule, not from now, so a periodic check does not drift.
                timer.when = max(when + timer.interval, now)
                self._schedule(timer)
            self._run(timer.callback)
        return None

    def _run(self, callback: Callback) -> None:
        try:
            callback()
        except Exception:
            log.exception("plugin callback %r failed", callback)
