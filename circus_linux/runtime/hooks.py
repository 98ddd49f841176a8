"""Run a watcher's Circus hooks (`hooks.<name> = dotted.func[, ignore_errors]`) off the event loop.

Each call runs in its own daemon thread with a deadline, so a slow or stuck hook delays only the watcher
that waits on it: the loop, the reaper and every other watcher go on. A thread cannot be killed: a hook
that outlives its deadline is abandoned (it counts as failed) and finishes, or not, on its own; daemon
threads never hold circusd's exit. Hooks get `hook(watcher, arbiter, hook_name, **kwargs)` as in Circus;
they may read the watcher but must not change it (they run outside the loop's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("circus_linux.hooks")

DEFAULT_TIMEOUT = 30.0
# Hooks whose falsy result changes what the watcher does (Circus semantics); the others are only informed.
DECIDING = frozenset({"before_start", "after_start", "before_spawn", "after_spawn", "before_signal"})
# Hooks whose failure (an exception, a timeout) counts as success whatever the section says: Circus 0.19's
# Watcher starts `ignore_hook_failure` with these, and `hooks.X = f, true` only adds X to that list (a
# `, false` never takes one out). So a bug in a before_signal hook never vetoes a stop's stop_signal; only
# a falsy *return value* does.
IGNORED_FAILURES = frozenset({"before_stop", "after_stop", "before_signal", "after_signal", "extended_stats"})

Emit = Callable[[str, dict[str, Any]], None]

_resolved: dict[str, Callable[..., Any]] = {}
_resolve_lock = threading.Lock()


def resolve(target: str) -> Callable[..., Any]:
    """Import `package.module.function` once (in the hook thread, so an import never blocks the loop)."""
    with _resolve_lock:
        fn = _resolved.get(target)
        if fn is not None:
            return fn
        module_name, _, attr = target.rpartition(".")
        if not module_name:
            raise ImportError(f"{target!r}: expected package.module.function")
        fn = getattr(importlib.import_module(module_name), attr, None)
        if not callable(fn):
            raise ImportError(f"{target!r}: {module_name}.{attr} is not callable")
        _resolved[target] = fn
        return fn


class HookTimeout(Exception):
    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"hook {name} did not return within {timeout:g}s")


async def _in_thread(fn: Callable[[], Any], name: str) -> Any:
    """Run fn in a fresh daemon thread and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():  # the caller timed out or was cancelled
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:  # a hook may raise anything, SystemExit included: it is data here
            _post(loop, deliver, False, exc)
        else:
            _post(loop, deliver, True, result)

    threading.Thread(target=body, name=f"circus-hook-{name}", daemon=True).start()
    return await future


def _post(
    loop: asyncio.AbstractEventLoop, deliver: Callable[[bool, Any], None], ok: bool, value: Any
) -> None:
    # RuntimeError: the loop closed while the hook ran (circusd exiting): nobody waits any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(deliver, ok, value)


async def run_hook(
    hooks: Mapping[str, Any],
    hook_name: str,
    watcher: Any,
    arbiter: Any,
    emit: Callable[..., None],
    timeout: float = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> bool:
    """Call `hooks[hook_name]` if configured; True means "go on".

    Circus semantics: no hook -> True; the hook's result, taken as a bool; a hook that raises (or times out)
    -> hook_failure event and the result is True for the IGNORED_FAILURES hooks, else its `ignore_error`
    flag. `emit(event, **payload)` is the
    watcher's own event function (topics watcher.<name>.hook_success / hook_failure).
    """
    cfg = hooks.get(hook_name)
    if cfg is None:
        return True
    target: str = cfg.target
    ignore_error = hook_name in IGNORED_FAILURES or bool(getattr(cfg, "ignore_error", False))

    def call() -> Any:
        return resolve(target)(watcher=watcher, arbiter=arbiter, hook_name=hook_name, **kwargs)

    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):  # not wait_for: 3.11's can lose a cancel (runtime/watcher.py)
            result = await _in_thread(call, hook_name)
    except TimeoutError:
        return _failed(emit, hook_name, target, HookTimeout(hook_name, timeout), ignore_error)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return _failed(emit, hook_name, target, exc, ignore_error)
    log.debug(
        "hook %s (%s) returned %r in %.1f ms", hook_name, target, result, 1000 * (time.monotonic() - started)
    )
    emit("hook_success", name=hook_name)
    return bool(result)


def _failed(emit: Callable[..., None], hook_name: str, target: str, exc: BaseException, ignore: bool) -> bool:
    log.error("hook %s (%s) failed%s: %s", hook_name, target, " (ignored)" if ignore else "", exc)
    emit("hook_failure", name=hook_name, error=f"{type(exc).__name__}: {exc}")
    return ignore
