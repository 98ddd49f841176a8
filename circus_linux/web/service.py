"""Starts and closes circusd's HTTP side ([circus] httpd) next to the control service; wiring only."""

from __future__ import annotations

import logging
import socket
from typing import Any

from circus_linux.config.sections import is_loopback_host
from circus_linux.web.app import Authorize, Dashboard, Dispatch
from circus_linux.web.collector import Collector
from circus_linux.web.http import HttpServer

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


class WebService:
    """Dashboard + /metrics on httpd_host:httpd_port; buttons run through the control server's `dispatch`."""

    def __init__(
        self, arbiter: Any, circus: Any, dispatch: Dispatch, authorize: Authorize, interval: float = 1.0
    ) -> None:
        self.arbiter = arbiter
        self.host = str(getattr(circus, "httpd_host", "127.0.0.1") or "127.0.0.1")
        self.port = int(getattr(circus, "httpd_port", 8080))
        self.collector = Collector(arbiter, interval)
        # A hostile page could reach us through a rebound DNS name: pin the Host header. On loopback, to
        # the loopback names; elsewhere (insecure = true), to the configured host and this machine's
        # name, and address literals (an address cannot be rebound).
        self.loopback = is_loopback_host(self.host)
        if self.loopback:
            hosts = LOOPBACK_NAMES | {self.host.lower()}
        else:
            hosts = {self.host.lower(), socket.gethostname().lower()} - {"", "*", "0.0.0.0", "::"}
        self.dashboard = Dashboard(self.collector, dispatch, hosts, authorize, ip_literals=not self.loopback)
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

    @property
    def base_url(self) -> str:
        """The URL to open: the configured host, or this machine's name for a wildcard bind."""
        host = self.host
        if host in ("", "*", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http.bound_port}/"

    async def close(self) -> None:
        if self.collector.listen in self.arbiter.listeners:
            self.arbiter.listeners.remove(self.collector.listen)
        await self.collector.close()
        await self.http.close()
