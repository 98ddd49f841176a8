"""The order watchers start in (stop is its reverse); pure, shared by the arbiter and the prestart plan."""

from __future__ import annotations

from typing import Any


def start_key(cfg: Any) -> tuple[int, str]:
    """Sort key of watcher config `cfg`: the bigger `priority` first, equal priorities by name.

    Circus's get_config sorts the watchers by name, and its arbiter then sorts them by priority with a
    stable sort: ties start in name order (plain string order, as Circus's `sort(key=name)`).
    """
    return -cfg.priority, cfg.name
