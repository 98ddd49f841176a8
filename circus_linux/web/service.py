"""Starts and closes circusd's HTTP side ([circus] httpd) next to the control service; wiring only."""

from __future__ import annotations

import logging
from typing import Any

from circus_linux.web.app import Dashboard, Dispatch
from circus_linux.web.collector import Collector
from circus_linux.web.http import HttpServer

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


class WebService:
    """Dashboard + /metrics on httpd_host:httpd_port; buttons run through the control server's `dispatch`."""

    def __init__(self, arbiter: Any, circus: Any, dispatch: Dispatch, interval: float = 1.0) -> None:
        self.arbiter = arbiter
        self.host = str(getattr(circus, "httpd_host", "127.0.0.1") or "127.0.0.1")
        self.port = int(getattr(circus, "httpd_port", 8080))
        self.collector = Collector(arbiter, interval)
        # On loopback a hostile page could still reach us through a rebound DNS name: pin the Host header.
        loopback = self.host.lower() in LOOPBACK_NAMES or self.host.startswith("127.")
        hosts = LOOPBACK_NAMES | {self.host.lower()} if loopback else None
        self.dashboard = Dashboard(self.collector, dispatch, hosts)
        self.http = HttpServer(self.host, self.port, self.dashboard)

    @property
    def port_bound(self) -> int:
        return self.http.bound_port

    async def start(self) -> None:
        self.arbiter.listeners.append(self.collector.listen)
        try:
            await self.http.start()
        except OSError:
            self.arbiter.listeners.remove(self.collector.listen)
            raise
        self.collector.start()
        log.info("httpd: dashboard on http://%s:%d/", self.host, self.http.bound_port)

    async def close(self) -> None:
        if self.collector.listen in self.arbiter.listeners:
            self.arbiter.listeners.remove(self.collector.listen)
        await self.collector.close()
        await self.http.close()
