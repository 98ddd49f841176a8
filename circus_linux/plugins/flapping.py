"""Flapping: stop a watcher whose workers die too often, retry later, give up after max_retry; wire only.

Options (Circus's, also per watcher as `flapping.<option>` in its [watcher:NAME] section, read through the
`options` command and refreshed on its `updated` event):
  attempts (2)   reaps that make a burst
  window (1)     seconds: `attempts` reaps within `window` = flapping
  retry_in (7)   seconds to wait before starting the watcher again
  max_retry (5)  consecutive flapping episodes retried before leaving the watcher stopped (-1: forever);
                 a burst of `attempts` reaps that is not flapping sets the count back to 0, as in Circus
  active (true)  false: leave this watcher alone (`flapping.active = false`); for the whole plugin,
                 `active = false` in [plugin:NAME] (CircusPlugin: it does not run)
The per-watcher options are asked again after the watcher's `updated`, `reload` or `start` event, so a
reloadconfig that changes them (which brings reload or start, not updated) is seen.
Circus subtracted check_delay from the burst duration because it reaped on a timer; circusd reaps at once,
so the duration is the real one. Plugin watchers (`plugin:*`) are never stopped by this plugin.
"""

from __future__ import annotations

import logging
from typing import Any

from circus_linux.plugins.base import CircusPlugin, Frame, option, to_bool
from circus_linux.plugins.loop import Timer

log = logging.getLogger("circus_linux.plugins.flapping")

DEFAULTS: dict[str, float] = {"attempts": 2, "window": 1.0, "retry_in": 7.0, "max_retry": 5}


class Flapping(CircusPlugin):
    name = "flapping"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.defaults: dict[str, float | bool] = {
            k: option(self.config, k, v, float) for k, v in DEFAULTS.items()
        }
        self.defaults["active"] = self.active
        self.timelines: dict[str, list[float]] = {}
        self.tries: dict[str, int] = {}
        self.timers: dict[str, Timer] = {}
        self._conf: dict[str, dict[str, float | bool]] = {}

    def handle_stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        watcher, action, msg = self.split_data(data)
        if watcher.startswith("plugin:"):
            return
        if action == "reap":
            message = self.load_message(msg)
            self.timelines.setdefault(watcher, []).append(float(message.get("time", 0.0)))
            self.check(watcher)
        elif action in ("updated", "reload", "start"):
            # reloadconfig of a changed section brings `reload` (or `start`, when it was stopped), not
            # `updated`: its flapping.* options may have changed too.
            self._conf.pop(watcher, None)
        elif action == "remove":
            self._forget(watcher)

    def _forget(self, watcher: str) -> None:
        self.timelines.pop(watcher, None)
        self.tries.pop(watcher, None)
        self._conf.pop(watcher, None)
        timer = self.timers.pop(watcher, None)
        if timer is not None:
            timer.cancel()

    def conf(self, watcher: str) -> dict[str, float | bool]:
        """The plugin's options overlaid with the watcher's `flapping.*` options (asked once, cached)."""
        cached = self._conf.get(watcher)
        if cached is not None:
            return cached
        conf = dict(self.defaults)
        reply = self.call("options", name=watcher)
        for key, value in (reply.get("options") or {}).items():
            if not (isinstance(key, str) and key.startswith("flapping.") and key[9:] in conf):
                continue
            boolean = key == "flapping.active"
            try:
                conf[key[9:]] = to_bool(value) if boolean else float(value)
            except (TypeError, ValueError):
                what = "a boolean" if boolean else "a number"
                log.warning("watcher %s: %s=%r is not %s, ignored", watcher, key, value, what)
        self._conf[watcher] = conf
        return conf

    def check(self, watcher: str) -> None:
        timeline = self.timelines[watcher]
        conf = self.conf(watcher)
        if not conf["active"]:
            timeline.clear()
            return
        attempts = max(int(conf["attempts"]), 1)
        if len(timeline) < attempts:
            return
        del timeline[:-attempts]
        if timeline[-1] - timeline[0] > conf["window"]:
            timeline.pop(0)  # the window slides
            # Not flapping: max_retry counts consecutive flapping episodes, as in Circus, so a watcher
            # that flaps now and then is not left stopped for good at its max_retry-th episode.
            self.tries[watcher] = 0
            return
        timeline.clear()
        tries = self.tries.get(watcher, 0)
        max_retry = int(conf["max_retry"])
        if max_retry < 0 or tries < max_retry:
            log.info(
                "%s: flapping detected: retry in %gs (%d/%s)",
                watcher,
                conf["retry_in"],
                tries + 1,
                "inf" if max_retry < 0 else max_retry,
            )
            self.tries[watcher] = tries + 1
            self.call("stop", name=watcher)
            previous = self.timers.pop(watcher, None)
            if previous is not None:
                previous.cancel()
            self.timers[watcher] = self.loop.call_later(conf["retry_in"], lambda: self._retry(watcher))
        else:
            log.info("%s: flapping detected: reached max_retry=%d, leaving it stopped", watcher, max_retry)
            self.tries[watcher] = 0
            self.call("stop", name=watcher)

    def _retry(self, watcher: str) -> None:
        self.timers.pop(watcher, None)
        self.timelines[watcher] = []
        log.info("%s: starting again after flapping", watcher)
        self.cast("start", name=watcher)
