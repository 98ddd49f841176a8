"""The [env] / [env:NAMES] rules: which sections apply to a watcher, in what order; pure, no os.environ.

Precedence (later wins): every `[env]` key, then `[env:...]` sections that match the watcher only through a
glob pattern (`[env:web*]`), then sections that name the watcher exactly (`[env:web]`, `[env:web,api]`);
within one rank, file order (order of first appearance, includes after the including file). Names match
case-insensitively, as Circus lowercased them. Values expand `$VAR`/`${VAR}` first from keys already set for
that watcher (earlier keys, earlier sections), then from the environ given to the loader; unknown names
stay verbatim. `$(circus.env.X)` inside a value is expanded the same way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from circus_linux.config.ini import Entry, Section
from circus_linux.config.substitute import expand_vars, render

GLOBAL, PATTERN, EXACT = 0, 1, 2


@dataclass(frozen=True)
class EnvSection:
    """One env section: its targets (empty = [env], every watcher) and its entries in written order."""

    name: str
    targets: tuple[str, ...]
    entries: tuple[Entry, ...]
    file: str = ""
    line: int | None = None

    def rank(self, watcher: str) -> int | None:
        """How strongly this section applies to `watcher`, or None if it does not."""
        if not self.targets:
            return GLOBAL
        low = watcher.lower()
        best: int | None = None
        for target in self.targets:
            t = target.lower()
            if t == low:
                return EXACT
            if fnmatch.fnmatchcase(low, t):
                best = PATTERN
        return best


def env_sections(sections: Sequence[Section]) -> list[EnvSection]:
    out = []
    for sec in sections:
        if sec.name == "env":
            out.append(EnvSection(sec.name, (), tuple(sec.entries.values()), sec.file, sec.line))
        elif sec.name.startswith("env:"):
            targets = tuple(t.strip() for t in sec.name[4:].split(",") if t.strip())
            out.append(EnvSection(sec.name, targets, tuple(sec.entries.values()), sec.file, sec.line))
    return out


def _apply(sections: Sequence[EnvSection], environ: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for sec in sections:
        for entry in sec.entries:
            value = expand_vars(entry.value, env, environ)
            ctx = {"env." + k: v for k, v in environ.items()}
            ctx.update({"env." + k: v for k, v in env.items()})
            env[entry.key] = render(value, ctx)
    return env


def global_env(sections: Sequence[EnvSection], environ: Mapping[str, str]) -> dict[str, str]:
    """The plain [env] section(s) alone: what `$(circus.env.X)` means outside watcher sections."""
    return _apply([s for s in sections if not s.targets], environ)


def watcher_env(name: str, sections: Sequence[EnvSection], environ: Mapping[str, str]) -> dict[str, str]:
    """The merged env of watcher `name` under the precedence rule in this module's docstring."""
    ranked = [(rank, i, s) for i, s in enumerate(sections) if (rank := s.rank(name)) is not None]
    ranked.sort(key=lambda t: (t[0], t[1]))
    return _apply([s for _, _, s in ranked], environ)
