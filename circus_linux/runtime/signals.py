"""Signals as data: block them, read them from a signalfd on the loop, hand each to handle_<name>()."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from circus_linux.kernel import native

if TYPE_CHECKING:
    import asyncio  # block() runs before circusd imports asyncio (runtime/prestart.py spawns in between)

# Everything circusd reacts to. They are blocked in every thread (block before any thread starts) so the
# kernel queues them on the signalfd instead of interrupting Python at a random bytecode.
HANDLED = (
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def block() -> None:
    native.block_signals(HANDLED)


class SignalReader:
    """Owns the signalfd; dispatches each signal to `target.handle_<name>()` if the target has one."""

    def __init__(self, target: object, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # Imported here, not at the top: block() runs before the prestart's spawns, which need neither.
        import asyncio
        import logging

        self._log = logging.getLogger("circus_linux.signals")
        self._target = target
        self._loop = loop or asyncio.get_running_loop()
        self._fd = native.signalfd_open(HANDLED)
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        for signo in native.signalfd_read(self._fd):
            name = signal.Signals(signo).name.lower().removeprefix("sig")
            handler: Callable[[], None] | None = getattr(self._target, f"handle_{name}", None)
            if handler is None:
                self._log.info("ignoring signal %s", signal.Signals(signo).name)
                continue
            try:
                handler()
            except Exception:  # a handler bug must not stop signal delivery for good
                self._log.exception("handler for %s failed", signal.Signals(signo).name)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
