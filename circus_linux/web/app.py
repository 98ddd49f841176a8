"""Dashboard routes: static page, JSON API, Server-Sent Events, /metrics; actions only via `dispatch`."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from circus_linux.control.commands import COMMANDS
from circus_linux.web import metrics
from circus_linux.web.collector import Collector
from circus_linux.web.http import Request, Response, StreamResponse

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# What the dashboard's buttons may do. Everything else (quit, rm, set, signal...) stays on circusctl.
ACTIONS = frozenset({"incr", "decr", "start", "stop", "restart"})
KEEPALIVE = 15.0
TAIL_LINES = 200
LOGS_LEASE = 60.0  # seconds of live output per /api/logs call; the page asks again every 30 s

# The control server's own request runner: frame in, (reply, cast?, deferred work) out.
Dispatch = Callable[[bytes], Awaitable[tuple[dict[str, Any], bool, Callable[[], Awaitable[Any]] | None]]]
# The control layer's token check (control/webtoken.py): True when the token may act.
Authorize = Callable[[str | None], bool]
TOKEN_COOKIE = "circus_token"
TOKEN_HEADER = "x-circus-token"
NO_TOKEN = (
    "the dashboard's buttons need its token: open the URL `circusctl dashboard-url` prints "
    "(only users who may use the control socket can read it)"
)


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), "application/json")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


class Dashboard:
    """The request handler; `allowed_hosts` is what the Host header may name (DNS-rebinding guard), and
    `ip_literals` lets a bare address through too (a dashboard bound off loopback: a rebound DNS name
    is still refused, an address typed in the URL bar cannot be rebound).

    Pages, JSON reads and /metrics are open; every action needs the token `authorize` accepts.
    """

    def __init__(
        self,
        collector: Collector,
        dispatch: Dispatch,
        allowed_hosts: set[str],
        authorize: Authorize,
        ip_literals: bool = False,
    ) -> None:
        self.collector = collector
        self.dispatch = dispatch
        self.allowed_hosts = allowed_hosts
        self.authorize = authorize
        self.ip_literals = ip_literals
        self.refused = 0
        self._deferred: set[asyncio.Task[None]] = set()

    def _host_ok(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        name = (host.rsplit(":", 1)[0] if not host.endswith("]") else host).strip("[]").lower()
        if name in self.allowed_hosts:
            return True
        if not self.ip_literals:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _token(self, request: Request) -> str | None:
        return (
            request.headers.get(TOKEN_HEADER)
            or _cookie(request.headers.get("cookie", ""), TOKEN_COOKIE)
            or next(iter(request.query.get("token", ())), None)
        )

    def _refuse(self, request: Request, why: str) -> Response:
        self.refused += 1
        peer = request.peer or "?"
        log.warning("httpd: refused %s %s from %s: %s", request.method, request.path, peer, why)
        return _json({"status": "error", "reason": why}, 403)

    def _page(self, request: Request) -> Response:
        # `/?token=T`: the URL circusctl dashboard-url prints. A good token becomes an HttpOnly,
        # SameSite=Strict cookie (no script can read it, no other site's request carries it) and the
        # browser is sent to the bare page, so the token leaves the address bar and the history.
        token = next(iter(request.query.get("token", ())), None)
        if token is None:
            return self.static("index.html")
        if not self.authorize(token):
            self._refuse(request, "wrong dashboard token in the page URL")
            return self.static("index.html")
        cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        return Response(303, b"", headers={"Location": "/", "Set-Cookie": cookie})

    async def __call__(self, request: Request) -> Response | StreamResponse:
        if not self._host_ok(request):
            return Response(421, b"unexpected Host header\n")
        path = request.path
        if request.method == "POST":
            if path == "/api/command":
                return await self.command(request)
            return Response(405, b"method not allowed\n", headers={"Allow": "GET"})
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers={"Allow": "GET, POST"})
        if path in ("/", "/index.html"):
            return self._page(request)
        if path.startswith("/static/"):
            return self.static(path[len("/static/") :])
        if path == "/metrics":
            return await self.metrics()
        if path == "/api/snapshot":
            return await self.snapshot()
        if path == "/api/events":
            return StreamResponse(self.events(), headers={"X-Accel-Buffering": "no"})
        if path == "/api/logs":
            return await self.logs((request.query.get("name") or [""])[0])
        return Response(404, b"not found\n")

    def static(self, name: str) -> Response:
        # Only plain names of files that ship in static/: no path can climb out of it.
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
            return Response(404, b"not found\n")
        return Response(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    async def _current(self) -> Any:
        return self.collector.last or await self.collector.tick()

    async def metrics(self) -> Response:
        # A scrape gets fresh numbers rather than up to a second-old sample.
        snap = await self.collector.sample()
        return Response(200, metrics.render(snap, self.collector.spawn).encode(), metrics.CONTENT_TYPE)

    async def snapshot(self) -> Response:
        snap = await self._current()
        return _json(
            {
                "snapshot": snap.to_json(),
                "history": list(self.collector.history),
                "actions": sorted(ACTIONS),
                "logs_command": "logs" in COMMANDS,
            }
        )

    async def events(self) -> AsyncIterator[bytes]:
        queue = self.collector.subscribe()
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):  # 3.11's wait_for can swallow a cancel
                        kind, data = await queue.get()
                except TimeoutError:
                    yield b": keepalive\n\n"  # lets the server notice a peer that went away
                    continue
                yield _sse(kind, data)
        finally:
            self.collector.unsubscribe(queue)

    async def _dispatch(self, command: str, properties: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"id": uuid.uuid4().hex, "command": command, "properties": properties}).encode()
        reply, _cast, after = await self.dispatch(body)
        if after is not None:  # work the server defers until its reply is out: ours is out now too

            async def deferred() -> None:
                await after()

            task = asyncio.create_task(deferred())
            self._deferred.add(task)
            task.add_done_callback(self._deferred.discard)
        return reply

    async def command(self, request: Request) -> Response:
        # A cross-site form cannot send application/json without a CORS preflight, which we never
        # answer; a page of another origin that tries anyway names itself in Origin.
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Response(415, b"application/json expected\n")
        # The Host header passed the guard above, so it names us: a browser's request from our own page
        # has Origin http://<Host> and Sec-Fetch-Site same-origin; a tool (curl) sends neither.
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{request.headers.get('host', '')}":
            return self._refuse(request, f"cross-origin request from {origin}")
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return self._refuse(request, f"cross-site request (Sec-Fetch-Site: {site})")
        if not self.authorize(self._token(request)):
            return self._refuse(request, NO_TOKEN)
        try:
            msg = json.loads(request.body)
            command, props = msg["command"], dict(msg.get("properties") or {})
        except (ValueError, KeyError, TypeError):
            return _json({"status": "error", "reason": "expected {command, properties}"}, 400)
        if command not in ACTIONS:
            return _json({"status": "error", "reason": f"{command!r} is not a dashboard action"}, 403)
        reply = await self._dispatch(command, props)
        if self.collector.last is not None:
            await self.collector.tick()  # the page sees the effect without waiting a second
        return _json(reply, 200 if reply.get("status") != "error" else 400)

    async def logs(self, name: str) -> Response:
        lines = list(self.collector.tails.get(name, ()))
        if "logs" in COMMANDS:
            # The command's ring is authoritative; `follow` leases live `watcher.<name>.stdout` events
            # (published only while someone follows), which the page renews by asking again.
            reply = await self._dispatch("logs", {"name": name, "lines": TAIL_LINES, "follow": LOGS_LEASE})
            if reply.get("status") != "error" and isinstance(reply.get("lines"), list):
                lines = [_line(name, x) for x in reply["lines"]]
        return _json({"name": name, "lines": lines, "captured": bool(lines)})


def _line(name: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {"watcher": name, "line": str(entry)}
    text = entry.get("data", entry.get("line", ""))
    return {
        "watcher": name,
        "pid": entry.get("pid"),
        "stream": entry.get("stream"),
        "line": str(text).rstrip("\n"),
    }
