"""The control endpoint: a ROUTER socket that runs each request as its own task; no command logic here."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from circus_linux.control import protocol
from circus_linux.control.auth import CommandPolicy, IpcPermissions, ServerSecurity, bind_secured
from circus_linux.control.commands import COMMANDS, SPECS
from circus_linux.control.commands.base import Action
from circus_linux.control.protocol import Errno, RequestError
from circus_linux.errors import CommandError, ConfigError, MessageError, UnknownWatcher

log = logging.getLogger(__name__)

# libzmq drops a peer that sends a frame above this without ever handing it to us; between
# MAX_MESSAGE_SIZE and this the client still gets a readable errno 3.
HARD_FRAME_LIMIT = 16 * protocol.MAX_MESSAGE_SIZE


@dataclass
class _Client:
    """Per-peer bookkeeping: a peer may pipeline, but only `max_inflight` of its requests run at once."""

    sem: asyncio.Semaphore
    pending: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _to_async_context(context: zmq.Context | None) -> zmq.asyncio.Context:
    if context is None:
        return zmq.asyncio.Context.instance()
    if isinstance(context, zmq.asyncio.Context):
        return context
    # Same libzmq context, asyncio-flavoured sockets (shadow by address works on pyzmq 24 too).
    return zmq.asyncio.Context.shadow(context.underlying)


class Server:
    """Serves the Circus control protocol for `arbiter` at `endpoint` (ipc:// or tcp://).

    Requests run concurrently: the runtime serialises commands per watcher, so a slow `stop` of one
    watcher never delays a `list` or a command on another watcher.
    """

    def __init__(
        self,
        arbiter: Any,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        max_inflight: int = 32,
        max_pending: int = 1024,
        max_background: int = 10_000,
        ipc_mode: int | None = 0o600,
        ipc_owner: int | None = None,
        ipc_perms: IpcPermissions | None = None,
        security: ServerSecurity | None = None,
        policy: CommandPolicy | None = None,
    ) -> None:
        self.arbiter = arbiter
        self.endpoint = endpoint
        self._context = _to_async_context(context)
        self._max_inflight = max_inflight
        self._max_pending = max_pending
        # Commands sent without `waiting` run after their reply: each is a task, and a client could queue
        # any number of them (on one watcher's lock, say). Past this many, new ones get an error reply.
        self._max_background = max_background
        # A local socket speaks with circusd's full authority: keep it to its owner unless told.
        self._ipc_perms = ipc_perms or IpcPermissions(owner=ipc_owner, mode=ipc_mode)
        self.security = security
        self.policy = policy or CommandPolicy()
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._clients: dict[bytes, _Client] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.rejected = 0  # requests refused: a peer had too many pending, or too many ran in the background
        self.requests_received = 0  # frames that reached execute(), valid or not
        self.commands_handled = 0  # requests dispatched to a command handler
        # server-side handling time per command (parsed request -> reply built), the last 10,000 of each
        self.latencies: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=10000)
        )
        self.revoked_dropped = 0  # frames from a CURVE peer whose key was revoked since it connected

    async def start(self) -> None:
        """Bind and start reading; raises zmq.ZMQError when the endpoint cannot be bound."""
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, HARD_FRAME_LIMIT)
        try:
            bind_secured(sock, self.endpoint, self._ipc_perms, self.security)
        except BaseException:
            sock.close(linger=0)
            raise
        self._socket = sock
        self._reader = asyncio.create_task(self._read_loop(), name="control-server")

    async def close(self) -> None:
        """Stop reading, cancel requests in flight (not the caller's own task) and close the socket.

        Replies already queued still leave: the socket lingers up to one second.
        """
        current = asyncio.current_task()
        tasks = [t for t in self._all_tasks() if t is not current]
        if self._reader is not None and self._reader is not current:
            tasks.append(self._reader)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._reader = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _all_tasks(self) -> list[asyncio.Task[Any]]:
        tasks: list[asyncio.Task[Any]] = list(self._background)
        for client in self._clients.values():
            tasks.extend(client.tasks)
        return tasks

    async def _read_loop(self) -> None:
        assert self._socket is not None
        received = 0
        while True:
            try:
                if self.security is None:
                    frames = await self._socket.recv_multipart()
                else:
                    frames = self._authorized(await self._socket.recv_multipart(copy=False))
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.warning("control: receive failed: %s", exc)
                continue
            if frames:
                self._accept(frames)
            received += 1
            if received % 64 == 0:
                # awaiting an already-complete recv never yields: under a flood, let handlers run
                await asyncio.sleep(0)

    def _authorized(self, frames: list[zmq.Frame]) -> list[bytes]:
        # ZAP checked the key at handshake; re-checking it per frame makes a revocation (reloadconfig)
        # apply to connections that were already open, not only to new ones.
        assert self.security is not None
        if not frames or not self.security.peer_allowed(frames[-1].get("User-Id")):
            self.revoked_dropped += 1
            return []
        return [f.bytes for f in frames]

    def _accept(self, frames: list[bytes]) -> None:
        # ROUTER gives [identity, body] for DEALER peers (Circus's client) and [identity, b"", body] for
        # REQ peers: whatever precedes the body is the envelope the reply must carry back.
        if len(frames) < 2:
            return
        envelope, body = frames[:-1], frames[-1]
        client = self._clients.get(envelope[0])
        if client is None:
            client = self._clients[envelope[0]] = _Client(asyncio.Semaphore(self._max_inflight))
        if client.pending >= self._max_pending:
            self.rejected += 1
            task = asyncio.create_task(self._reject(envelope, body))
        else:
            task = asyncio.create_task(self._handle(envelope[0], envelope, body, client))
            client.pending += 1
        client.tasks.add(task)
        task.add_done_callback(lambda t: self._done(envelope[0], client, t))

    def _done(self, identity: bytes, client: _Client, task: asyncio.Task[None]) -> None:
        client.tasks.discard(task)
        if not client.tasks and self._clients.get(identity) is client:
            del self._clients[identity]

    async def _reject(self, envelope: list[bytes], body: bytes) -> None:
        try:
            req = protocol.parse_request(body, SPECS)
        except RequestError as exc:
            req_id, cast = exc.request_id, exc.cast
        else:
            req_id, cast = req.id, req.cast
        if not cast:
            await self._send(
                envelope, protocol.error(req_id, "too many requests in flight", Errno.COMMAND_ERROR)
            )

    async def _handle(self, identity: bytes, envelope: list[bytes], body: bytes, client: _Client) -> None:
        try:
            async with client.sem:
                reply, cast, after = await self.execute(body)
            if not cast:
                await self._send(envelope, reply)
            if after is not None:
                self._spawn(after, "after reply")
        finally:
            client.pending -= 1

    async def execute(self, body: bytes) -> tuple[dict[str, Any], bool, Callable[[], Awaitable[Any]] | None]:
        """Run one request frame: (reply, cast?, work to start once the reply is out). Never raises."""
        self.requests_received += 1
        try:
            req = protocol.parse_request(body, SPECS)
        except RequestError as exc:
            return protocol.error(exc.request_id, str(exc), exc.errno), exc.cast, None
        refused = self.policy.refuse(req.command, req.properties)
        if refused is not None:
            log.warning("control: refused: %s", refused)
            return protocol.error(req.id, refused, Errno.COMMAND_ERROR), req.cast, None
        t0 = time.perf_counter()
        try:
            return await self._run(req)
        finally:
            self.latencies[req.command].append(time.perf_counter() - t0)

    async def _run(
        self, req: protocol.Request
    ) -> tuple[dict[str, Any], bool, Callable[[], Awaitable[Any]] | None]:
        after = None
        self.commands_handled += 1
        try:
            result = await COMMANDS[req.command].execute(self.arbiter, req.properties)
            if req.command == "dstats" and isinstance(result, dict):
                result.setdefault("info", {}).update(self.counters())
            if isinstance(result, Action):
                action, result = result, result.immediate
                if action.after_reply:
                    after = action.run
                elif req.waiting:
                    value = await action.run()
                    result = action.finish(value) if action.finish is not None else None
                elif len(self._background) >= self._max_background:
                    self.rejected += 1
                    busy = f"too many commands in progress ({len(self._background)}): retry later or wait"
                    return protocol.error(req.id, busy, Errno.COMMAND_ERROR), req.cast, None
                else:
                    self._spawn(action.run, req.command)
        except (MessageError, UnknownWatcher, ConfigError) as exc:
            # RequestError is a MessageError; ConfigError here means a bad value sent by the client
            errno = exc.errno if isinstance(exc, RequestError) else Errno.MESSAGE_ERROR
            return protocol.error(req.id, str(exc), errno), req.cast, None
        except OSError as exc:
            return protocol.error(req.id, str(exc), Errno.OS_ERROR), req.cast, None
        except CommandError as exc:
            return protocol.error(req.id, str(exc), Errno.COMMAND_ERROR), req.cast, None
        except Exception as exc:  # a handler bug must cost one error reply, never the server
            log.exception("control: command %r failed", req.command)
            return (
                protocol.error(req.id, f"command {req.command!r}: {exc}", Errno.COMMAND_ERROR),
                req.cast,
                None,
            )
        if result is not None and not isinstance(result, dict | list):
            log.error("control: command %r returned %r", req.command, type(result))
            return protocol.error(req.id, "server error", Errno.BAD_MSG_DATA_ERROR), req.cast, after
        return protocol.ok(req.id, result), req.cast, after

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """Per command: median and p99 of the server-side handling time of its last 10,000 calls, in ms."""
        out = {}
        for command, samples in self.latencies.items():
            ordered = sorted(samples)

            def pick(q: float, ordered: list[float] = ordered) -> float:
                return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

            out[command] = {
                "count": len(ordered), "median_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0),
            }
        return out

    def counters(self) -> dict[str, Any]:
        """Debug counters, reported by `dstats`: tests prove with them what never reached a handler."""
        return {
            "server_latency": self.latency_summary(),
            "requests_received": self.requests_received,
            "commands_handled": self.commands_handled,
            "requests_rejected": self.rejected,
            "revoked_dropped": self.revoked_dropped,
        }

    def _spawn(self, run: Callable[[], Awaitable[Any]], what: str) -> None:
        async def background() -> None:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except (UnknownWatcher, CommandError) as exc:
                # e.g. a watcher removed while this command waited its turn: what a waiting client would
                # have got as an error reply, not a bug of ours
                log.warning("control: background %s: %s", what, exc)
            except Exception:  # nobody waits for this reply any more: the log is the only witness
                log.exception("control: background %s failed", what)

        task = asyncio.create_task(background(), name=f"control-{what}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        if self._socket is None:
            return
        try:
            data = protocol.encode(reply)
        except (TypeError, ValueError) as exc:
            log.error("control: reply not serialisable: %s", exc)
            data = protocol.encode(protocol.error(reply.get("id"), "server error", Errno.BAD_MSG_DATA_ERROR))
        try:
            await self._socket.send_multipart([*envelope, data])
        except zmq.ZMQError as exc:  # the peer went away; its reply has nowhere to go
            log.debug("control: reply dropped: %s", exc)
