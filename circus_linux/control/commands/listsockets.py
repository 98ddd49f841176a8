"""listsockets: the sockets circusd holds for its watchers.

Request properties: none.
Reply: `{"sockets": [{"fd", "name", "backlog", "host", "port"} | {"fd", "name", "path"}, ...]}` by fd.
The runtime's `arbiter.sockets.describe_live()` gives the entries, with extra keys kept: `family`,
`type`, `origin` ("bound", "systemd" for LISTEN_FDS/fd store, "upgrade"), and from sock_diag the live
`queued` (accept-queue depth), `backlog` (as the kernel clamped it) and `established` (connections on the
address; inet only), None when unknown. A mapping name -> object with fd/name/backlog/host/port/path
attributes is accepted too.
CLI: `circusctl listsockets`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.protocol import Prop

NAME = "listsockets"
PROPERTIES: tuple[Prop, ...] = ()


def describe(sock: Any) -> dict[str, Any]:
    path = getattr(sock, "path", None)
    info: dict[str, Any] = {"fd": getattr(sock, "fd", None), "name": getattr(sock, "name", None)}
    if path:
        info["path"] = path
    else:
        info.update(
            backlog=getattr(sock, "backlog", None),
            host=getattr(sock, "host", None),
            port=getattr(sock, "port", None),
        )
    return info


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    registry = getattr(arbiter, "sockets", None)
    if registry is None:
        socks: list[dict[str, Any]] = []
    elif hasattr(registry, "describe_live"):
        socks = [dict(entry) for entry in await registry.describe_live()]
    elif hasattr(registry, "describe"):
        socks = [dict(entry) for entry in registry.describe()]
    else:
        socks = [describe(s) for s in registry.values()]
    socks.sort(key=lambda s: (s["fd"] is None, s["fd"] or 0))
    return {"sockets": socks}
