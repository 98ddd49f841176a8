"""A user stream class named by dotted path, called as Circus calls it: stream({'data', 'pid', 'name'})."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from circus_linux.streams.base import Chunk, Stream


def load_dotted(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if not module:
        raise ValueError(f"expected a dotted path module.Class, got {path!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load stream class {path!r}: {exc}") from exc


class UserStream(Stream):
    """Wraps an instance of a user class: one call per chunk with Circus's data dict; close() if any."""

    def __init__(self, target: Any) -> None:
        if not callable(target):
            raise ValueError(f"stream class instance {target!r} is not callable")
        self.target = target

    def write(self, chunks: Sequence[Chunk]) -> None:
        for c in chunks:
            self.target({"data": c.payload(), "pid": c.pid, "name": c.kind, "wid": c.wid, "time": c.time})

    def close(self) -> None:
        close = getattr(self.target, "close", None)
        if callable(close):
            close()
