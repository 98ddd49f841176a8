"""Control-channel clients (sync and asyncio) for circusctl and plugins; no rendering, no retries."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

# Only the sync API at import time: circusctl's one-shot call must not pay for asyncio and zmq.asyncio
# (~40 ms); AsyncClient imports them when it is first built.
import zmq

from circus_linux.control.protocol import make_request
from circus_linux.errors import CircusError

if TYPE_CHECKING:
    import zmq.asyncio

    from circus_linux.control.keys import ClientKeys

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT = 5.0


class CallError(CircusError):
    """A call failed: an error reply (`reply` and `errno` set), a timeout or a transport error."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply
        self.errno = None if reply is None else reply.get("errno")


def _check(reply: Any, raise_on_error: bool) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise CallError(f"malformed reply: {reply!r}")
    # Only "error" is a failure: `status NAME` answers {"status": "active"} (Circus's own shape).
    if raise_on_error and reply.get("status") == "error":
        raise CallError(str(reply.get("reason", "unknown error")), reply)
    return reply


def _new_id() -> str:
    # 32 random hex digits, the shape of Circus's uuid4().hex ids, without importing uuid
    return os.urandom(16).hex()


def _decode(frame: bytes) -> Any:
    try:
        return json.loads(frame)
    except ValueError as exc:
        raise CallError(f"malformed reply: {exc}") from None


class Client:
    """A DEALER client, one request at a time; replies with another id (late ones) are skipped.

    `call()` raises CallError on an error reply; `request()` returns error replies as they are.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = DEFAULT_TIMEOUT,
        context: zmq.Context | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.IDENTITY, _new_id().encode())
        self._socket.setsockopt(zmq.LINGER, 0)
        # A DEALER's send blocks while it has no pipe to a peer (between a refused CURVE handshake and
        # the next reconnect, for one): bound it like the wait for the reply.
        self._socket.setsockopt(zmq.SNDTIMEO, max(int(timeout * 1000), 1))
        if keys is not None:  # CURVE: an unauthorized key gets no reply at all, hence a timeout
            keys.apply(self._socket)
        self._socket.connect(endpoint)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close(linger=0)

    def request(self, command: str, **properties: Any) -> dict[str, Any]:
        return self._roundtrip(command, properties, raise_on_error=False)

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        return self._roundtrip(command, properties, raise_on_error=True)

    def cast(self, command: str, **properties: Any) -> None:
        """Fire and forget (`msg_type: cast`): the server sends no reply."""
        msg = make_request(command, properties, _new_id(), cast=True)
        self._socket.send(json.dumps(msg).encode())

    def _roundtrip(self, command: str, properties: dict[str, Any], raise_on_error: bool) -> dict[str, Any]:
        call_id = _new_id()
        try:
            self._socket.send(json.dumps(make_request(command, properties, call_id)).encode())
        except zmq.Again:
            raise CallError("Timed out.") from None
        except (zmq.ZMQError, TypeError, ValueError) as exc:
            raise CallError(str(exc)) from None
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._socket.poll(int(left * 1000) + 1, zmq.POLLIN):
                raise CallError("Timed out.")
            reply = _decode(self._socket.recv())
            if isinstance(reply, dict) and reply.get("id") == call_id:
                return _check(reply, raise_on_error)


class AsyncClient:
    """The asyncio twin of Client, for plugins and tests running inside an event loop."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = DEFAULT_TIMEOUT,
        context: zmq.asyncio.Context | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        import zmq.asyncio  # lazy: see the imports at the top

        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context or zmq.asyncio.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.IDENTITY, _new_id().encode())
        self._socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:  # CURVE: an unauthorized key gets no reply at all, hence a timeout
            keys.apply(self._socket)
        self._socket.connect(endpoint)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close(linger=0)

    async def request(self, command: str, **properties: Any) -> dict[str, Any]:
        return await self._roundtrip(command, properties, raise_on_error=False)

    async def call(self, command: str, **properties: Any) -> dict[str, Any]:
        return await self._roundtrip(command, properties, raise_on_error=True)

    async def cast(self, command: str, **properties: Any) -> None:
        msg = make_request(command, properties, _new_id(), cast=True)
        await self._socket.send(json.dumps(msg).encode())

    async def _roundtrip(
        self, command: str, properties: dict[str, Any], raise_on_error: bool
    ) -> dict[str, Any]:
        import asyncio  # lazy too; already loaded, since we run inside its loop

        call_id = _new_id()
        try:
            body = json.dumps(make_request(command, properties, call_id)).encode()
            async with asyncio.timeout(self.timeout):  # not wait_for: 3.11's can lose a cancel
                await self._socket.send(body)
        except TimeoutError:
            raise CallError("Timed out.") from None
        except (zmq.ZMQError, TypeError, ValueError) as exc:
            raise CallError(str(exc)) from None
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not await self._socket.poll(int(left * 1000) + 1):
                raise CallError("Timed out.")
            reply = _decode(await self._socket.recv())
            if isinstance(reply, dict) and reply.get("id") == call_id:
                return _check(reply, raise_on_error)
