"""Exception hierarchy and circusd exit codes; imports nothing internal."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Documented circusd exit codes (also sent to systemd as ERRNO= where relevant)."""

    OK = 0
    CONFIG = 1  # the configuration is invalid (--check, or at start)
    RUNTIME = 2  # the arbiter itself failed (cannot bind an endpoint, cannot set up signalfd, ...)
    USAGE = 64  # bad command line (EX_USAGE)


class CircusError(Exception):
    """Base of every error circus-linux raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config: where it is and what was expected."""

    file: str
    section: str | None
    key: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.section is not None:
            parts.append(f"[{self.section}]")
        if self.key is not None:
            parts.append(self.key)
        return " ".join(parts) + ": " + self.message


class ConfigError(CircusError):
    """The configuration is invalid; carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UnknownWatcher(CircusError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"program {name} not found")


class CommandError(CircusError):
    """A control command could not be carried out (maps to errno 5 on the wire)."""


class ReloadAbandoned(CommandError):
    """A graceful reload gave way to a stop (stop, restart, rm, circusd's shutdown) before it was over."""


class MessageError(CircusError):
    """A control message is malformed (maps to errno 3/6 on the wire); names the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message if field is None else f"{field}: {message}")
