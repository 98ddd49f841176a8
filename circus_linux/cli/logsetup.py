"""circusd's own logging: the log output opened before any worker is spawned (without importing logging),
its handler made once the prestart is done, or `[circus] loggerconfig` applied instead, as in Circus.

The output is opened first so that one circusd cannot use (a file in a missing directory, `journal`
without python-systemd) is a configuration error before anything runs; logging itself (~7 ms of imports
here) still waits until the prestart's workers exec. A loggerconfig replaces loglevel and logoutput
(Circus's util.configure_logger): it is applied before the prestart, so a logger config that fails spawns
nothing; circusd then imports logging before its first spawn.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TextIO

STD_OUTPUTS = (None, "-", "stderr", "stdout")
_FORMAT = "%(asctime)s circusd[%(process)d] %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class LogOutput:
    """Where circusd logs: `name` as given (None, '-', 'stderr', 'stdout', 'journal' or a path), and for a
    path the file, already open for appending."""

    name: str | None
    stream: TextIO | None = None


def open_output(output: str | None) -> LogOutput:
    """Open the log output. OSError for a file that cannot be opened, ModuleNotFoundError for `journal`
    without python-systemd; imports neither logging nor systemd.journal (which imports logging)."""
    if output in STD_OUTPUTS:
        return LogOutput(output)
    if output == "journal":
        if not _journal_ok():
            raise ModuleNotFoundError("python-systemd is not installed", name="systemd.journal")
        return LogOutput(output)
    assert output is not None
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    return LogOutput(output, open(fd, "a", encoding="utf-8", errors="backslashreplace"))


def _journal_ok() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("systemd.journal") is not None
    except ModuleNotFoundError:  # no `systemd` package at all
        return False


def setup(level: str | None, out: LogOutput) -> None:
    """circusd's handler on the root logger: stderr (the journal under systemd), stdout, the journal, or
    the file `out` opened."""
    import logging

    lvl = getattr(logging, (level or "info").upper(), logging.INFO)
    handler: logging.Handler
    name = out.name
    if name in STD_OUTPUTS and os.environ.get("JOURNAL_STREAM") and _journal_ok():
        name = "journal"
    if name == "journal":
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="circusd")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        stream = out.stream or (sys.stdout if name == "stdout" else sys.stderr)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)


def apply_loggerconfig(value: str) -> None:
    """Apply a Circus loggerconfig (the loader checked its name, file and syntax: config/loggerconfig.py).
    ValueError with the reason when logging refuses it."""
    import configparser
    import json
    import logging.config

    path = os.path.abspath(value.strip())
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".ini":
            logging.config.fileConfig(path, disable_existing_loggers=True)
        elif ext == ".json":
            with open(path, encoding="utf-8") as fh:
                logging.config.dictConfig(json.load(fh))
        elif ext == ".yaml":
            import yaml  # PyYAML: optional, the loader refused a .yaml file without it

            with open(path, encoding="utf-8") as fh:
                try:
                    schema = yaml.safe_load(fh)
                except yaml.YAMLError as exc:
                    raise ValueError(f"not valid YAML: {exc}") from None
            logging.config.dictConfig(schema)
        else:
            raise ValueError(f"expected a *.ini, *.json or *.yaml file, got {value!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, configparser.Error) as exc:
        raise ValueError(f"cannot apply the logging config {path}: {exc}") from None
