"""Talk to several independent circusd at once: host lists, concurrent requests, merged event streams.

No cluster protocol: every host is its own circusd; this module only fans a request out and tags each
answer with its host. Used by `circusctl --hosts/--endpoint ...` and meant for circus-top as well:

    hosts = load_hosts("/etc/circus/hosts", client_key="/etc/circus/keys/me.key_secret")
    async with MultiClient(hosts, timeout=3) as multi:
        for answer in await multi.request("stats"):         # one HostReply per host, hosts' order
            print(answer.host.name, answer.reply or answer.error)
        async for host, topic, payload in multi.events(["watcher."]):
            ...
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from circus_linux.control.client import AsyncClient, CallError
from circus_linux.control.keys import ClientKeys, load_pair, load_public
from circus_linux.errors import CircusError


class HostsFileError(CircusError):
    """A hosts file line is malformed; the message names file and line."""


@dataclass(frozen=True)
class Host:
    """One circusd: a display name, its control endpoint, CURVE keys when it wants them."""

    name: str
    endpoint: str
    keys: ClientKeys | None = None
    pubsub_endpoint: str | None = None  # None: asked from the host (`globaloptions`) when needed


@dataclass(frozen=True)
class HostReply:
    """A host's reply (an error reply included), or `error` when it did not answer at all."""

    host: Host
    reply: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply.get("status") != "error"


def _host_of(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        return endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    return endpoint


def hosts_from_endpoints(endpoints: Sequence[str], keys: ClientKeys | None = None) -> list[Host]:
    """`--endpoint` given several times: each host is named after its address (or its ipc path)."""
    hosts: list[Host] = []
    seen: set[str] = set()
    for endpoint in endpoints:
        name = _host_of(endpoint)
        if name in seen:
            name = endpoint
        seen.add(name)
        hosts.append(Host(name, endpoint, keys))
    return hosts


def parse_hosts(
    text: str, client_key: str | None = None, source: str = "hosts", default_server_key: str | None = None
) -> list[Host]:
    """Lines `NAME ENDPOINT [SERVER_KEY]`; `#` starts a comment. SERVER_KEY: a .key file or Z85 text.

    Hosts with a server key (on the line, or `default_server_key`) talk CURVE with `client_key`.
    """
    client_pair = load_pair(client_key) if client_key else None
    hosts: list[Host] = []
    names: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) not in (2, 3):
            raise HostsFileError(
                f"{source}:{lineno}: expected NAME ENDPOINT [SERVER_KEY], got {line.strip()!r}"
            )
        name, endpoint = words[0], words[1]
        if name in names:
            raise HostsFileError(f"{source}:{lineno}: host {name!r} listed twice")
        if "://" not in endpoint:
            raise HostsFileError(
                f"{source}:{lineno}: {endpoint!r} is not an endpoint (tcp://HOST:PORT, ipc://PATH)"
            )
        names.add(name)
        server_key = words[2] if len(words) == 3 else default_server_key
        keys = None
        if server_key is not None:
            if client_pair is None:
                raise HostsFileError(f"{source}:{lineno}: host {name!r} needs CURVE: give --client-key")
            keys = ClientKeys(load_public(server_key), *client_pair)
        hosts.append(Host(name, endpoint, keys))
    if not hosts:
        raise HostsFileError(f"{source}: no host listed")
    return hosts


def load_hosts(path: str, client_key: str | None = None, default_server_key: str | None = None) -> list[Host]:
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise HostsFileError(f"cannot read {path}: {exc.strerror}") from None
    return parse_hosts(text, client_key, path, default_server_key)


def select(hosts: Sequence[Host], names: Iterable[str]) -> list[Host]:
    """The hosts named (in the list's order); raises HostsFileError for an unknown name."""
    wanted = list(names)
    unknown = [n for n in wanted if n not in {h.name for h in hosts}]
    if unknown:
        known = ", ".join(h.name for h in hosts)
        raise HostsFileError(f"unknown host(s): {', '.join(unknown)} (known: {known})")
    return [h for h in hosts if h.name in wanted]


def reachable_pubsub(host: Host, bound: str) -> str:
    """A host's pubsub endpoint as bound there, made reachable from here: wildcards take the control host."""
    if not bound.startswith("tcp://"):
        return bound
    addr, _, port = bound[len("tcp://") :].rpartition(":")
    if addr in ("*", "0.0.0.0", "[::]", "::") and host.endpoint.startswith("tcp://"):
        addr = host.endpoint[len("tcp://") :].rpartition(":")[0]
    return f"tcp://{addr}:{port}"


class MultiClient:
    """One AsyncClient per host; requests go to every host concurrently and never raise per host."""

    def __init__(
        self, hosts: Sequence[Host], timeout: float = 5.0, context: zmq.asyncio.Context | None = None
    ) -> None:
        self.hosts = list(hosts)
        self.timeout = timeout
        self._context = context or zmq.asyncio.Context.instance()
        self._clients: dict[str, AsyncClient] = {}

    async def __aenter__(self) -> MultiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, host: Host) -> AsyncClient:
        client = self._clients.get(host.name)
        if client is None:
            client = AsyncClient(host.endpoint, self.timeout, self._context, keys=host.keys)
            self._clients[host.name] = client
        return client

    async def _one(self, host: Host, command: str, properties: dict[str, Any]) -> HostReply:
        try:
            return HostReply(host, await self._client(host).request(command, **properties))
        except CallError as exc:
            # A timed-out DEALER may still get the late reply: a fresh socket next time.
            self._clients.pop(host.name).close()
            return HostReply(host, error=str(exc))

    async def request(self, command: str, **properties: Any) -> list[HostReply]:
        """Send `command` to every host at once; one HostReply per host, in the hosts' order."""
        return list(await asyncio.gather(*(self._one(h, command, properties) for h in self.hosts)))

    async def pubsub_endpoints(self) -> dict[str, str]:
        """Each host's event endpoint (its own, or asked with `globaloptions`); unreachable hosts left out."""
        out: dict[str, str] = {h.name: h.pubsub_endpoint for h in self.hosts if h.pubsub_endpoint}
        ask = [h for h in self.hosts if not h.pubsub_endpoint]
        replies = await asyncio.gather(*(self._one(h, "globaloptions", {}) for h in ask))
        for answer in replies:
            options = (answer.reply or {}).get("options") or {}
            if answer.ok and isinstance(options.get("pubsub_endpoint"), str):
                out[answer.host.name] = reachable_pubsub(answer.host, options["pubsub_endpoint"])
        return out

    async def events(
        self, topics: Sequence[str] = ("",), endpoints: dict[str, str] | None = None, count: int | None = None
    ) -> AsyncIterator[tuple[str, str, Any]]:
        """Merged event streams: (host name, topic, payload) as they arrive; payload is the decoded JSON
        (or the raw text when it is not JSON). Stops after `count` events when given."""
        endpoints = endpoints if endpoints is not None else await self.pubsub_endpoints()
        by_name = {h.name: h for h in self.hosts}
        poller = zmq.asyncio.Poller()
        socks: dict[Any, str] = {}
        try:
            for name, endpoint in endpoints.items():
                sock = self._context.socket(zmq.SUB)
                sock.setsockopt(zmq.LINGER, 0)
                keys = by_name[name].keys if name in by_name else None
                if keys is not None:
                    keys.apply(sock)
                for topic in topics or ("",):
                    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
                sock.connect(endpoint)
                socks[sock] = name
                poller.register(sock, zmq.POLLIN)
            seen = 0
            while count is None or seen < count:
                for sock, _ev in await poller.poll():
                    frames = await sock.recv_multipart()
                    topic = frames[0].decode(errors="replace")
                    body = frames[-1].decode(errors="replace") if len(frames) > 1 else ""
                    try:
                        payload: Any = json.loads(body)
                    except ValueError:
                        payload = body
                    yield socks[sock], topic, payload
                    seen += 1
                    if count is not None and seen >= count:
                        return
        finally:
            for sock in socks:
                sock.close(linger=0)


def run(hosts: Sequence[Host], command: str, timeout: float = 5.0, **properties: Any) -> list[HostReply]:
    """Synchronous helper: one request to every host, in a private event loop."""

    async def go() -> list[HostReply]:
        ctx = zmq.asyncio.Context()
        try:
            async with MultiClient(hosts, timeout, ctx) as multi:
                return await multi.request(command, **properties)
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(go())
