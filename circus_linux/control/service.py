"""Wires the control Server and the event Publisher to one arbiter from its [circus] section; no logic."""

from __future__ import annotations

from typing import Any

import zmq

from circus_linux.control.publisher import Publisher
from circus_linux.control.server import Server


class ControlService:
    """What circusd starts and closes: the ROUTER at `endpoint`, the PUB at `pubsub_endpoint`.

    The publisher is registered as a listener of the arbiter's events (`arbiter.listeners`), so the
    runtime keeps knowing nothing about zmq.
    """

    def __init__(self, arbiter: Any, circus: Any, context: zmq.Context | None = None) -> None:
        self.arbiter = arbiter
        self.context = context or zmq.Context()
        self._own_context = context is None
        self.publisher = Publisher(circus.pubsub_endpoint, self.context)
        self.server = Server(
            arbiter, circus.endpoint, self.context, ipc_owner=getattr(circus, "endpoint_owner", None)
        )
        self._started = False

    async def start(self) -> None:
        self.publisher.start()
        self.arbiter.listeners.append(self.publisher.emit)
        try:
            await self.server.start()
        except BaseException:
            self.arbiter.listeners.remove(self.publisher.emit)
            self.publisher.close()
            raise
        self._started = True

    async def close(self) -> None:
        if self.publisher.emit in self.arbiter.listeners:
            self.arbiter.listeners.remove(self.publisher.emit)
        await self.server.close()
        self.publisher.close()
        if self._own_context:
            self.context.term()
