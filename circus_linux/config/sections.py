"""Turn one merged ini section into its dataclass, recording every issue; no file access, no os.environ."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from circus_linux.config import values as v
from circus_linux.config.ini import Entry, Section
from circus_linux.config.model import (
    CgroupLimits,
    CircusConfig,
    HookConfig,
    PluginConfig,
    SocketConfig,
    StreamConfig,
    SystemdMode,
    WatcherConfig,
)
from circus_linux.config.plugin_options import check_option as check_plugin_option
from circus_linux.config.substitute import referenced_sockets
from circus_linux.errors import ConfigError, ConfigIssue

T = TypeVar("T")


@dataclass
class Collector:
    """Every error and warning found while loading, in the order found."""

    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)


class SectionReader:
    """Typed access to one section's keys; remembers which keys were consumed and records parse errors."""

    def __init__(self, sec: Section, col: Collector) -> None:
        self.sec = sec
        self.col = col
        self.used: set[str] = set()

    def entry(self, key: str) -> Entry | None:
        self.used.add(key)
        return self.sec.entries.get(key)

    def take(self, key: str, parser: Callable[[str], T], default: T) -> T:
        e = self.entry(key)
        if e is None:
            return default
        try:
            return parser(e.value)
        except ValueError as exc:
            self.error_at(e, str(exc))
            return default

    def text(self, key: str, default: str | None = None) -> str | None:
        e = self.entry(key)
        return default if e is None else e.value

    def error_at(self, e: Entry, message: str) -> None:
        self.col.errors.append(ConfigIssue(e.file, self.sec.name, e.key, message, e.line))

    def warn_at(self, e: Entry, message: str) -> None:
        self.col.warnings.append(ConfigIssue(e.file, self.sec.name, e.key, message, e.line))

    def error(self, message: str, key: str | None = None) -> None:
        self.col.errors.append(ConfigIssue(self.sec.file, self.sec.name, key, message, self.sec.line))

    def error_on(self, key: str, message: str) -> None:
        """An error on `key`: at its line when the section has it, else at the section's."""
        e = self.sec.entries.get(key)
        if e is not None:
            self.error_at(e, message)
        else:
            self.error(message, key)

    def rest(self) -> list[Entry]:
        return [e for k, e in self.sec.entries.items() if k not in self.used]


def _endpoint(text: str) -> str:
    """An empty value means the default endpoint (Circus's rule); anything else must be one."""
    return v.parse_endpoint(text) if text.strip() else ""


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    return lambda s: v.parse_int(s, minimum, maximum)


def _float(minimum: float | None = None) -> Callable[[str], float]:
    return lambda s: v.parse_float(s, minimum)


def _text(s: str) -> str:
    return s


# ---------------------------------------------------------------- [circus]

_CIRCUS_UNUSED = {
    "multicast_endpoint": "Circus never used it (no multicast discovery)",
    "papa_endpoint": "papa is not supported: listening sockets survive restarts through systemd's fd store",
    "use_papa": "papa is not supported: listening sockets survive restarts through systemd's fd store",
    "stream_backend": "removed in Circus; output streams always run in circusd's event loop",
    "statsd_close_outputs": "removed in Circus",
    "fqdn_prefix": "only read by the statsd plugin: set it in its [plugin:...] section",
}


def build_circus(sec: Section | None, col: Collector) -> CircusConfig:
    if sec is None:
        return CircusConfig()
    r = SectionReader(sec, col)
    d = CircusConfig()
    cfg = CircusConfig(
        endpoint=r.take("endpoint", _endpoint, d.endpoint) or d.endpoint,
        pubsub_endpoint=r.take("pubsub_endpoint", _endpoint, d.pubsub_endpoint) or d.pubsub_endpoint,
        stats_endpoint=r.take("stats_endpoint", _endpoint, d.stats_endpoint) or d.stats_endpoint,
        statsd=r.take("statsd", v.parse_bool, d.statsd),
        check_delay=r.take("check_delay", _float(0), d.check_delay),
        include=v.split_list(r.text("include") or ""),
        include_dir=v.split_list(r.text("include_dir") or ""),
        warmup_delay=r.take("warmup_delay", _float(0), d.warmup_delay),
        pidfile=r.text("pidfile") or None,
        umask=r.take("umask", v.parse_octal, None),
        loglevel=r.take("loglevel", v.parse_loglevel, None),
        logoutput=r.text("logoutput") or None,
        loggerconfig=r.text("loggerconfig") or None,
        endpoint_owner=r.take("endpoint_owner", v.parse_uid, None),
        endpoint_group=r.take("endpoint_group", v.parse_gid, None),
        endpoint_mode=r.take("endpoint_mode", v.parse_octal, None),
        curve_secret_key=r.text("curve_secret_key") or None,
        curve_authorized_keys=r.text("curve_authorized_keys") or None,
        insecure=r.take("insecure", v.parse_bool, d.insecure),
        allow_spawn_changes=r.take("allow_spawn_changes", v.parse_bool, d.allow_spawn_changes),
        disabled_commands=v.split_list(r.text("disabled_commands") or ""),
        debug=r.take("debug", v.parse_bool, d.debug),
        cgroup_root=r.text("cgroup_root") or None,
        httpd=r.take("httpd", v.parse_bool, d.httpd),
        httpd_host=r.text("httpd_host") or d.httpd_host,
        httpd_port=r.take("httpd_port", _int(0, 65535), d.httpd_port),
        raw={k: e.value for k, e in sec.entries.items()},
    )
    _check_exposure(r, cfg)
    for e in r.rest():
        if e.key in _CIRCUS_UNUSED:
            r.warn_at(e, f"accepted but ignored: {_CIRCUS_UNUSED[e.key]}")
        else:
            r.warn_at(e, "unknown [circus] option, ignored")
    return cfg


_LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]", "ip6-localhost"})


def is_exposed_endpoint(endpoint: str) -> bool:
    """True for an endpoint other peers can reach: an allowlist, so a transport not named here counts.

    Local: an ipc:// path (the file's owner and mode decide), inproc://, and tcp:// on 127.0.0.0/8, ::1
    or localhost. Exposed: every other tcp:// address (wildcards `*`, 0.0.0.0, interface names), an
    abstract `ipc://@name` (no file, so no permissions: every process of the network namespace), and
    every other transport libzmq may have (tipc://, vmci://, udp://, pgm://, epgm://, ws://, wss://...).
    """
    if endpoint.startswith("inproc://"):
        return False
    if endpoint.startswith("ipc://"):
        return is_abstract_ipc(endpoint) or not endpoint[len("ipc://"):]
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rpartition(":")[0]
    host = host.rpartition(";")[2]  # tcp://source;dest:port: only the bound address matters
    return not (host in _LOOPBACK_HOSTS or re.fullmatch(r"127(\.\d{1,3}){3}", host))


def is_abstract_ipc(endpoint: str) -> bool:
    """`ipc://@name`: a Linux abstract unix socket, which has no file and so no owner or mode."""
    return endpoint.startswith("ipc://@")


def _check_exposure(r: SectionReader, cfg: CircusConfig) -> None:
    # The control channel runs any command as circusd's user (root): reachable from the network only
    # with CURVE, or with an explicit, loudly logged `insecure = true`.
    if cfg.curve_secret_key and not cfg.curve_authorized_keys:
        r.error("curve_secret_key needs curve_authorized_keys (a directory of clients' public keys)",
                "curve_authorized_keys")
    if cfg.curve_authorized_keys and not cfg.curve_secret_key:
        r.error("curve_authorized_keys needs curve_secret_key (the server's .key_secret file)",
                "curve_secret_key")
    for key in ("endpoint", "pubsub_endpoint", "stats_endpoint"):
        endpoint = getattr(cfg, key)
        abstract = is_abstract_ipc(endpoint)
        # An abstract socket needs `insecure` even with CURVE: endpoint_owner/group/mode cannot apply.
        if not is_exposed_endpoint(endpoint) or (cfg.curve_secret_key and not abstract):
            continue
        e = r.sec.entries.get(key)
        if cfg.insecure:
            msg = (f"{endpoint} is reachable from the network WITHOUT authentication "
                   "(insecure = true): anyone who can connect controls circusd")
            if abstract:
                msg = (f"{endpoint} is an abstract unix socket (insecure = true): it has no file "
                       "permissions, every local process can connect")
            if e is not None:
                r.warn_at(e, msg)
            continue
        if abstract:
            msg = (f"{endpoint} is an abstract unix socket: it has no file, so no owner or mode, and every "
                   "process of this network namespace could connect; use an ipc:// path "
                   "(e.g. ipc:///run/circus/circus.sock) or set insecure = true")
        elif endpoint.startswith("tcp://"):
            msg = (f"{endpoint} is not a loopback address: refusing to listen there without "
                   "authentication; set curve_secret_key and curve_authorized_keys, bind 127.0.0.1 or an "
                   "ipc:// path, or set insecure = true")
        else:
            msg = (f"{endpoint}: only ipc:// paths, inproc:// and tcp:// on loopback are local; this "
                   "transport may be reachable from other hosts: refusing it without authentication; set "
                   "curve_secret_key and curve_authorized_keys, use an ipc:// path, or set insecure = true")
        r.error_on(key, msg)
    _check_httpd_exposure(r, cfg)


def is_loopback_host(host: str) -> bool:
    """True for a host name or address literal that binds loopback only: localhost, 127.0.0.0/8, ::1."""
    host = host.strip().lower()
    return host in _LOOPBACK_HOSTS or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None


def _check_httpd_exposure(r: SectionReader, cfg: CircusConfig) -> None:
    # The dashboard's buttons act on watchers: off loopback it is the control channel's rule, with no
    # CURVE to offer (the dashboard's token travels in clear over http), so only `insecure = true`.
    if not cfg.httpd or is_loopback_host(cfg.httpd_host):
        return
    e = r.sec.entries.get("httpd_host")
    if cfg.insecure:
        msg = (f"httpd_host = {cfg.httpd_host} is not loopback (insecure = true): the dashboard and "
               "/metrics are reachable from the network over plain http; its buttons still need the token")
        if e is not None:
            r.warn_at(e, msg)
        return
    msg = (f"{cfg.httpd_host} is not a loopback address: refusing to serve the dashboard there; "
           "bind 127.0.0.1 (and reach it through ssh -L or a reverse proxy that authenticates), "
           "or set insecure = true")
    r.error_on("httpd_host", msg)


# ---------------------------------------------------------------- [watcher:NAME]

HOOK_NAMES = frozenset({
    "before_start", "after_start", "before_spawn", "after_spawn", "before_stop", "after_stop",
    "before_signal", "after_signal", "before_reap", "after_reap", "extended_stats",
})
STREAM_CLASSES = frozenset({
    "FileStream", "WatchedFileStream", "TimedRotatingFileStream", "StdoutStream", "FancyStdoutStream",
    "JournalStream", "journal", "journal-direct",  # circus_linux.streams.journal (journald)
})
_ROTATE_WHEN = re.compile(r"(?i)s|m|h|d|midnight|w[0-6]")
_STREAM_OPTION_PARSERS: dict[str, Callable[[str], Any]] = {
    "max_bytes": _int(0),
    "backup_count": _int(0),
    "rotate_interval": _int(1),
    "utc": v.parse_bool,
    "refresh_time": _float(0),
}

# (parser, default) for every plain watcher option; the default is WatcherConfig's
_WATCHER_SIMPLE: dict[str, Callable[[str], Any]] = {
    "args": _text, "working_dir": _text, "shell_args": _text, "executable": _text,
    "virtualenv": _text, "virtualenv_py_ver": _text,
    "numprocesses": v.parse_count, "warmup_delay": _float(0), "shell": v.parse_bool,
    "uid": v.parse_uid, "gid": v.parse_gid, "umask": v.parse_octal,
    "copy_env": v.parse_bool, "copy_path": v.parse_bool,
    "close_child_stdin": v.parse_bool, "close_child_stdout": v.parse_bool, "close_child_stderr": v.parse_bool,
    "priority": _int(), "singleton": v.parse_bool, "use_sockets": v.parse_bool,
    # Circus treats max_retry = -1 as "retry forever"
    "max_retry": _int(-1), "graceful_timeout": _float(0), "stop_signal": v.parse_signal,
    "stop_children": v.parse_bool, "send_hup": v.parse_bool,
    "max_age": _int(0), "max_age_variance": _int(0),
    "respawn": v.parse_bool, "autostart": v.parse_bool, "on_demand": v.parse_bool,
    "notify": v.parse_bool, "ready_timeout": _float(0),
}
_CGROUP_KEYS: dict[str, Callable[[str], Any]] = {
    "memory_max": v.parse_bytes_or_max,
    "memory_high": v.parse_bytes_or_max,
    "memory_swap_max": v.parse_bytes_or_max,
    "cpu_max": v.parse_cpu_max,
    "cpu_weight": v.parse_weight,
    "io_weight": v.parse_weight,
    "pids_max": v.parse_int_or_max,
}
_WATCHER_UNUSED = {
    "use_papa": "papa is not supported: listening sockets survive restarts through systemd's fd store",
    "stream_backend": "removed in Circus; output streams always run in circusd's event loop",
}


def _parse_hook(text: str) -> tuple[str, bool]:
    target, sep, flag = text.partition(",")
    return v.parse_dotted(target), (v.parse_bool(flag) if sep else False)


def _stream_option(opt: str, text: str) -> Any:
    """One stdout_stream.*/stderr_stream.* value (the ini's and `set`'s): the class's name, or the option
    typed; ValueError naming what was expected."""
    if opt == "class":
        name = text.strip().removeprefix("circus.stream.")
        if "." not in name and name not in STREAM_CLASSES:
            known = ", ".join(sorted(STREAM_CLASSES))
            raise ValueError(f"expected a stream class ({known}) or a dotted path, got {text!r}")
        return name
    parser = _STREAM_OPTION_PARSERS.get(opt)
    if parser is not None:
        return parser(text)
    if opt == "rotate_when" and not _ROTATE_WHEN.fullmatch(text.strip()):
        raise ValueError(f"expected S, M, H, D, midnight or W0..W6, got {text!r}")
    return text


def _stream(r: SectionReader, prefix: str) -> StreamConfig | None:
    entries = [e for e in r.rest() if e.key.startswith(prefix + ".")]
    if not entries:
        return None
    opts: dict[str, str | int | bool] = {}
    cls_entry: Entry | None = None
    for e in entries:
        r.used.add(e.key)
        opt = e.key[len(prefix) + 1:]
        if opt == "class":
            cls_entry = e
            continue
        try:
            opts[opt] = _stream_option(opt, e.value)
        except ValueError as exc:
            r.error_at(e, str(exc))
    if cls_entry is not None:
        cls = cls_entry.value.strip().removeprefix("circus.stream.")
        try:
            _stream_option("class", cls_entry.value)
        except ValueError as exc:
            r.error_at(cls_entry, str(exc))
    else:
        cls = "FileStream" if "filename" in opts else "StdoutStream"
    if cls in ("FileStream", "WatchedFileStream", "TimedRotatingFileStream") and not opts.get("filename"):
        r.error(f"{cls} needs {prefix}.filename", key=f"{prefix}.class")
    return StreamConfig(cls, opts)


def build_watcher(
    sec: Section, name: str, env: Mapping[str, str], sockets: Mapping[str, str], col: Collector,
) -> WatcherConfig | None:
    """`sockets` maps lowercased socket names to their names as written (for reference checks)."""
    r = SectionReader(sec, col)
    cmd_entry = r.entry("cmd")
    if cmd_entry is None or not cmd_entry.value.strip():
        r.error("missing cmd: every watcher needs a command", key="cmd")
    kwargs: dict[str, Any] = {}
    for key, parser in _WATCHER_SIMPLE.items():
        e = r.entry(key)
        if e is None:
            continue
        try:
            kwargs[key] = parser(e.value)
        except ValueError as exc:
            r.error_at(e, str(exc))
    for key in ("args", "working_dir", "shell_args", "executable", "virtualenv", "virtualenv_py_ver"):
        if kwargs.get(key) == "":
            kwargs[key] = None

    if kwargs.get("copy_path") and not kwargs.get("copy_env"):
        # Circus: "copy_env and copy_path must have the same value" (PYTHONPATH joins a copied environ)
        r.error_at(sec.entries["copy_path"], "copy_path = true needs copy_env = true (as in Circus)")

    if kwargs.get("singleton"):
        n = kwargs.get("numprocesses", 1)
        if n > 1:
            e = sec.entries["numprocesses"]
            r.error_at(e, f"expected numprocesses 0 or 1 for a singleton watcher, got {e.value!r}")
        elif "numprocesses" not in kwargs:
            kwargs["numprocesses"] = 1

    # sockets this watcher gets: the explicit list, then those its cmd/args/shell_args reference
    wanted: list[tuple[str, Entry]] = []
    sockets_entry = r.entry("sockets")
    if sockets_entry is not None:
        wanted += [(s, sockets_entry) for s in v.split_list(sockets_entry.value)]
    for key in ("cmd", "args", "shell_args"):
        e = sec.entries.get(key)
        if e is not None:
            wanted += [(s, e) for s in referenced_sockets(e.value)]
    names: list[str] = []
    for ref, e in wanted:
        real = sockets.get(ref.lower())
        if real is None:
            r.error_at(e, f"expected the name of a [socket:NAME] section, got unknown socket {ref!r}")
        elif real not in names:
            names.append(real)
    use_entry = sec.entries.get("use_sockets")
    if kwargs.get("use_sockets") and not names and use_entry is not None:
        # Circus handed every socket to every watcher with use_sockets; we hand over only named ones
        r.warn_at(use_entry, "this watcher names no socket (sockets = NAME, or $(circus.sockets.NAME) in "
                             "cmd/args), so it gets none")
    stdin_entry = r.entry("stdin_socket")
    if stdin_entry is not None and stdin_entry.value.strip():
        real = sockets.get(stdin_entry.value.strip().lower())
        if real is None:
            r.error_at(stdin_entry,
                       f"expected the name of a [socket:NAME] section, got {stdin_entry.value!r}")
        kwargs["stdin_socket"] = real or stdin_entry.value.strip()

    rlimits: dict[str, int] = {}
    hooks: dict[str, HookConfig] = {}
    cgroup: dict[str, Any] = {}
    for key, parser in _CGROUP_KEYS.items():
        e = r.entry(key)
        if e is not None:
            try:
                cgroup[key] = parser(e.value)
            except ValueError as exc:
                r.error_at(e, str(exc))
    streams = {p: _stream(r, p) for p in ("stdout_stream", "stderr_stream")}
    extra: dict[str, str] = {}
    for e in r.rest():
        if e.key.startswith("rlimit_"):
            try:
                v.rlimit_resource(e.key[len("rlimit_"):])
                rlimits[e.key[len("rlimit_"):]] = v.parse_rlimit(e.value)
            except ValueError as exc:
                r.error_at(e, str(exc))
        elif e.key.startswith("hooks."):
            hook = e.key[len("hooks."):]
            if hook not in HOOK_NAMES:
                r.error_at(e, f"expected a hook name ({', '.join(sorted(HOOK_NAMES))}), got {hook!r}")
                continue
            try:
                target, ignore = _parse_hook(e.value)
                hooks[hook] = HookConfig(hook, target, ignore)
            except ValueError as exc:
                r.error_at(e, f"{exc} (form: hooks.{hook} = package.module.function[, true|false])")
        elif e.key in _WATCHER_UNUSED:
            r.warn_at(e, f"accepted but ignored: {_WATCHER_UNUSED[e.key]}")
            extra[e.key] = e.value
        else:
            if "." not in e.key:
                # dotted keys belong to plugins (flapping.max_retry); a bare unknown key is likely a typo
                r.warn_at(e, "unknown watcher option, kept as a free-form option")
            extra[e.key] = e.value

    if cmd_entry is None or not cmd_entry.value.strip():
        return None
    return WatcherConfig(
        name=name,
        cmd=cmd_entry.value,
        env=dict(env),
        rlimits=rlimits,
        stdout_stream=streams["stdout_stream"],
        stderr_stream=streams["stderr_stream"],
        sockets=tuple(names),
        hooks=hooks,
        cgroup=CgroupLimits(**cgroup),
        extra=extra,
        raw={k: e.value for k, e in sec.entries.items()},
        **kwargs,
    )


# ---------------------------------------------------------------- [socket:NAME]

def _parse_systemd(text: str) -> SystemdMode:
    if text.strip().lower() == "only":
        return SystemdMode.ONLY
    try:
        return SystemdMode.AUTO if v.parse_bool(text) else SystemdMode.NO
    except ValueError:
        raise ValueError(f"expected a boolean or 'only', got {text!r}") from None


def build_socket(sec: Section, name: str, col: Collector) -> SocketConfig:
    r = SectionReader(sec, col)
    d = SocketConfig(name)
    path = r.text("path") or None
    port_entry = r.entry("port")
    port = r.take("port", _int(0, 65535), None)
    family_entry = r.entry("family")
    family = r.take("family", v.parse_family, d.family)
    if path is not None and family_entry is None:
        family = int(socket.AF_UNIX)
    if family == socket.AF_UNIX:
        if path is None:
            r.error("unix socket without path: expected path = /run/NAME.sock", key="path")
        if port_entry is not None:
            r.error_at(port_entry, "a unix socket takes a path, not a port")
    else:
        if path is not None:
            fam = "AF_INET6" if family == socket.AF_INET6 else "AF_INET"
            r.error(f"path is only for AF_UNIX sockets, not {fam}", key="path")
        if port_entry is None:
            r.error("tcp/udp socket without port: expected port = 0..65535", key="port")
    owner_entry = r.entry("owner")
    group_entry = r.entry("group")
    for e in (owner_entry, group_entry):
        if e is not None and family != socket.AF_UNIX:
            r.warn_at(e, "only applies to unix sockets, ignored")
    cfg = SocketConfig(
        name=name,
        host=r.text("host") or d.host,
        port=port,
        path=path,
        family=family,
        type=r.take("type", v.parse_socktype, d.type),
        proto=r.take("proto", v.parse_proto, d.proto),
        backlog=r.take("backlog", _int(0), d.backlog),
        umask=r.take("umask", v.parse_octal, None),
        replace=r.take("replace", v.parse_bool, d.replace),
        so_reuseport=r.take("so_reuseport", v.parse_bool, d.so_reuseport),
        interface=r.text("interface") or None,
        blocking=r.take("blocking", v.parse_bool, d.blocking),
        owner=r.take("owner", v.parse_uid, None),
        group=r.take("group", v.parse_gid, None),
        systemd=r.take("systemd", _parse_systemd, d.systemd),
        raw={k: e.value for k, e in sec.entries.items()},
    )
    for e in r.rest():
        r.warn_at(e, "unknown socket option, ignored")
    return cfg


# ---------------------------------------------------------------- [plugin:NAME]

def map_plugin_class(dotted: str) -> str:
    """Circus's bundled plugins live under circus_linux.plugins with the same module paths."""
    if dotted.startswith("circus.plugins."):
        return "circus_linux.plugins." + dotted[len("circus.plugins."):]
    return dotted


def build_plugin(sec: Section, name: str, col: Collector) -> PluginConfig | None:
    r = SectionReader(sec, col)
    use = r.entry("use")
    if use is None or not use.value.strip():
        cmd = sec.entries.get("cmd")
        if cmd is not None and cmd.value.strip():
            # A plugin in any language: its own command line, speaking only the wire (docs/PLUGINS.md).
            r.used.add("cmd")
            return PluginConfig(
                name=name,
                use="",
                options=_plugin_options(r, ""),
                raw={k: e.value for k, e in sec.entries.items()},
                cmd=cmd.value.strip(),
            )
        r.error("plugin without use: expected use = package.module.Class (or cmd = ...)", key="use")
        return None
    try:
        target = map_plugin_class(v.parse_dotted(use.value))
    except ValueError as exc:
        r.error_at(use, str(exc))
        return None
    return PluginConfig(
        name=name,
        use=target,
        options=_plugin_options(r, target),
        raw={k: e.value for k, e in sec.entries.items()},
    )


def _plugin_options(r: SectionReader, use: str) -> dict[str, str]:
    """The section's options as written (the plugin converts them), each known one checked first."""
    for e in r.rest():
        try:
            check_plugin_option(use, e.key, e.value)
        except ValueError as exc:
            r.error_at(e, str(exc))
    return {e.key: e.value for e in r.rest()}


def parse_watcher_option(watcher: str, key: str, value: Any) -> tuple[str, Any]:
    """One watcher option given live (`set`): (field, parsed value), with the ini parsers.

    The field is the option's name, except ``cgroup.<key>`` for a cgroup limit, ``rlimits.<name>`` for
    ``rlimit_<name>`` and ``hooks.<name>`` for a hook. Values already typed by the client (int, float,
    bool from Circus's circusctl; an object for ``env``) are parsed from their text. Raises ConfigError
    naming the key; KeyError for a key it does not know (the caller keeps it as free-form).
    """
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    try:
        return _live_option(key, value, text)
    except ValueError as exc:
        raise ConfigError([ConfigIssue("<set>", f"watcher:{watcher}", key, str(exc))]) from None


def _live_option(key: str, value: Any, text: str) -> tuple[str, Any]:
    if key in _CGROUP_KEYS:
        return f"cgroup.{key}", _CGROUP_KEYS[key](text)
    if key in _WATCHER_SIMPLE:
        return key, _WATCHER_SIMPLE[key](text)
    if key == "cmd":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a command line, got {value!r}")
        return key, value.strip()
    if key == "env":
        return key, _live_env(value)
    if key.startswith("rlimit_"):
        v.rlimit_resource(key[len("rlimit_"):])
        return f"rlimits.{key[len('rlimit_'):]}", v.parse_rlimit(text)
    if key.startswith("hooks."):
        hook = key[len("hooks."):]
        if hook not in HOOK_NAMES:
            raise ValueError(f"expected a hook name ({', '.join(sorted(HOOK_NAMES))}), got {hook!r}")
        target, ignore = _parse_hook(text)
        return key, HookConfig(hook, target, ignore)
    prefix, dot, opt = key.partition(".")
    if dot and prefix in ("stdout_stream", "stderr_stream"):
        return key, _stream_option(opt, text)
    raise KeyError(key)


def _live_env(value: Any) -> dict[str, str]:
    """`env` for `set`: an object of strings (Circus's circusctl), or KEY=VALUE[,KEY=VALUE...] as text."""
    if isinstance(value, str):
        pairs = []
        for part in (p for p in value.split(",") if p.strip()):
            k, sep, val = part.partition("=")
            if not sep or not k.strip():
                raise ValueError(f"expected KEY=VALUE[,KEY=VALUE...] or an object of strings, got {value!r}")
            pairs.append((k.strip(), val.strip()))
        return dict(pairs)
    if isinstance(value, Mapping) and all(isinstance(x, str) for x in (*value.keys(), *value.values())):
        return dict(value)
    raise ValueError(f"expected an object of strings or KEY=VALUE[,KEY=VALUE...], got {value!r}")
