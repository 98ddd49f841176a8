"""Turn a watcher's config and a wid into a native SpawnSpec (argv, env, fds, ids); no spawning, no policy."""

from __future__ import annotations

import os
import pwd
import resource
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from circus_linux.config import virtualenv
from circus_linux.config.substitute import render, watcher_context
from circus_linux.kernel import native

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def watcher_sockets(cfg: Any, svc: Any) -> list[str]:
    """The sockets a worker gets: the ones it names; `use_sockets` alone (old files) means all of them."""
    names = list(cfg.sockets)
    if not names and cfg.use_sockets:
        names = list(svc.all_sockets())
    if cfg.stdin_socket and cfg.stdin_socket not in names:
        names.append(cfg.stdin_socket)
    return names


def render_context(cfg: Any, wid: int, sockets: Mapping[str, int]) -> dict[str, str]:
    """config's spawn-time context, plus the watcher's name and count and lower-case env.X aliases."""
    options = {str(k): str(v) for k, v in (cfg.raw or {}).items()}
    options.update(name=cfg.name, numprocesses=str(cfg.numprocesses))
    ctx = watcher_context(options, wid, cfg.env, sockets)
    for key, value in cfg.env.items():
        ctx.setdefault(f"env.{key.lower()}", value)
    return ctx


def build_env(cfg: Any, wid: int, notify_socket: str | None) -> dict[str, str]:
    """The worker's environment; ValueError when its virtualenv has no site-packages (any more)."""
    env: dict[str, str] = dict(os.environ) if cfg.copy_env else {}
    if cfg.copy_path and cfg.copy_env:
        # Circus's copy_path: circusd's sys.path becomes the worker's PYTHONPATH, under [env]'s. The loader
        # refuses copy_path without copy_env (as Circus); one `set` live adds nothing.
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env.update(cfg.env)
    if cfg.virtualenv:
        # Circus's virtualenv option: the venv's bin first on PATH, its packages on PYTHONPATH
        # (config/virtualenv.py), and VIRTUAL_ENV set, as `activate` does. Circus also required copy_env;
        # without it the worker gets these three over an empty environment.
        env["VIRTUAL_ENV"] = cfg.virtualenv
        env["PATH"] = os.path.join(cfg.virtualenv, "bin") + os.pathsep + env.get("PATH", DEFAULT_PATH)
        current = env.get("PYTHONPATH")
        env["PYTHONPATH"] = virtualenv.pythonpath(cfg.virtualenv, cfg.virtualenv_py_ver, current)
    env["CIRCUS_WID"] = str(wid)
    env["CIRCUS_WATCHER"] = cfg.name
    if cfg.notify and notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
    else:
        env.pop("NOTIFY_SOCKET", None)  # never let a worker talk to systemd in circusd's name
    for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(var, None)
    return env


def build_argv(cfg: Any, ctx: Mapping[str, str]) -> list[str]:
    cmd = render(cfg.cmd, ctx)
    args = render(cfg.args, ctx) if cfg.args else ""
    if cfg.shell:
        line = f"{cmd} {args}".strip()
        # Circus's Process.format_args renders shell_args like cmd and args ($(circus.wid), sockets, ...)
        extra = shlex.split(render(cfg.shell_args, ctx)) if cfg.shell_args else []
        return ["/bin/sh", "-c", line, *extra]
    argv = shlex.split(cmd) + (shlex.split(args) if args else [])
    if not argv:
        raise ValueError(f"watcher {cfg.name}: cmd is empty after substitution")
    return argv


def resolve_path(argv0: str, env: Mapping[str, str], executable: str | None) -> str:
    if executable:
        return executable
    if "/" in argv0:
        return argv0
    import shutil  # bare command names only: shutil brings bz2/lzma/zlib along (~650 KiB of RSS)

    found = shutil.which(argv0, path=env.get("PATH") or os.environ.get("PATH") or DEFAULT_PATH)
    # Not found: hand execve the bare name so the failure comes back as (execve, ENOENT), one clear event.
    return found or argv0


def build_rlimits(cfg: Any) -> dict[int, tuple[int, int]]:
    limits: dict[int, tuple[int, int]] = {}
    for name, value in cfg.rlimits.items():
        res = getattr(resource, f"RLIMIT_{name.upper()}")
        limits[res] = (value, value)
    return limits


def build_ids(cfg: Any) -> tuple[int | None, int | None, list[int] | None]:
    uid, gid = cfg.uid, cfg.gid
    groups: list[int] | None = None
    if uid is not None:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            entry = None
        if gid is None and entry is not None:
            gid = entry.pw_gid
        if entry is not None and gid is not None:
            groups = os.getgrouplist(entry.pw_name, gid)
        elif gid is not None:
            groups = [gid]
    elif gid is not None:
        groups = [gid]
    return uid, gid, groups


def build_spawn_spec(
    cfg: Any, wid: int, svc: Any, stdio: Mapping[int, int] | None = None
) -> tuple[native.SpawnSpec, list[str]]:
    """Everything the C spawner needs. `stdio` maps fds 1/2 to pipe write ends when output is captured."""
    socket_fds = {name: svc.socket_fd(name) for name in watcher_sockets(cfg, svc)}
    ctx = render_context(cfg, wid, socket_fds)
    env = build_env(cfg, wid, svc.notify_socket)
    argv = build_argv(cfg, ctx)
    path = resolve_path(argv[0], env, cfg.executable)

    fds: dict[int, int] = {}
    devnull = _devnull()
    fds[0] = socket_fds[cfg.stdin_socket] if cfg.stdin_socket else (devnull if cfg.close_child_stdin else 0)
    fds[1] = devnull if cfg.close_child_stdout else 1
    fds[2] = devnull if cfg.close_child_stderr else 2
    if stdio:
        fds.update(stdio)
    for fd in socket_fds.values():
        fds[fd] = fd  # same number in the worker as in circusd: $(circus.sockets.NAME) stays true

    uid, gid, groups = build_ids(cfg)
    cg = svc.cgroup(cfg.name)
    spec = native.SpawnSpec(
        path=path,
        argv=argv,
        env=env,
        fds=fds,
        cwd=cfg.working_dir,
        uid=uid,
        gid=gid,
        groups=groups,
        umask=cfg.umask,
        rlimits=build_rlimits(cfg),
        cgroup_fd=cg.dir_fd() if cg is not None else None,
        cgroup_procs_fds=tuple(cg.v1_procs_fds()) if cg is not None else (),
    )
    return spec, argv


_DEVNULL: int | None = None


def _devnull() -> int:
    """One /dev/null fd for the life of circusd, mapped into workers that close a standard stream."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _DEVNULL
