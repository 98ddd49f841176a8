"""load()/loads(): read the main file and its includes, merge, substitute, validate; returns a frozen Config.

Side effects allowed here and nowhere else in config: reading the config files (and globbing includes), and
through the checks it calls, looking at a watcher's virtualenv (virtualenv.py) and at [circus]
loggerconfig (loggerconfig.py).
The process environment is only a default argument, used for `$VAR` expansion and `$(circus.env.X)`.

Include rules: `[circus] include = globs...` and `include_dir = dirs...` (every `*.ini` inside; a dir may
be a glob, `conf*.d`, as Circus globs `include_dir/*.ini`) are relative to the directory of the file that
names them, and are followed recursively; an included file comes right after its includer, so it
overrides the includer's keys (as Circus's `cfg.read(includes)` did); same-named sections merge. A
literal include path or include_dir that does not exist is an error, a glob matching nothing only a
warning. A file including itself directly or through others by a literal path is an error
(include cycle); when a glob is what matched the file already being read, it is skipped with a warning.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Mapping

from circus_linux.config import ini, loggerconfig, virtualenv
from circus_linux.config.env import env_sections, global_env, watcher_env
from circus_linux.config.ini import Entry, Section
from circus_linux.config.model import (
    PLUGIN_WATCHER_PREFIX,
    CircusConfig,
    Config,
    ImportTarget,
    PluginConfig,
    SocketConfig,
    WatcherConfig,
)
from circus_linux.config.sections import Collector, build_circus, build_plugin, build_socket, build_watcher
from circus_linux.config.substitute import render
from circus_linux.config.values import split_list
from circus_linux.errors import ConfigError, ConfigIssue

STRING_PATH = "<string>"
_SECTION_KINDS = ("watcher:", "socket:", "plugin:")


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    path = os.fspath(path)
    try:
        text = _read_regular(path)
    except (OSError, UnicodeDecodeError) as exc:
        issue = ConfigIssue(path, None, None, f"cannot read config file: {_reason(exc)}")
        raise ConfigError([issue]) from None
    return loads(text, path, environ)


def loads(text: str, path: str = STRING_PATH, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    col = Collector()
    files: list[list[Section]] = []
    read: list[str] = []
    start = os.path.realpath(path) if path != STRING_PATH else path
    _read_tree(text, path, [start], col, files, read)
    sections = ini.merge(files)
    config = _build(sections, path, environ, col)
    if col.errors:
        # report in reading order: file by file, top to bottom
        rank = {f: i for i, f in enumerate(read)}
        raise ConfigError(sorted(col.errors, key=lambda i: (rank.get(i.file, -1), i.line or 0)))
    return Config(
        path=path,
        circus=config[0],
        watchers=config[1],
        sockets=config[2],
        plugins=config[3],
        env=config[4],
        warnings=tuple(str(w) for w in col.warnings),
        files=tuple(read),
        imports=config[5],
    )


def _read_regular(path: str) -> str:
    """The text of a regular file; OSError for anything else.

    A FIFO named as a config or include would block open()/read() until a writer comes (forever, freezing
    circusd's loop on `reloadconfig`); /dev/zero would never end. O_NONBLOCK makes the open of a FIFO
    return at once, and fstat then refuses whatever is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, encoding="utf-8", closefd=True) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _base_dir(path: str) -> str:
    # a config given as a string has no directory of its own: relative includes resolve from the cwd
    return os.getcwd() if path == STRING_PATH else os.path.dirname(os.path.abspath(path))


def _read_tree(
    text: str, path: str, stack: list[str], col: Collector, files: list[list[Section]], read: list[str],
) -> None:
    """Parse one file, then (depth first) the files its own [circus] section includes."""
    sections, issues = ini.parse(text, path)
    col.errors.extend(issues)
    files.append(sections)
    read.append(path)
    circus = next((s for s in sections if s.name == "circus"), None)
    if circus is None:
        return
    base = _base_dir(path)
    targets: list[tuple[str, Entry, bool]] = []  # (file, the include entry, matched through a glob)
    inc = circus.entries.get("include")
    if inc is not None:
        for pattern in split_list(inc.value):
            full = os.path.join(base, os.path.expanduser(pattern))
            matches = sorted(glob.glob(full))
            if matches:
                targets += [(m, inc, glob.has_magic(pattern)) for m in matches]
            elif glob.has_magic(pattern):
                col.warnings.append(ConfigIssue(inc.file, "circus", "include", f"{pattern!r} matches no file",
                                                inc.line))
            else:
                msg = f"expected an existing file, got {pattern!r} ({full} not found)"
                col.errors.append(ConfigIssue(inc.file, "circus", "include", msg, inc.line))
    inc_dir = circus.entries.get("include_dir")
    if inc_dir is not None:
        for d in split_list(inc_dir.value):
            full = os.path.join(base, os.path.expanduser(d))
            if glob.has_magic(d):
                # Circus globs `include_dir/*.ini`: `include_dir = conf*.d` takes every match's files
                pattern = os.path.join(glob.escape(base), os.path.expanduser(d), "*.ini")
            elif os.path.isdir(full):
                pattern = os.path.join(glob.escape(full), "*.ini")
            else:
                col.errors.append(ConfigIssue(inc_dir.file, "circus", "include_dir",
                                              f"expected an existing directory, got {d!r}", inc_dir.line))
                continue
            matches = sorted(glob.glob(pattern))
            if not matches:
                col.warnings.append(ConfigIssue(inc_dir.file, "circus", "include_dir",
                                                f"{d!r} {'matches' if glob.has_magic(d) else 'holds'} "
                                                "no *.ini file", inc_dir.line))
            targets += [(m, inc_dir, True) for m in matches]
    for target, entry, globbed in targets:
        real = os.path.realpath(target)
        if real in stack:
            chain = " -> ".join([*stack[stack.index(real):], real])
            if globbed:
                # `include = *.ini` next to the main file matches the main file itself: Circus just read it
                # again; skipping it (loudly) keeps such configs loading
                msg = f"skipped, already being read (include cycle: {chain})"
                col.warnings.append(ConfigIssue(entry.file, "circus", entry.key, msg, entry.line))
            else:
                msg = f"include cycle: {chain}"
                col.errors.append(ConfigIssue(entry.file, "circus", entry.key, msg, entry.line))
            continue
        try:
            child = _read_regular(target)
        except (OSError, UnicodeDecodeError) as exc:
            col.errors.append(ConfigIssue(entry.file, "circus", entry.key,
                                          f"cannot read included file {target}: {_reason(exc)}", entry.line))
            continue
        _read_tree(child, target, [*stack, real], col, files, read)


def _check_loggerconfig(sec: Section, col: Collector) -> None:
    """[circus] loggerconfig must be a file circusd can apply (config/loggerconfig.py)."""
    e = sec.entries["loggerconfig"]
    message = loggerconfig.problem(e.value)
    if message is not None:
        col.errors.append(ConfigIssue(e.file, "circus", "loggerconfig", message, e.line))


def _check_virtualenv(w: WatcherConfig, sec: Section, col: Collector) -> None:
    """A virtualenv must have a site-packages directory (Circus's load_virtualenv refused one without)."""
    if not w.virtualenv:
        return
    try:
        virtualenv.site_dir(w.virtualenv, w.virtualenv_py_ver)
    except ValueError as exc:
        e = sec.entries["virtualenv"]
        col.errors.append(ConfigIssue(e.file, sec.name, "virtualenv", str(exc), e.line))


def _substituted(sec: Section, env: Mapping[str, str], environ: Mapping[str, str]) -> Section:
    """The section with $(circus.env.X) expanded at load time ([env] values over the process environ)."""
    ctx = {"env." + k: val for k, val in environ.items()}
    ctx.update({"env." + k: val for k, val in env.items()})
    out = Section(sec.name, sec.file, sec.line)
    out.entries = {k: Entry(e.key, render(e.value, ctx), e.file, e.line) for k, e in sec.entries.items()}
    return out


def _build(
    sections: list[Section], path: str, environ: Mapping[str, str], col: Collector,
) -> tuple[CircusConfig, tuple[WatcherConfig, ...], tuple[SocketConfig, ...], tuple[PluginConfig, ...],
           dict[str, str], tuple[ImportTarget, ...]]:
    envs = env_sections(sections)
    genv = global_env(envs, environ)
    circus_sec: Section | None = None
    by_kind: dict[str, list[tuple[str, Section]]] = {k: [] for k in _SECTION_KINDS}
    for sec in sections:
        if sec.name == "circus":
            circus_sec = sec
        elif ini.is_env_section(sec.name):
            if sec.name.startswith("env:") and not sec.name[4:].strip():
                col.errors.append(ConfigIssue(sec.file, sec.name, None,
                                              "expected [env:NAME[,NAME...]] with watcher names or globs",
                                              sec.line))
        else:
            kind = next((k for k in _SECTION_KINDS if sec.name.startswith(k)), None)
            name = sec.name[len(kind):].strip() if kind else ""
            if kind is None or not name:
                col.errors.append(ConfigIssue(
                    sec.file, sec.name, None,
                    "unknown section: expected [circus], [watcher:NAME], [socket:NAME], [plugin:NAME], [env] "
                    "or [env:NAMES]", sec.line))
                continue
            by_kind[kind].append((name, sec))

    circus = build_circus(_substituted(circus_sec, genv, environ) if circus_sec else None, col)
    if circus_sec is not None and not loggerconfig.is_default(circus.loggerconfig):
        _check_loggerconfig(circus_sec, col)
    sockets = tuple(build_socket(_substituted(s, genv, environ), n, col) for n, s in by_kind["socket:"])
    socket_names = {s.name.lower(): s.name for s in sockets}
    watchers: list[WatcherConfig] = []
    seen: dict[str, str] = {}
    watcher_secs: dict[str, Section] = {}
    for name, sec in by_kind["watcher:"]:
        if name.lower() in seen:
            col.errors.append(ConfigIssue(sec.file, sec.name, None,
                                          f"duplicate watcher name: [watcher:{seen[name.lower()]}] already "
                                          "exists (names are case-insensitive)", sec.line))
            continue
        seen[name.lower()] = name
        watcher_secs[name.lower()] = sec
        wenv = watcher_env(name, envs, environ)
        w = build_watcher(_substituted(sec, wenv, environ), name, wenv, socket_names, col)
        if w is not None:
            _check_virtualenv(w, sec, col)
            watchers.append(w)
    for name, sec in by_kind["plugin:"]:
        # [plugin:X] runs as the watcher `plugin:X` (runtime/plugins.py): a [watcher:plugin:X] would be
        # replaced by it, or replace it.
        other = watcher_secs.get((PLUGIN_WATCHER_PREFIX + name).lower())
        if other is not None:
            col.errors.append(ConfigIssue(
                sec.file, sec.name, None,
                f"duplicate watcher name: [{sec.name}] runs as the watcher {PLUGIN_WATCHER_PREFIX}{name}, "
                f"which [{other.name}] ({other.file}:{other.line}) already names", sec.line))
    plugins = tuple(p for n, s in by_kind["plugin:"]
                    if (p := build_plugin(_substituted(s, genv, environ), n, col)) is not None)
    for env_sec in envs:
        if env_sec.targets and not any(env_sec.applies(w) for w in seen.values()):
            col.warnings.append(
                ConfigIssue(env_sec.file, env_sec.name, None, "matches no watcher", env_sec.line))
    return circus, tuple(watchers), sockets, plugins, genv, _imports(by_kind, watchers, plugins)


def _imports(
    by_kind: Mapping[str, list[tuple[str, Section]]], watchers: list[WatcherConfig],
    plugins: tuple[PluginConfig, ...],
) -> tuple[ImportTarget, ...]:
    """Every hook function and plugin class the config names, with the file, line, section and key."""
    out: list[ImportTarget] = []
    built = {w.name: w for w in watchers}
    for name, sec in by_kind["watcher:"]:
        w = built.get(name)
        for hook in w.hooks.values() if w is not None else ():
            e = sec.entries["hooks." + hook.name]
            out.append(ImportTarget("hook", hook.target, e.file, e.line, sec.name, e.key))
    by_name = {p.name: p for p in plugins}
    for name, sec in by_kind["plugin:"]:
        p = by_name.get(name)
        if p is not None and p.use:
            e = sec.entries["use"]
            out.append(ImportTarget("plugin", p.use, e.file, e.line, sec.name, e.key))
    return tuple(out)
