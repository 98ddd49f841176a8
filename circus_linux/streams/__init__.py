"""The output stream classes and make_stream(cls, options): name or dotted path in, Stream out; no threads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.streams.base import HUB_OPTIONS, STDERR, STDOUT, Chunk, Stream, opt_bool
from circus_linux.streams.console import FancyStdoutStream, StdoutStream
from circus_linux.streams.files import FileStream, TimedRotatingFileStream, WatchedFileStream, file_options
from circus_linux.streams.journal import JournalStream
from circus_linux.streams.user import UserStream, load_dotted

CLASSES: Mapping[str, type[Stream]] = {
    "FileStream": FileStream,
    "WatchedFileStream": WatchedFileStream,
    "TimedRotatingFileStream": TimedRotatingFileStream,
    "StdoutStream": StdoutStream,
    "FancyStdoutStream": FancyStdoutStream,
    "JournalStream": JournalStream,
    "journal": JournalStream,
    "journal-direct": JournalStream,
}


def canonical(cls: str) -> str:
    """Circus accepts `circus.stream.FileStream` as well as `FileStream`."""
    return cls[len("circus.stream.") :] if cls.startswith("circus.stream.") else cls


def is_direct(cls: str, options: Mapping[str, Any]) -> bool:
    """journal-direct, or a journal class with direct = true: the worker writes to journald itself."""
    name = canonical(cls)
    if name == "journal-direct":
        return True
    return CLASSES.get(name) is JournalStream and opt_bool(options, "direct", False)


def make_stream(cls: str, options: Mapping[str, Any]) -> Stream:
    """Instantiate a stream; ValueError (with the reason) for an unknown class, bad options or a class whose
    constructor raised; OSError when a file cannot be opened."""
    name = canonical(cls)
    kwargs = {k: v for k, v in options.items() if k not in HUB_OPTIONS}
    known = CLASSES.get(name)
    try:
        if known is not None:
            if issubclass(known, FileStream):
                if not kwargs.get("filename"):
                    raise ValueError(f"{name} needs a filename")
                return known(**file_options(kwargs))
            return known(**kwargs)
        target = load_dotted(name)
        return UserStream(target(**kwargs))
    except (OSError, ValueError):
        raise
    except Exception as exc:  # a user's class may raise anything: a failed spawn, not a failed reconcile pass
        raise ValueError(f"stream {name}: {type(exc).__name__}: {exc}") from exc


__all__ = [
    "CLASSES", "STDERR", "STDOUT", "Chunk", "FancyStdoutStream", "FileStream", "JournalStream",
    "StdoutStream", "Stream", "TimedRotatingFileStream", "UserStream", "WatchedFileStream",
    "canonical", "is_direct", "make_stream",
]  # fmt: skip
