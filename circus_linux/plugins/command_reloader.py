"""CommandReloader: restart a watcher when the file its `cmd` runs changes (mtime or inode); wire only.

Options: loop_rate (1 s between looks), watchers_regex (default every watcher but the plugins).
The executable is the first word of `cmd` (after `executable` if set), looked up in PATH when relative.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from typing import Any

from circus_linux.plugins.base import CircusPlugin, Frame, option

log = logging.getLogger("circus_linux.plugins.command_reloader")


class CommandReloader(CircusPlugin):
    name = "command_reloader"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loop_rate = option(self.config, "loop_rate", 1.0, float)
        self.watchers_regex = re.compile(option(self.config, "watchers_regex", r"^(?!plugin:)"))
        self.seen: dict[str, tuple[str, int, int]] = {}  # watcher -> (path, mtime_ns, inode)

    def handle_init(self) -> None:
        # The first look happens before the plugin says READY=1: a change made after that is always seen.
        self.look_after()
        self.loop.call_every(self.loop_rate, self.look_after)

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        watcher, action, _msg = self.split_data(data)
        if action in ("remove", "updated"):
            self.seen.pop(watcher, None)

    @staticmethod
    def executable(options: dict[str, Any]) -> str | None:
        cmd = str(options.get("executable") or options.get("cmd") or "")
        try:
            words = shlex.split(cmd)
        except ValueError:
            return None
        if not words:
            return None
        path = words[0] if os.sep in words[0] else shutil.which(words[0])
        return os.path.realpath(path) if path else None

    def look_after(self) -> None:
        for watcher in self.call("list").get("watchers") or []:
            if not self.watchers_regex.search(watcher):
                continue
            path = self.executable(self.call("options", name=watcher).get("options") or {})
            if path is None:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # being replaced right now: look again next time
            current = (path, st.st_mtime_ns, st.st_ino)
            before = self.seen.get(watcher)
            self.seen[watcher] = current
            if before is not None and before != current:
                log.info("command_reloader: %s changed: restarting %s", path, watcher)
                self.call("restart", name=watcher)
