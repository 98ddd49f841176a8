"""A minimal HTTP/1.1 server on asyncio streams: one request per connection, bounded input; no routing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # request line + headers
MAX_BODY = 64 * 1024  # the dashboard only ever posts small JSON commands
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    peer: str = ""  # the client's address, for log lines


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamResponse:
    """A long-lived response (Server-Sent Events): `chunks` is consumed until it ends or the peer leaves."""

    chunks: AsyncIterator[bytes]
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _head(status: int, content_type: str, extra: dict[str, str], length: int | None) -> bytes:
    phrase = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Type: {content_type}", "Connection: close"]
    # The dashboard is same-origin only; these keep other sites from framing or sniffing it.
    lines += ["X-Content-Type-Options: nosniff", "X-Frame-Options: DENY", "Cache-Control: no-store"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_request(reader: asyncio.StreamReader) -> Request:
    try:
        async with asyncio.timeout(READ_TIMEOUT):  # not wait_for: 3.11's can lose a cancel
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "incomplete request") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, "HTTP/1.x only")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked request bodies are not supported")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise BadRequest(413, "body too large")
    body = b""
    if length:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise BadRequest(400, "incomplete body") from None
    url = urlsplit(target)
    return Request(method.upper(), url.path or "/", parse_qs(url.query), headers, body)


class HttpServer:
    """Serves `handler` on host:port; each connection carries one request (Connection: close)."""

    def __init__(self, host: str, port: int, handler: Handler) -> None:
        self.host = host
        self.port = port
        self._handler = handler
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._conns)
        for task in tasks:  # SSE streams never end by themselves
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._one(reader, writer)
        except (TimeoutError, ConnectionError):
            pass  # the peer left or stalled: nothing to answer
        except asyncio.CancelledError:
            # Only close() cancels this task (it ends never-ending SSE streams); the task belongs to
            # start_server, whose done-callback would log a cancelled task as an error, so end quietly.
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
        except BadRequest as exc:
            body = f"{exc}\n".encode()
            writer.write(_head(exc.status, "text/plain; charset=utf-8", {}, len(body)) + body)
            await writer.drain()
            return
        peername = writer.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            request = dataclasses.replace(request, peer=f"{peername[0]}:{peername[1]}")
        try:
            response = await self._handler(request)
        except Exception:  # a handler bug costs one 500, never the server
            log.exception("httpd: %s %s failed", request.method, request.path)
            response = Response(500, b"internal error\n")
        if isinstance(response, StreamResponse):
            writer.write(_head(200, response.content_type, response.headers, None))
            await writer.drain()
            async for chunk in response.chunks:
                writer.write(chunk)
                await writer.drain()
            return
        body = b"" if request.method == "HEAD" else response.body
        writer.write(
            _head(response.status, response.content_type, response.headers, len(response.body)) + body
        )
        await writer.drain()
