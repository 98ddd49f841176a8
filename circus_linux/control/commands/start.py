"""start: start one watcher, the watchers a pattern selects, or all of them.

Request properties:
  name     (string, optional)  watcher name or pattern; every watcher when absent
  match    ("simple" | "glob" | "regex", default "glob")  how `name` selects watchers
  waiting  (bool, default false)  reply when every selected watcher has started
Reply: `{"status": "ok"}`; with waiting, `{"info": {watcher: status}}`.
Errors: errno 3 "program NAME not found" when nothing matches.
Watchers start one after the other, in the arbiter's start order (priority, then name: core/order.py).
CLI: `circusctl start [name] [--match=glob] [--waiting]`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.control.commands.base import Action, select_watchers, statuses
from circus_linux.control.protocol import Kind, Prop
from circus_linux.core.order import start_key

NAME = "start"
PROPERTIES = (Prop("name", Kind.STR), Prop("match", Kind.MATCH), Prop("waiting", Kind.BOOL))


async def execute(arbiter: Any, props: Mapping[str, Any]) -> Action:
    watchers = sorted(select_watchers(arbiter, props), key=lambda w: start_key(w.config))

    async def run() -> None:
        for watcher in watchers:
            await watcher.start()

    return Action(run, finish=lambda _: {"info": statuses(watchers)})
