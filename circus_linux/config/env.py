"""The [env] / [env:NAMES] rules: which sections apply to a watcher, in what order; pure, no os.environ.

Precedence (later wins), as in Circus's get_config: every `[env]` key first, then every `[env:...]` section
that matches the watcher, by name (`[env:web]`, `[env:web,api]`) or glob (`[env:web*]`) alike, in file order
(order of first appearance, includes after the including file): a later matching section overrides an
earlier one. Names match case-insensitively, as Circus lowercased them. Values expand `$VAR`/`${VAR}`
first from keys already set for that watcher (earlier keys, earlier sections), then from the environ given
to the loader; unknown names stay verbatim. `$(circus.env.X)` inside a value is expanded the same way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from circus_linux.config.ini import Entry, Section
from circus_linux.config.substitute import expand_vars, render


@dataclass(frozen=True)
class EnvSection:
    """One env section: its targets (empty = [env], every watcher) and its entries in written order."""

    name: str
    targets: tuple[str, ...]
    entries: tuple[Entry, ...]
    file: str = ""
    line: int | None = None

    def applies(self, watcher: str) -> bool:
        """Whether this section applies to `watcher`: [env] always, [env:...] when a target matches."""
        low = watcher.lower()
        return not self.targets or any(fnmatch.fnmatchcase(low, t.lower()) for t in self.targets)


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
    plain = [s for s in sections if not s.targets]
    return _apply([*plain, *(s for s in sections if s.targets and s.applies(name))], environ)
