"""A small line-tracking ini reader with configparser's syntax; text in, sections out, no file access.

Syntax kept from Circus's StrictConfigParser (a RawConfigParser): `[section]` headers, `key = value` or
`key: value`, whole-line comments starting with `#` or `;`, indented continuation lines joined with a
newline, no `%` interpolation (`%%` stays `%%`, as in Circus). Inline comments as in Circus: when the
first `;` of a value follows whitespace, it and what comes after are a comment (`numprocesses = 5  ; five`);
when it does not (`sh -c 'a; b ; c'`), the whole line is the value; any `#` is part of the value (commands
contain them). Continuation lines are kept whole, as in Circus (a multi-line shell command keeps its
` ;`). A value written exactly `""` is the empty string.

Differences from configparser(strict=False), decided on purpose:
- a key written twice in the same section of the same file is an error (configparser strict=False keeps the
  last silently; that hides typos), a section header repeated in one file merges into the first;
- a key given in a later (included) file overrides the earlier one without complaint: that is what include
  is for;
- option names are lowercased except in `[env]`/`[env:...]` sections, whose keys keep their case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from circus_linux.errors import ConfigIssue

_SECTION = re.compile(r"\[(?P<name>[^\]]*)\]\s*$")
_OPTION = re.compile(r"(?P<key>[^=:\s][^=:]*?)\s*[=:]\s*(?P<value>.*)$")


def _value(text: str) -> str:
    """A value as written, without its inline comment and outer whitespace (the rule in the docstring)."""
    text = text.strip()
    pos = text.find(";")
    if pos > 0 and text[pos - 1].isspace():
        text = text[:pos].rstrip()
    return text


@dataclass(frozen=True)
class Entry:
    """One key as written: its value, and where it was written (for error messages)."""

    key: str
    value: str
    file: str
    line: int


@dataclass
class Section:
    """A section's entries in the order first written; `file`/`line` of its first header."""

    name: str
    file: str
    line: int
    entries: dict[str, Entry] = field(default_factory=dict)


def is_env_section(name: str) -> bool:
    return name == "env" or name.startswith("env:")


def parse(text: str, path: str) -> tuple[list[Section], list[ConfigIssue]]:
    """Parse one file's text; returns its sections in order and every syntax issue found."""
    sections: dict[str, Section] = {}
    issues: list[ConfigIssue] = []
    current: Section | None = None
    last: Entry | None = None  # the entry an indented line continues
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if line[0].isspace() and last is not None and current is not None:
            last = Entry(last.key, (last.value + "\n" + stripped).strip(), last.file, last.line)
            current.entries[last.key] = last
            continue
        header = _SECTION.match(stripped)
        if header:
            name = header.group("name").strip()
            last = None
            if not name:
                issues.append(ConfigIssue(path, None, None, "expected a section name inside [ ]", lineno))
                current = None
                continue
            current = sections.get(name)
            if current is None:
                current = sections[name] = Section(name, path, lineno)
            continue
        opt = _OPTION.match(stripped)
        if opt is None:
            issues.append(ConfigIssue(path, current.name if current else None, None,
                                      f"expected 'key = value' or '[section]', got {stripped!r}", lineno))
            last = None
            continue
        if current is None:
            issues.append(ConfigIssue(path, None, opt.group("key"),
                                      "expected a [section] header before the first key", lineno))
            last = None
            continue
        key = opt.group("key").strip()
        if not is_env_section(current.name):
            # Circus watcher/socket/circus options are case-insensitive (configparser lowercased them)
            key = key.lower()
        if key in current.entries:
            first = current.entries[key]
            issues.append(ConfigIssue(path, current.name, key,
                                      f"duplicate key (first set at line {first.line})", lineno))
            last = None
            continue
        value = _value(opt.group("value"))
        if value == '""':
            value = ""  # Circus's way of writing an empty value (`args = ""`)
        last = current.entries[key] = Entry(key, value, path, lineno)
    return list(sections.values()), issues


def merge(files: list[list[Section]]) -> list[Section]:
    """Merge several files' sections: same-named sections merge, later files override keys.

    Order is the order in which each section name first appears; a merged section remembers the header of
    its first appearance.
    """
    merged: dict[str, Section] = {}
    for sections in files:
        for sec in sections:
            target = merged.get(sec.name)
            if target is None:
                target = merged[sec.name] = Section(sec.name, sec.file, sec.line)
            target.entries.update(sec.entries)
    return list(merged.values())
