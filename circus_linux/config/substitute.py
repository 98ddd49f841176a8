"""The $(circus.KEY) / ((circus.KEY)) / ${socket:NAME} template grammar; pure string functions, no I/O.

Keys are dotted and case-insensitive as in Circus: `$(circus.wid)`, `$(circus.env.HOME)`,
`$(circus.sockets.web)`, any watcher option `$(circus.numprocesses)`. The talk's older `${socket:NAME}`
means `$(circus.sockets.NAME)`. A key not in the context stays verbatim, so templates can be rendered in
stages (env at load time, wid and socket fds at spawn time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_KEY = r"[\w.\-]+"
_MARKER = re.compile(
    rf"\$\(circus\.(?P<a>{_KEY})\)"  # $(circus.KEY)
    rf"|\(\(circus\.(?P<b>{_KEY})\)\)"  # ((circus.KEY))
    rf"|\$\{{socket:(?P<s>{_KEY})\}}",  # ${socket:NAME}
    re.IGNORECASE,
)


def _key_of(m: re.Match[str]) -> str:
    if m.group("s") is not None:
        return "sockets." + m.group("s")
    return m.group("a") if m.group("a") is not None else m.group("b")


def render(template: str, context: Mapping[str, str]) -> str:
    """Replace every marker whose key (without 'circus.', any case) is in `context`; keep the others."""
    lowered = {str(k).lower(): str(v) for k, v in context.items()}

    def repl(m: re.Match[str]) -> str:
        return lowered.get(_key_of(m).lower(), m.group(0))

    return _MARKER.sub(repl, template)


def referenced_keys(template: str) -> tuple[str, ...]:
    """Every key a template refers to, in order (lowercased), e.g. ('wid', 'sockets.web')."""
    return tuple(_key_of(m).lower() for m in _MARKER.finditer(template))


def referenced_sockets(template: str) -> tuple[str, ...]:
    """Socket names referenced as $(circus.sockets.X), ((circus.sockets.X)) or ${socket:X} (lowercased)."""
    return tuple(k[len("sockets."):] for k in referenced_keys(template) if k.startswith("sockets."))


def watcher_context(
    options: Mapping[str, str],
    wid: int | None = None,
    env: Mapping[str, str] | None = None,
    socket_fds: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The render context Circus gives cmd/args at spawn: options, wid, env.X, sockets.NAME -> fd."""
    ctx: dict[str, str] = {k: v for k, v in options.items()}
    if wid is not None:
        ctx["wid"] = str(wid)
    for k, v in (env or {}).items():
        ctx["env." + k] = v
    for name, fd in (socket_fds or {}).items():
        ctx["sockets." + name] = str(fd)
    return ctx


_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)\}|(?P<bare>[A-Za-z_]\w*))")


def expand_vars(text: str, *scopes: Mapping[str, str]) -> str:
    """Shell-like $VAR / ${VAR} expansion: first scope that has the name wins; unknown names stay verbatim.

    `$(` and `${socket:...}` are not variables and are left alone.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        for scope in scopes:
            if name in scope:
                return scope[name]
        return m.group(0)

    return _VAR.sub(repl, text)

