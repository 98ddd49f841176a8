"""Frozen dataclasses describing a loaded configuration; data only, no parsing and no I/O.

Mappings are plain dicts typed as Mapping: treat them as read-only. `raw` fields hold every key as written
(after env substitution), for `options`/`get` and for plugins.
"""

from __future__ import annotations

import enum
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from circus_linux.config.values import MAX, rlimit_resource

Max = Literal["max"]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_PUBSUB_ENDPOINT = "tcp://127.0.0.1:5556"
DEFAULT_STATS_ENDPOINT = "tcp://127.0.0.1:5557"


@dataclass(frozen=True)
class CircusConfig:
    """The [circus] section."""

    endpoint: str = DEFAULT_ENDPOINT
    pubsub_endpoint: str = DEFAULT_PUBSUB_ENDPOINT
    stats_endpoint: str = DEFAULT_STATS_ENDPOINT
    statsd: bool = False
    check_delay: float = 5.0
    include: tuple[str, ...] = ()
    include_dir: tuple[str, ...] = ()
    warmup_delay: float = 0.0
    pidfile: str | None = None
    umask: int | None = None
    loglevel: str | None = None
    logoutput: str | None = None
    loggerconfig: str | None = None
    endpoint_owner: int | None = None  # uid (names resolved at load)
    endpoint_group: int | None = None  # gid of ipc:// sockets (names resolved at load)
    endpoint_mode: int | None = None  # ipc:// socket mode; None = 0600, or 0660 with endpoint_group
    curve_secret_key: str | None = None  # .key_secret file: every endpoint then requires CURVE
    curve_authorized_keys: str | None = None  # directory of clients' public .key files
    insecure: bool = False  # allow a non-loopback tcp endpoint without CURVE (logged loudly)
    allow_spawn_changes: bool = True  # false: `add` and spawn-affecting `set` keys refused on the wire
    disabled_commands: tuple[str, ...] = ()  # commands refused on the wire
    debug: bool = False
    cgroup_root: str | None = None
    httpd: bool = False
    httpd_host: str = "localhost"
    httpd_port: int = 8080
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamConfig:
    """stdout_stream.* / stderr_stream.*: `cls` is a short Circus name (FileStream, ...) or a dotted path."""

    cls: str
    options: Mapping[str, str | int | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class HookConfig:
    """hooks.<name> = dotted.func[, ignore_error]."""

    name: str
    target: str
    ignore_error: bool = False


@dataclass(frozen=True)
class CgroupLimits:
    """Per-watcher cgroup v2 limits; None = not configured, 'max' = explicitly unlimited."""

    memory_max: int | Max | None = None
    memory_high: int | Max | None = None
    memory_swap_max: int | Max | None = None
    cpu_max: tuple[int | None, int] | None = None  # (quota_us or None for max, period_us)
    cpu_weight: int | None = None
    io_weight: int | None = None
    pids_max: int | Max | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, f) is not None for f in self.__dataclass_fields__)


@dataclass(frozen=True)
class WatcherConfig:
    """A [watcher:NAME] section with Circus defaults; field names are the Circus option names."""

    name: str
    cmd: str
    args: str | None = None
    numprocesses: int = 1
    warmup_delay: float = 0.0
    working_dir: str | None = None
    shell: bool = False
    shell_args: str | None = None
    executable: str | None = None
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    copy_env: bool = False  # the runtime lays `env` over os.environ when true; config never reads it
    copy_path: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # [env] + [env:...] merged for this watcher
    rlimits: Mapping[str, int] = field(default_factory=dict)  # 'nofile' -> value (RLIM_INFINITY = unlimited)
    stdout_stream: StreamConfig | None = None
    stderr_stream: StreamConfig | None = None
    stdin_socket: str | None = None
    close_child_stdin: bool = True
    close_child_stdout: bool = False
    close_child_stderr: bool = False
    priority: int = 0
    singleton: bool = False
    use_sockets: bool = False
    sockets: tuple[str, ...] = ()  # `sockets = a,b` plus sockets referenced in cmd/args, in order
    max_retry: int = 5
    graceful_timeout: float = 30.0
    stop_signal: int = int(signal.SIGTERM)
    stop_children: bool = False
    send_hup: bool = False
    max_age: int = 0
    max_age_variance: int = 30
    respawn: bool = True
    autostart: bool = True
    on_demand: bool = False
    hooks: Mapping[str, HookConfig] = field(default_factory=dict)
    virtualenv: str | None = None
    virtualenv_py_ver: str | None = None
    cgroup: CgroupLimits = field(default_factory=CgroupLimits)
    notify: bool = False  # the worker sends READY=1 on its NOTIFY_SOCKET; otherwise ready = spawned
    ready_timeout: float = 30.0
    extra: Mapping[str, str] = field(default_factory=dict)  # unknown keys, e.g. flapping.max_retry
    raw: Mapping[str, str] = field(default_factory=dict)

    @property
    def rlimit_resources(self) -> dict[int, tuple[int, int]]:
        """rlimits as SpawnSpec wants them: resource.RLIMIT_* -> (soft, hard), both set to the value."""
        return {rlimit_resource(k): (v, v) for k, v in self.rlimits.items()}


class SystemdMode(enum.Enum):
    """[socket] systemd = ...: ONLY never binds (the fd must come from systemd). NO (the default) and AUTO
    both adopt an fd systemd passes under the section's name, and bind otherwise: the sockets circusd
    keeps in systemd's fd store come back that way after a restart, whatever the section says, so `no`
    cannot mean "never adopt" without breaking that (the review of 2026-11-28 found the old wording)."""

    NO = "no"
    AUTO = "yes"
    ONLY = "only"


@dataclass(frozen=True)
class SocketConfig:
    """A [socket:NAME] section."""

    name: str
    host: str = "localhost"
    port: int | None = None
    path: str | None = None
    family: int = int(socket.AF_INET)  # AF_UNIX when path is set
    type: int = int(socket.SOCK_STREAM)
    proto: int = 0
    backlog: int = 2048
    umask: int | None = None  # octal, unix sockets
    replace: bool = False  # unix path: also take it from a live socket (a stale socket file is always taken)
    so_reuseport: bool = False
    interface: str | None = None
    blocking: bool = False
    owner: int | None = None  # uid for unix sockets
    group: int | None = None  # gid for unix sockets
    systemd: SystemdMode = SystemdMode.NO
    raw: Mapping[str, str] = field(default_factory=dict)


# [plugin:NAME] runs as the singleton watcher `plugin:NAME` (runtime/plugins.py).
PLUGIN_WATCHER_PREFIX = "plugin:"


@dataclass(frozen=True)
class PluginConfig:
    """A [plugin:NAME] section; `use` already maps circus.plugins.* to circus_linux.plugins.*."""

    name: str
    use: str
    options: Mapping[str, str] = field(default_factory=dict)  # every key but `use`
    raw: Mapping[str, str] = field(default_factory=dict)
    cmd: str | None = None  # a non-Python plugin's command line, given instead of `use` (then use == "")


@dataclass(frozen=True)
class ImportTarget:
    """A dotted name circusd will import (a plugin's `use` class, a watcher's hook function) and where it
    is written: the config stays pure, and the composition root resolves these (cli/circusd.py)."""

    kind: Literal["plugin", "hook"]
    target: str  # as the runtime resolves it (circus.plugins.* already mapped)
    file: str
    line: int | None
    section: str
    key: str


@dataclass(frozen=True)
class Config:
    path: str
    circus: CircusConfig = field(default_factory=CircusConfig)
    watchers: tuple[WatcherConfig, ...] = ()  # file order
    sockets: tuple[SocketConfig, ...] = ()
    plugins: tuple[PluginConfig, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # the plain [env] section
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # every file read, main file first (for reloadconfig / --check output)
    imports: tuple[ImportTarget, ...] = ()  # plugin classes and hook functions, in file order

    def watcher(self, name: str) -> WatcherConfig | None:
        return next((w for w in self.watchers if w.name == name), None)

    def socket(self, name: str) -> SocketConfig | None:
        return next((s for s in self.sockets if s.name == name), None)

    def plugin(self, name: str) -> PluginConfig | None:
        return next((p for p in self.plugins if p.name == name), None)


__all__ = [
    "MAX",
    "CgroupLimits",
    "CircusConfig",
    "Config",
    "HookConfig",
    "PluginConfig",
    "SocketConfig",
    "StreamConfig",
    "SystemdMode",
    "WatcherConfig",
]
