"""circusd's notifier to systemd: kernel.notify.Notifier whose send errors are logged, never raised.

Must not decide what to send or when (the arbiter does); it only makes a failed send harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from circus_linux.kernel.notify import Notifier

log = logging.getLogger("circus_linux.sdnotify")

# The longest READY=1, RELOADING=1, STOPPING=1 or an fd store message may wait for room in the receiver's
# queue, holding the event loop: systemd drains its notify socket at once, so this is for a receiver that
# does not read at all, which must cost seconds, not the whole supervisor.
SEND_TIMEOUT = 5.0


class SafeNotifier(Notifier):
    """A notification that cannot be delivered (the receiver is gone: ECONNREFUSED/ENOENT, or its queue
    stayed full for SEND_TIMEOUT) is a log line, not an exception: a supervisor must never fail a reload or
    its own shutdown because nobody listens any more, nor hang its event loop on a receiver that does not
    read (a test harness, a wedged manager). The first failure is a warning, the rest debug. The arbiter
    sends STATUS= and WATCHDOG=1 with notify_or_drop: those are dropped at once, and counted.
    """

    def __init__(self, address: str | None, *, timeout: float | None = SEND_TIMEOUT) -> None:
        try:
            super().__init__(address, timeout=timeout)
        except ValueError as exc:  # 'vsock:...', a relative path: a warning and no notifications, not a crash
            log.warning("NOTIFY_SOCKET ignored: %s", exc)
            super().__init__(None, timeout=timeout)
        self.failures = 0
        self.dropped = 0

    def _send(self, payload: bytes, fds: Sequence[int], wait: bool = True) -> bool:
        try:
            sent = super()._send(payload, fds, wait)
        except OSError as exc:
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            first = payload.split(b"\n", 1)[0].decode(errors="replace")
            log.log(level, "cannot notify %s (%s...): %s", self.address, first, exc)
            return False
        if not sent and self.enabled:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("notify %s: the receiver's queue is full: STATUS/WATCHDOG dropped", self.address)
        return sent
