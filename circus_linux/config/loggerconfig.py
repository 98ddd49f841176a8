"""Whether `[circus] loggerconfig` names a logging config circusd can apply; reads that file, nothing else.

Circus's util.configure_logger applies `*.ini` with logging.config.fileConfig, `*.json` with dictConfig
and `*.yaml` with dictConfig through PyYAML (not a dependency of circus-linux), and refuses other names;
the value `default` means circusd's own setup. The path is relative to circusd's working directory, as in
Circus (os.path.abspath). This checks what can be checked without importing logging: the name, the file,
and its syntax; what its handlers do is only known when circusd applies it (cli/logsetup.py).
"""

from __future__ import annotations

import importlib.util
import os

FORMATS = (".ini", ".json", ".yaml")


def is_default(value: str | None) -> bool:
    """True when circusd sets its logging up itself: no loggerconfig, or Circus's `default`."""
    return value is None or value.strip().lower() in ("", "default")


def has_yaml() -> bool:
    return importlib.util.find_spec("yaml") is not None


def problem(value: str) -> str | None:
    """What makes `value` unusable as a loggerconfig, or None when it looks applicable."""
    path = os.path.abspath(value.strip())
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        return f"expected a logging config file named *.ini, *.json or *.yaml, got {value!r}"
    if ext == ".yaml" and not has_yaml():
        return (f"{value!r} is a YAML logging config, which needs PyYAML: it is not installed "
                "(pip install PyYAML, or write it as .json or .ini)")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot read the logging config {path}: {reason}"
    if ext == ".json":
        import json

        try:
            data = json.loads(text)
        except ValueError as exc:
            return f"{path} is not valid JSON: {exc}"
        if not isinstance(data, dict):
            return f"{path}: expected a JSON object (a logging.config.dictConfig schema)"
    elif ext == ".ini":
        import configparser

        parser = configparser.RawConfigParser()
        try:
            parser.read_string(text, path)
        except configparser.Error as exc:
            return f"{path} is not a valid ini file: {exc}"
        missing = [s for s in ("loggers", "handlers", "formatters") if not parser.has_section(s)]
        if missing:
            return f"{path}: a logging.config.fileConfig file needs [{'], ['.join(missing)}]"
    return None
