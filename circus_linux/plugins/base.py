"""CircusPlugin: the Python plugin API (Circus's shape) over the control and pub/sub endpoints only."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import zmq

from circus_linux.control.client import CallError, Client
from circus_linux.kernel.notify import Notifier
from circus_linux.plugins.loop import PluginLoop

log = logging.getLogger("circus_linux.plugins")

# The environment every plugin process gets from circusd (docs/PLUGINS.md is the contract).
ENV_ENDPOINT = "CIRCUS_ENDPOINT"
ENV_PUBSUB = "CIRCUS_PUBSUB_ENDPOINT"
ENV_STATS = "CIRCUS_STATS_ENDPOINT"
ENV_NAME = "CIRCUS_PLUGIN_NAME"
ENV_OPTIONS = "CIRCUS_PLUGIN_OPTIONS"
ENV_CHECK_DELAY = "CIRCUS_CHECK_DELAY"

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_PUBSUB = "tcp://127.0.0.1:5556"
DEFAULT_STATS = "tcp://127.0.0.1:5557"
CALL_TIMEOUT = 5.0
# After connecting the SUB socket: how long to keep polling it before saying READY=1, so that the
# subscription has reached circusd's PUB (the zmq "slow joiner") by the time circusd starts the watchers.
SUBSCRIBE_SETTLE = 0.05
HANDSHAKE_TIMEOUT = 10.0


class PluginStopping(BaseException):
    """SIGTERM arrived while the plugin waited (on circusd, or inside `interruptible()`): unwind to
    handle_stop at once.

    A BaseException so that a plugin's own `except Exception` around `call()` does not swallow it.
    """


class Frame(bytes):
    """One frame of an event as Circus gave it (bytes), whose str() is the decoded text.

    Circus plugins split topics as bytes (`topic.split(b".")`) and json.loads the message; the talk's
    Logger formats them with '%s::%s'. A bytes subclass keeps both working: the log line reads
    `watcher.web.spawn::{"process_pid": 12, ...}` instead of `b'watcher.web.spawn'::b'{...}'`.
    """

    def __str__(self) -> str:
        return self.decode("utf-8", "replace")


class CircusPlugin:
    """Base class of a plugin: subscribe to events, react in `handle_recv`, act through `call`/`cast`.

    Subclasses set `name` and override `handle_init`, `handle_recv((topic, msg))` and `handle_stop`. Every
    constructor argument has a default read from the environment circusd gives the plugin process, so a
    subclass may take only its own options (`def __init__(self, filename, **kwargs)`) and pass the rest on.
    Options arrive as strings, as written in the ini file; `self.config` keeps those not consumed.
    `self.loop` offers `call_later`, `call_every` and `add_reader` for timers and extra sockets.
    """

    name = ""
    # Event topics to subscribe to (prefixes); Circus plugins listen to every watcher event.
    topics: tuple[bytes, ...] = (b"watcher.",)

    def __init__(
        self,
        endpoint: str | None = None,
        pubsub_endpoint: str | None = None,
        check_delay: float | str | None = None,
        ssh_server: str | None = None,
        stats_endpoint: str | None = None,
        **config: Any,
    ) -> None:
        env = os.environ
        self.endpoint = endpoint or env.get(ENV_ENDPOINT, DEFAULT_ENDPOINT)
        self.pubsub_endpoint = pubsub_endpoint or env.get(ENV_PUBSUB, DEFAULT_PUBSUB)
        self.stats_endpoint = stats_endpoint or env.get(ENV_STATS, DEFAULT_STATS)
        self.check_delay = float(check_delay if check_delay is not None else env.get(ENV_CHECK_DELAY, 5.0))
        if ssh_server:
            # Plugins run on the circusd host, next to its endpoints: a tunnel has no use here.
            log.warning("plugin %s: ssh_server=%s ignored", self.name, ssh_server)
        self.ssh_server = ssh_server
        self.config: dict[str, Any] = dict(config)
        self.plugin_name = env.get(ENV_NAME) or self.name
        self.loop = PluginLoop()
        self.context: zmq.Context[Any] = zmq.Context()
        self.client: Client | None = None
        self.sub_socket: zmq.Socket[Any] | None = None
        self.running = False
        # Circus: `active = false` in [plugin:NAME] means the plugin does not run (circusd does not start
        # it; started by hand, it exits 0 at once). Kept in self.config too, as Circus does.
        self.active: bool = option(self.config, "active", True, bool)
        self._wakeup: tuple[int, int] | None = None
        self._interruptible = False  # inside call(), the start-up waits or `with self.interruptible()`
        self._stopping = False  # handle_stop runs: a stop asked earlier no longer cuts a call short
        self._notifier: Notifier | None = None  # kept after READY=1 for set_status()

    # ------------------------------------------------------------------ to override
    def handle_init(self) -> None:
        """Called once before the first event: open files, start timers."""

    def handle_recv(self, data: tuple[Frame, Frame]) -> None:
        """Called with (topic, msg) for every event: msg is the JSON text (see load_message)."""

    def handle_stop(self) -> None:
        """Called once when the plugin stops (SIGTERM from circusd, or stop())."""

    # ------------------------------------------------------------------ wire
    def call(self, command: str, **props: Any) -> dict[str, Any]:
        """Send a command and return circusd's reply dict; errors come back as {"status": "error", ...}."""
        if self.client is None:
            self.client = Client(self.endpoint, timeout=CALL_TIMEOUT, context=self.context)
        try:
            with self.interruptible():
                return self.client.request(command, **props)
        except CallError as exc:
            log.warning("plugin %s: %s failed: %s", self.plugin_name, command, exc)
            return {"status": "error", "reason": str(exc)}

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A blocking wait (a fetch, a call) that SIGTERM ends at once with PluginStopping, which unwinds
        to handle_stop: circusd's stop must not wait for a timeout, nor SIGKILL us after its 5 s.
        Nothing else may catch PluginStopping (it is a BaseException for that reason)."""
        previous = self._interruptible
        self._interruptible = True
        try:
            if self.loop.stop_requested and not self._stopping:  # a SIGTERM came before the wait began
                raise PluginStopping()
            yield
        finally:
            self._interruptible = previous

    def cast(self, command: str, **props: Any) -> None:
        """Send a command without waiting for (or getting) a reply."""
        if self.client is None:
            self.client = Client(self.endpoint, timeout=CALL_TIMEOUT, context=self.context)
        self.client.cast(command, **props)

    @staticmethod
    def split_data(data: tuple[bytes | str, bytes | str]) -> tuple[str, str, bytes | str]:
        """(topic, msg) -> (watcher name, event, msg); a name may contain dots (`watcher.a.b.spawn`)."""
        topic, msg = data
        text = topic.decode() if isinstance(topic, bytes) else topic
        _kind, _, rest = text.partition(".")
        name, _, action = rest.rpartition(".")
        return name, action, msg

    @staticmethod
    def load_message(msg: bytes | str) -> dict[str, Any]:
        value = json.loads(msg)
        return value if isinstance(value, dict) else {"value": value}

    # ------------------------------------------------------------------ life
    def initialize(self) -> None:
        self.client = Client(self.endpoint, timeout=CALL_TIMEOUT, context=self.context)
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        for topic in self.topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        # Watch the connection's handshake: connect() returns at once, and a subscription only travels
        # once the handshake is done; READY=1 must not be said before (see _settle).
        self._monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sub.connect(self.pubsub_endpoint)
        self.sub_socket = sub
        self.loop.add_reader(sub, self._on_events)

    def _on_events(self, stopping: bool = False) -> None:
        sub = self.sub_socket
        while sub is not None and (self.loop.running or stopping):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            self.handle_recv((Frame(frames[0]), Frame(frames[1])))

    def _install_signals(self) -> None:
        # The C-level handler writes to the wakeup pipe, which the poller watches: a SIGTERM ends a poll
        # that would otherwise sleep until the next timer.
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (r, w)
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_signal)
        self.loop.add_reader(r, self._drain_wakeup)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.loop.stop()  # kept: a loop not yet running returns at once (a SIGTERM during handle_init)
        if self._interruptible:
            # Blocked in a call (circusd may be shutting down and never answer) or a fetch: circusd's
            # stop must not wait for our timeout.
            raise PluginStopping()

    def _drain_wakeup(self) -> None:
        if self._wakeup is None:
            return
        try:
            while os.read(self._wakeup[0], 512):
                pass
        except BlockingIOError:
            pass

    def start(self) -> None:
        """Run until SIGTERM/SIGINT or stop(): handle_init, connect, READY=1, loop, handle_stop.

        A SIGTERM at any point of the start (in handle_init, in one of its calls, while connecting) ends
        the plugin the usual way: handle_stop runs and start() returns (exit 0). A plugin whose start
        raises anything else dies of it, without handle_stop.
        """
        if not self.active:
            log.info("plugin %s: active = false: not running", self.plugin_name)
            self.context.term()
            return
        self._install_signals()
        begun = False
        try:
            with contextlib.suppress(PluginStopping):
                self._begin()
                begun = True
                self.loop.run()  # returns at once when a stop was asked during _begin
            begun = True  # also after a PluginStopping: a stop as asked
        finally:
            self.running = False
            self._stopping = True
            try:
                # A second SIGTERM while handle_stop waits in a call ends that wait, and the plugin.
                with contextlib.suppress(PluginStopping):
                    if begun:
                        # Events circusd published before it stopped us are already queued here: hand
                        # them over (a stop right after an incr must not lose the incr's spawn event).
                        self._on_events(stopping=True)
                        self.handle_stop()
            finally:
                self._close()

    def _begin(self) -> None:
        """handle_init, connect, settle, READY=1; PluginStopping as soon as a SIGTERM is known."""
        self.handle_init()
        with self.interruptible():  # raises at once if the SIGTERM came during handle_init
            self.initialize()
            self.running = True
            self._settle()
        self._notifier = Notifier.from_environ(unset=True)
        self._notifier.notify("READY=1", STATUS=f"plugin {self.plugin_name} listening")

    def _settle(self) -> None:
        """Wait for the SUB handshake (bounded), then poll briefly so the subscription reaches circusd."""
        monitor = getattr(self, "_monitor", None)
        if monitor is not None and self.sub_socket is not None:
            # On a loaded machine the ipc/tcp connect itself can take longer than any fixed settle time.
            if monitor.poll(int(HANDSHAKE_TIMEOUT * 1000)):
                monitor.recv_multipart()
            self.sub_socket.disable_monitor()
            monitor.close(linger=0)
            self._monitor = None
        if self.sub_socket is not None and self.sub_socket.poll(int(SUBSCRIBE_SETTLE * 1000)):
            self.loop.call_later(0, self._on_events)

    def set_status(self, text: str) -> None:
        """Say what the plugin is doing as STATUS= (circusd shows it as `notify_status` in `stats`).

        The only way a plugin's own words reach circusd's clients: it cannot publish on the PUB socket.
        A no-op without a notify socket (a `cmd` plugin, or a plugin run by hand).
        """
        if self._notifier is None:
            return
        try:
            # one line: STATUS= ends at a newline; a full queue drops it (a later status supersedes it)
            self._notifier.notify_or_drop(STATUS=" ".join(text.split()))
        except OSError as exc:  # circusd is gone or stopping: the status has nobody to reach
            log.debug("plugin %s: STATUS= not sent: %s", self.plugin_name, exc)

    def stop(self) -> None:
        self.loop.stop()

    def _close(self) -> None:
        if self.sub_socket is not None:
            self.sub_socket.close(linger=0)
            self.sub_socket = None
        if self.client is not None:
            self.client.close()
            self.client = None
        self.context.term()
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None


_KIND_WORDS = {int: "an integer", float: "a number", bool: "a boolean (true/false/yes/no/on/off/1/0)"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def to_bool(value: Any) -> bool:
    """An ini boolean as Circus's to_bool reads it (strict): ValueError for anything but the words above.

    values.parse_bool's words, kept here: a plugin process does not import circus_linux.config, whose
    package loads the whole loader."""
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"expected {_KIND_WORDS[bool]}, got {value!r}")
    return text in _TRUE


def option(config: dict[str, Any], key: str, default: Any, kind: type = str) -> Any:
    """Read an option given as ini text (or already typed): option(cfg, 'port', 8125, int).

    A value that is not a `kind` is a ValueError naming the section and the key, as the loader does:
    ``[plugin:flap] retry_in: expected a number, got 'abc'`` (booleans as Circus's to_bool: strict).
    """
    value = config.get(key, default)
    if value is None or isinstance(value, kind):
        return value
    try:
        return to_bool(value) if kind is bool else kind(value)
    except (TypeError, ValueError):
        pass
    section = os.environ.get(ENV_NAME)
    where = f"[plugin:{section}] {key}" if section else key
    raise ValueError(f"{where}: expected {_KIND_WORDS.get(kind, kind.__name__)}, got {value!r}")
