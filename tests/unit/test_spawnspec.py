"""runtime/spawnspec.py: a watcher's config and a wid to argv and env; no spawning."""

from __future__ import annotations

from circus_linux.config import loads
from circus_linux.runtime.spawnspec import build_argv, render_context


def test_shell_args_not_rendered() -> None:
    # Circus's Process.format_args: shlex.split(replace_gnu_args(shell_args, ...)), as for cmd and args
    text = (
        "[env]\nX = ex\n[watcher:a]\ncmd = echo $0 $1 $2\nshell = true\n"
        "shell_args = wid$(circus.wid) $(circus.env.X) ((circus.name))\n"
    )
    w = loads(text, environ={}).watchers[0]
    assert build_argv(w, render_context(w, 3, {})) == ["/bin/sh", "-c", "echo $0 $1 $2", "wid3", "ex", "a"]


def test_shell_args_not_rendered_socket_reference_gives_the_socket() -> None:
    text = (
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n"
        "[watcher:a]\ncmd = exec srv --fd $0\nshell = true\nshell_args = $(circus.sockets.web)\n"
    )
    w = loads(text, environ={}).watchers[0]
    assert w.sockets == ("web",)
    assert build_argv(w, render_context(w, 1, {"web": 7}))[-1] == "7"
