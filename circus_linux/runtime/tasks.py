"""What circusd's asyncio tasks are waiting on, grouped: the `tasks` field of `dstats`; pure, no I/O.

A command that gets no reply, or a watcher that does not move, is a task waiting on something: a lock
held by another command, a pass of a manager that is gone, a timer. Each task's chain of awaited
coroutines (its frames, innermost last) says which; tasks with the same chain are counted together, so
hundreds of commands queued on one watcher's lock read as one line.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
from typing import Any

MAX_DEPTH = 30  # coroutine frames followed per task


def chain(coro: Any) -> list[str]:
    """`file:line qualname` of each coroutine frame a task is suspended in, outermost first."""
    frames: list[str] = []
    while coro is not None and len(frames) < MAX_DEPTH:
        frame = _frame(coro)
        if frame is None:
            break
        code = frame.f_code
        frames.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_qualname}")
        inner = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        inner = inner or getattr(coro, "ag_await", None)
        if inner is not None and _frame(inner) is None:
            # `async with` on an asynccontextmanager awaits its generator's asend(), which does not show
            # the generator: the context manager (the frame's self) holds it as `gen`.
            gen = getattr(frame.f_locals.get("self"), "gen", None)
            inner = gen if gen is not None and _frame(gen) is not None else inner
        coro = inner
    return frames


def _frame(obj: Any) -> Any:
    return getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)


def census(limit: int = 10) -> dict[str, Any]:
    """The running loop's tasks: how many, and the `limit` most common (name, chain) groups."""
    groups: collections.Counter[tuple[str, tuple[str, ...]]] = collections.Counter()
    tasks = asyncio.all_tasks()
    for task in tasks:
        # Task-123 and control-restart: the kind of task, not its serial number
        name = re.sub(r"-\d+$", "", task.get_name())
        groups[(name, tuple(chain(task.get_coro())))] += 1
    return {
        "count": len(tasks),
        "groups": [
            {"count": n, "name": name, "chain": list(frames)}
            for (name, frames), n in groups.most_common(limit)
        ],
    }
