"""diff(old, new): what a reloadconfig has to do, as data; pure, compares frozen Configs only.

A watcher whose only difference is numprocesses is `scaled` (no restart needed); any other difference,
including its merged env, hooks, streams or sockets list, makes it `changed`. A socket whose options
changed is in `sockets_changed`; the runtime decides which watchers using it to restart. `circus_changed`
names [circus] options that differ: the runtime cannot apply those live (endpoints, umask, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from circus_linux.config.model import Config


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)
T = TypeVar("T")


@dataclass(frozen=True)
class ConfigDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    scaled: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # name -> (old n, new n)
    changed: tuple[str, ...] = ()
    circus_changed: tuple[str, ...] = ()
    sockets_added: tuple[str, ...] = ()
    sockets_removed: tuple[str, ...] = ()
    sockets_changed: tuple[str, ...] = ()
    plugins_added: tuple[str, ...] = ()
    plugins_removed: tuple[str, ...] = ()
    plugins_changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))


def _by_name(items: Sequence[N]) -> dict[str, N]:
    return {i.name: i for i in items}


def _compare(old: Sequence[N], new: Sequence[N]) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    """(added, removed, names in both) in the new config's order (removed in the old one's)."""
    o, n = _by_name(old), _by_name(new)
    added = tuple(k for k in n if k not in o)
    removed = tuple(k for k in o if k not in n)
    return added, removed, [k for k in n if k in o]


def _changed(old: Sequence[Any], new: Sequence[Any], both: list[str]) -> tuple[str, ...]:
    o, n = _by_name(old), _by_name(new)
    return tuple(k for k in both if _parsed(o[k]) != _parsed(n[k]))


def _parsed(item: T) -> T:
    """The dataclass without its `raw` text, so '02' and '2' or 'TERM' and '15' compare equal."""
    return dataclasses.replace(item, raw={})  # type: ignore[type-var]


def diff(old: Config, new: Config) -> ConfigDiff:
    added, removed, both = _compare(old.watchers, new.watchers)
    ow, nw = _by_name(old.watchers), _by_name(new.watchers)
    scaled: dict[str, tuple[int, int]] = {}
    changed: list[str] = []
    for name in both:
        # compare parsed values, not spellings: every raw key is also a parsed field or in `extra`
        a, b = _parsed(ow[name]), _parsed(nw[name])
        if a == b:
            continue
        if dataclasses.replace(a, numprocesses=b.numprocesses) == b:
            scaled[name] = (a.numprocesses, b.numprocesses)
        else:
            changed.append(name)
    circus_changed = tuple(
        f.name for f in dataclasses.fields(old.circus)
        if f.name != "raw" and getattr(old.circus, f.name) != getattr(new.circus, f.name)
    )
    s_added, s_removed, s_both = _compare(old.sockets, new.sockets)
    p_added, p_removed, p_both = _compare(old.plugins, new.plugins)
    return ConfigDiff(
        added=added,
        removed=removed,
        scaled=scaled,
        changed=tuple(changed),
        circus_changed=circus_changed,
        sockets_added=s_added,
        sockets_removed=s_removed,
        sockets_changed=_changed(old.sockets, new.sockets, s_both),
        plugins_added=p_added,
        plugins_removed=p_removed,
        plugins_changed=_changed(old.plugins, new.plugins, p_both),
    )

