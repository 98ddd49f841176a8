"""HttpObserver: fetch a URL every loop_rate seconds, time it, restart a watcher on error; wire only.

Options (Circus's): check_url (http://localhost/), loop_rate (60), restart_on_error (a watcher name; empty:
only report), timeout (10 s per fetch), plus StatsdEmitter's host/port/prefix/sample_rate, with
application_name `http_observer` (prefix `circus.http_observer.watcher`). Circus's metrics: the timer
`http_stats.request_time` (ms) for a fetch that succeeded; the counters `http_stats.error` and
`http_stats.error.<code>` (the HTTP status, or 599 when no response came: Tornado's code, which Circus
sent) for one that failed, and `http_stats.restart_on_error` when it restarts the watcher.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Any

from circus_linux.plugins.base import Frame, option
from circus_linux.plugins.statsd import StatsdEmitter

log = logging.getLogger("circus_linux.plugins.http_observer")

# The code Circus's Tornado client gave a fetch that got no HTTP response (refused, timed out).
NO_RESPONSE = 599


class HttpObserver(StatsdEmitter):
    name = "http_observer"
    default_app_name = "http_observer"  # Circus's: circus.http_observer.watcher.http_stats.*

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_url = option(self.config, "check_url", "http://localhost/")
        self.loop_rate = option(self.config, "loop_rate", 60.0, float)
        self.restart_on_error = option(self.config, "restart_on_error", "") or None
        self.timeout = option(self.config, "timeout", 10.0, float)
        self.failures = 0

    def handle_init(self) -> None:
        self.loop.call_every(self.loop_rate, self.check)

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        """Events are not counted here: this plugin observes a URL, not the watchers."""

    def fetch(self) -> int:
        """GET check_url; the HTTP status, raising OSError on a network error or an error status.

        Interruptible: a SIGTERM during the fetch (a hung backend is what this plugin is for) stops the
        plugin at once instead of after the fetch's timeout, or circusd's SIGKILL."""
        with self.interruptible(), urllib.request.urlopen(
            self.check_url, timeout=min(self.timeout, self.loop_rate)
        ) as resp:
            status = int(resp.status)
            resp.read()
        return status

    def check(self) -> None:
        started = time.monotonic()
        try:
            self.fetch()
        except (OSError, ValueError) as exc:  # urllib.error.URLError/HTTPError are OSErrors
            self.failures += 1
            code = exc.code if isinstance(exc, urllib.error.HTTPError) else NO_RESPONSE
            self.statsd.increment("http_stats.error")
            self.statsd.increment(f"http_stats.error.{code}")
            log.warning("http_observer: %s failed: %s", self.check_url, exc)
            if self.restart_on_error:
                log.info("http_observer: restarting %s", self.restart_on_error)
                self.cast("restart", name=self.restart_on_error)
                self.statsd.increment("http_stats.restart_on_error")
            return
        self.statsd.timed("http_stats.request_time", int((time.monotonic() - started) * 1000))


__all__ = ["HttpObserver"]
