"""Wires the control Server and the event Publisher to one arbiter from its [circus] section; no logic."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import zmq

from circus_linux.config.sections import is_exposed_endpoint
from circus_linux.control.auth import (
    CommandPolicy,
    IpcPermissions,
    SecurityError,
    ServerSecurity,
    ZapHandler,
)
from circus_linux.control.commands import NAMES
from circus_linux.control.publisher import Publisher
from circus_linux.control.server import Server
from circus_linux.control.statsstream import StatsStream

log = logging.getLogger(__name__)


class ControlService:
    """What circusd starts and closes: the ROUTER at `endpoint`, the PUB at `pubsub_endpoint`, the stats
    XPUB at `stats_endpoint`.

    The publisher is registered as a listener of the arbiter's events (`arbiter.listeners`), so the
    runtime keeps knowing nothing about zmq.
    """

    def __init__(self, arbiter: Any, circus: Any, context: zmq.Context | None = None) -> None:
        self.arbiter = arbiter
        self.context = context or zmq.Context()
        self._own_context = context is None
        # Raises SecurityError (circusd exits 2 with the message) for an unusable key or command name.
        self.ipc_perms = IpcPermissions.from_config(circus)
        self.security = ServerSecurity.from_config(circus)  # stats/other PUBs: self.security.apply(sock)
        self.policy = CommandPolicy.from_config(circus, frozenset(NAMES))
        self.zap = None if self.security is None else ZapHandler(self.context, self.security.keyring)
        self.publisher = Publisher(
            circus.pubsub_endpoint, self.context, ipc_perms=self.ipc_perms, security=self.security
        )
        self.server = Server(
            arbiter,
            circus.endpoint,
            self.context,
            ipc_perms=self.ipc_perms,
            security=self.security,
            policy=self.policy,
        )
        self.stats: StatsStream | None = None
        if getattr(circus, "stats_endpoint", None):
            self.stats = StatsStream(
                arbiter, circus.stats_endpoint, self.context, ipc_perms=self.ipc_perms, security=self.security
            )
        self._started = False
        self._circus = circus
        self.web: Any = None  # circus_linux.web.service.WebService when [circus] httpd = true
        self.web_token: Any = None  # its control.webtoken.DashboardToken
        self._drops: set[asyncio.Task[None]] = set()  # _drop_subscribers runs (owned: close cancels them)
        self._drop_lock = asyncio.Lock()

    def _on_event(self, topic: str, payload: dict[str, Any]) -> None:
        # reloadconfig and SIGHUP both begin with arbiter.reload_requested, before the file is even read:
        # re-read the authorized keys then, so a removed key file stops new handshakes (and, on the control
        # socket, every further frame) at once, whether or not the rest of the reload succeeds, and the
        # streams' subscribers are made to authenticate again. A reload that changed
        # curve_authorized_keys ends with arbiter.config_reloaded: the new directory is read then.
        if self.security is None:
            return
        if topic == "arbiter.reload_requested":
            self._reload_keys()
        elif topic == "arbiter.config_reloaded":
            circus = getattr(getattr(self.arbiter, "config", None), "circus", None)
            directory = getattr(circus, "curve_authorized_keys", None)
            if directory and directory != self.security.keyring.directory:
                self.security.keyring.directory = directory
                self._reload_keys()

    def _reload_keys(self) -> None:
        assert self.security is not None
        try:
            added, removed = self.security.keyring.reload()
        except SecurityError as exc:
            log.error("authorized keys NOT re-read, the %d key(s) in use stay: %s",
                      len(self.security.keyring.keys), exc)
            return
        log.info(
            "authorized keys re-read from %s: %d key(s); added %s, revoked %s",
            self.security.keyring.directory,
            len(self.security.keyring.keys),
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )
        if removed:
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._drop_subscribers(removed), name="drop-subscribers")
            self._drops.add(task)
            task.add_done_callback(self._drops.discard)

    async def _drop_subscribers(self, revoked: list[str]) -> None:
        """A PUB/XPUB cannot tell which subscriber holds a revoked key: every connection of both streams
        is closed, and each subscriber comes back through ZAP (auth.rebind). One drop at a time."""
        async with self._drop_lock:
            streams = [s for s in (self.publisher, self.stats) if s is not None]
            for stream in streams:
                await stream.drop_subscribers()
            log.info(
                "key(s) %s revoked: every subscriber of %s reconnects and authenticates again",
                ", ".join(revoked),
                " and ".join(s.endpoint for s in streams),
            )

    def _warn_exposure(self) -> None:
        if self.security is not None:
            log.info(
                "CURVE authentication on every endpoint; %d authorized key(s) in %s",
                len(self.security.keyring.keys),
                self.security.keyring.directory,
            )
            return
        circus = self._circus
        for endpoint in (circus.endpoint, circus.pubsub_endpoint, circus.stats_endpoint):
            if is_exposed_endpoint(endpoint):
                log.warning(
                    "INSECURE: %s is reachable from the network without authentication (insecure = true): "
                    "anyone who can connect can run any command as this user",
                    endpoint,
                )

    async def start(self) -> None:
        self._warn_exposure()
        # The ZAP handler must answer before the first CURVE socket binds: without one, libzmq lets
        # every CURVE peer in.
        if self.zap is not None:
            self.zap.start()
        self.arbiter.listeners.append(self._on_event)
        self.publisher.start()
        self.arbiter.listeners.append(self.publisher.emit)
        try:
            await self.server.start()
        except BaseException:
            self.arbiter.listeners.remove(self.publisher.emit)
            self.publisher.close()
            raise
        self._started = True
        if self.stats is not None:
            try:
                self.stats.start()
            except (zmq.ZMQError, OSError) as exc:  # stats are a nicety: circusd runs on without them
                log.error("stats stream not started on %s: %s", self.stats.endpoint, exc)
                self.stats = None
        if getattr(self._circus, "httpd", False):
            # Imported here: a circusd without httpd never loads the dashboard. Buttons go through
            # server.execute, the very dispatch ZeroMQ requests take.
            from circus_linux.control.webtoken import DashboardToken
            from circus_linux.web.service import WebService

            self.web_token = DashboardToken()
            self.web = WebService(self.arbiter, self._circus, self.server.execute, self.web_token.check)
            await self.web.start()
            self._publish_web_token()

    def _publish_web_token(self) -> None:
        """Write the dashboard's URL and token where exactly the control socket's users can read it."""
        from circus_linux.control.webtoken import token_path

        assert self.web is not None and self.web_token is not None
        path = token_path(self._circus.endpoint)
        if path is None:
            log.warning(
                "httpd: no private place for the dashboard's token (a tcp:// endpoint, no "
                "XDG_RUNTIME_DIR): its pages are open, its buttons refuse every action"
            )
            return
        try:
            self.web_token.publish(path, self.web.base_url, self.ipc_perms)
        except OSError as exc:
            log.error("httpd: cannot write the dashboard's token to %s: %s; its buttons refuse every action",
                      path, exc)
            return
        log.info(
            "httpd: the dashboard's buttons need the token in %s (same owner, group and mode as the control "
            "socket): `circusctl dashboard-url` prints the URL to open",
            path,
        )

    async def close_commands(self) -> None:
        """Close the command side only: the dashboard, the requests in flight (cancelled) and the ROUTER.

        circusd's shutdown calls it before it stops the watchers, so that no command starts anything
        while they stop, and close() after: the shutdown's events (arbiter.stopping, every kill, reap
        and stop) still go out on the PUB socket, to `listen` and to the plugins, which stop last.
        Safe to call twice."""
        if self.web is not None:
            await self.web.close()
            self.web = None
        if self.web_token is not None:
            self.web_token.remove()
        await self.server.close()

    async def close(self, flush: float = 0.0) -> None:
        """Close everything; `flush`: seconds the PUB socket may take to send the events still queued
        (bounded: a subscriber that does not read never holds circusd's exit longer)."""
        await self.close_commands()
        for listener in (self.publisher.emit, self._on_event):
            if listener in self.arbiter.listeners:
                self.arbiter.listeners.remove(listener)
        for task in list(self._drops):
            task.cancel()
        if self._drops:
            await asyncio.gather(*self._drops, return_exceptions=True)
        if self.stats is not None:
            await self.stats.close()
        self.publisher.close(flush)
        if self.zap is not None:
            await self.zap.close()
        if self._own_context:
            self.context.term()
