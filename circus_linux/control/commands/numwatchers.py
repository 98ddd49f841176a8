"""numwatchers: how many watchers circusd has.

Request properties: none.
Reply: `{"numwatchers": N}`.
CLI: `circusctl numwatchers`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.protocol import Prop

NAME = "numwatchers"
PROPERTIES: tuple[Prop, ...] = ()


async def execute(arbiter: Any, props: Mapping[str, Any]) -> dict[str, Any]:
    return {"numwatchers": len(arbiter.watchers)}
