"""The names of the control commands, alone: clients need them without importing every handler."""

from __future__ import annotations

# Module names under control/commands equal the wire names (Circus does the same).
NAMES = (
    "add", "rm", "start", "stop", "restart", "reload", "reloadconfig", "quit", "incr", "decr",
    "numprocesses", "numwatchers", "list", "listsockets", "status", "stats", "dstats", "options",
    "get", "set", "globaloptions", "signal", "kill", "upgrade", "logs",
)  # fmt: skip
