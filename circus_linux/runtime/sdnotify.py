"""circusd's notifier to systemd: kernel.notify.Notifier whose send errors are logged, never raised.

Must not decide what to send or when (the arbiter does); it only makes a failed send harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from circus_linux.kernel.notify import Notifier

log = logging.getLogger("circus_linux.sdnotify")


class SafeNotifier(Notifier):
    """A notification that cannot be delivered (the receiver is gone: ECONNREFUSED/ENOENT, or a full queue
    on a non-systemd receiver) is a log line, not an exception: a supervisor must never fail a reload or
    its own shutdown because nobody listens any more. The first failure is a warning, the rest debug.
    """

    def __init__(self, address: str | None) -> None:
        super().__init__(address)
        self.failures = 0

    def _send(self, payload: bytes, fds: Sequence[int]) -> bool:
        try:
            return super()._send(payload, fds)
        except OSError as exc:
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            first = payload.split(b"\n", 1)[0].decode(errors="replace")
            log.log(level, "cannot notify %s (%s...): %s", self.address, first, exc)
            return False
