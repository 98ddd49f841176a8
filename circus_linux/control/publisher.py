"""The event stream: a PUB socket fed by the runtime's emit(topic, payload) callback; never blocks."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import zmq

from circus_linux.control.auth import IpcPermissions, ServerSecurity, bind_secured, rebind

log = logging.getLogger(__name__)


def sync_context(context: zmq.Context | None) -> zmq.Context:
    """A plain context for sync sockets (an asyncio one is shadowed: same libzmq context)."""
    if context is None:
        return zmq.Context.instance()
    if type(context) is zmq.Context:
        return context
    # An asyncio context: same libzmq context, plain sockets, so emit() can stay a sync call.
    return zmq.Context.shadow(context.underlying)


class Publisher:
    """Publishes `[topic, json]` frames Circus-style (`watcher.<name>.<event>`, payload with `time`).

    emit() is safe to call from the event loop: it never waits. When a subscriber is too slow and the
    send queue is full the event is dropped and counted in `dropped`, rather than stalling circusd.
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        hwm: int = 10000,
        ipc_perms: IpcPermissions | None = None,
        security: ServerSecurity | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._ipc_perms = ipc_perms or IpcPermissions(mode=0o600)
        self._security = security  # CURVE: only subscribers with an authorized key receive anything
        self._context = sync_context(context)
        self._hwm = hwm
        self._socket: zmq.Socket | None = None
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        """Bind; raises zmq.ZMQError when the endpoint cannot be bound."""
        sock = self._context.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        try:
            bind_secured(sock, self.endpoint, self._ipc_perms, self._security)
        except BaseException:
            sock.close()
            raise
        self._socket = sock

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Send one event now or drop it; never raises for a full queue or a closed publisher."""
        if self._socket is None:
            self.dropped += 1
            return
        body = dict(payload)
        body.setdefault("time", time.time())
        try:
            data = json.dumps(body, default=str).encode()
            self._socket.send_multipart([topic.encode(), data], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return
        except (zmq.ZMQError, TypeError, ValueError) as exc:
            self.dropped += 1
            log.warning("publisher: event %s dropped: %s", topic, exc)
            return
        self.sent += 1

    async def drop_subscribers(self) -> None:
        """Close every subscriber's connection; each reconnects and authenticates again (auth.rebind).
        Should the address be taken meanwhile, the stream closes and says why."""
        if self._socket is None:
            return
        try:
            await rebind(self._socket, self._ipc_perms, self._security)
        except (zmq.ZMQError, OSError, TimeoutError) as exc:
            log.error("event stream %s closed: cannot bind it again after dropping its subscribers: %s",
                      self.endpoint, exc)  # fmt: skip
            self.close()

    def close(self, flush: float = 0.0) -> None:
        """flush: seconds zmq may take to send what is queued (the context's term() waits that long)."""
        if self._socket is not None:
            self._socket.close(linger=int(flush * 1000))
            self._socket = None
