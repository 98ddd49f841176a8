"""circusctl: Circus's command-line client (same syntax) over the control client; renders, never decides.

A one-shot call to one endpoint is the common case and its wall time is mostly interpreter start-up and
imports, so this module imports only argparse, json, the sync zmq API and the control client. Multi-host
(asyncio, zmq.asyncio), CURVE keys (zmq.auth), ssh tunnels and keygen are imported inside the branch
that needs them; tests/integration/test_circusctl_imports.py holds that line.
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import zmq

from circus_linux import __version__
from circus_linux.cli.helpformat import HelpFormatter
from circus_linux.control.client import DEFAULT_ENDPOINT, CallError, Client
from circus_linux.control.command_names import NAMES
from circus_linux.errors import CircusError

if TYPE_CHECKING:
    from circus_linux.cli.multihost import SshTunnel
    from circus_linux.control.keys import ClientKeys
    from circus_linux.control.multi import Host

DEFAULT_PUBSUB = "tcp://127.0.0.1:5556"
# Exit statuses. Circus's circusctl exits 3 on an error reply, but 0 with --json/--prettify: ours keeps 3
# there too, so that a failing command never looks successful to a script.
EXIT_OK = 0
EXIT_UNREACHED = 1  # no answer: connection failure, timeout, bad endpoint
EXIT_USAGE = 2
EXIT_ERROR_REPLY = 3  # circusd answered {"status": "error"}
EXIT_STATUS_HELP = (
    "Exit status: 0 success; 1 circusd not reached (bad endpoint, connection failure, timeout); 2 usage "
    "error; 3 circusd answered with an error, also with --json/--prettify (where Circus's circusctl exits 0)."
)
SINGLETON_MSG = "This watcher is a Singleton - not changing the number of processes"
COMMAND_HELP = {
    "add": "add a watcher: add [--start] NAME CMD...",
    "rm": "remove a watcher: rm NAME [--nostop]",
    "start": "start watchers: start [NAME] [--match M] [--waiting]",
    "stop": "stop watchers: stop [NAME] [--match M] [--waiting]",
    "restart": "restart watchers: restart [NAME] [--match M] [--waiting]",
    "reload": "reload workers: reload [NAME] [--terminate] [--sequential] [--waiting]",
    "reloadconfig": "re-read the config file and apply the difference",
    "quit": "stop every watcher and exit circusd",
    "upgrade": "re-execute circusd in place (same pid), keeping workers and sockets",
    "incr": "add processes: incr NAME [NB] [--waiting]",
    "decr": "remove processes: decr NAME [NB] [--waiting]",
    "numprocesses": "desired process count: numprocesses [NAME]",
    "numwatchers": "number of watchers",
    "list": "watcher names, or the pids of one: list [NAME]",
    "listsockets": "the sockets circusd holds",
    "status": "watcher states: status [NAME]",
    "stats": "process figures: stats [NAME [PID]] [--extended]",
    "dstats": "circusd's own figures",
    "options": "every option of a watcher: options NAME",
    "get": "some options of a watcher: get NAME KEY...",
    "set": "change options live: set NAME KEY VALUE [KEY VALUE...] [--waiting]",
    "globaloptions": "the [circus] options: globaloptions [OPTION]",
    "signal": "send a signal: signal NAME [PID [CHILDPID]] SIGNUM [--children] [--recursive]",
    "kill": "stop processes now (stop_signal or --signum, SIGKILL after the graceful timeout): "
    "kill NAME [PID] [--signum SIG] [--graceful-timeout S] [--waiting]",
    "listen": "print the event stream: listen [PUBSUB] [TOPIC...] [-n COUNT], or as in Circus: "
    "--endpoint PUBSUB listen [TOPIC...]",
    "logs": "captured output of a watcher: logs NAME [-f] [--wid N] [--lines N] [--pubsub ENDPOINT]",
    "keygen": "write a CURVE key pair (no circusd needed): keygen DIR [NAME]",
    "dashboard-url": "the [circus] httpd dashboard's URL with its action token (read from the file circusd "
    "writes beside the control socket, readable by the control socket's users only)",
}
# `set` values Circus's own circusctl converts before sending; the rest travel as text (circusd parses them).
_INT_KEYS = {"numprocesses", "max_retry", "max_age", "max_age_variance", "priority"}
_FLOAT_KEYS = {"warmup_delay", "graceful_timeout", "retry_in", "check_delay"}
_BOOL_KEYS = {
    "shell",
    "copy_env",
    "copy_path",
    "send_hup",
    "stop_children",
    "respawn",
    "autostart",
    "singleton",
}


class UsageError(Exception):
    """Bad command-line arguments for one command."""


# ----------------------------------------------------------------------------- argument parsing
def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--endpoint",
        action="append",
        default=default,
        help="control endpoint (env CIRCUSCTL_ENDPOINT); repeat it to run on several hosts; "
        "for listen, the pubsub endpoint (the env variable is not used there)",
    )
    add_remote_options(parser, suppress)
    parser.add_argument("--timeout", type=float, default=argparse.SUPPRESS if suppress else 5.0)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print the raw JSON reply (an error reply still exits 3)")  # fmt: skip
    parser.add_argument("--prettify", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print the JSON reply indented (an error reply still exits 3)")  # fmt: skip


def add_remote_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The remote/multi-host global options (also circus-top's): hosts, CURVE keys, ssh."""
    d: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--hosts", metavar="FILE", default=d,
                        help="hosts file: lines NAME ENDPOINT [SERVER_KEY]; runs on every host")  # fmt: skip
    parser.add_argument("--host", action="append", metavar="NAME", default=d,
                        help="only this host of --hosts (repeatable)")  # fmt: skip
    parser.add_argument("--server-key", "--server_key", dest="server_key", metavar="FILE", default=d,
                        help="server's CURVE public key (env CIRCUSCTL_SERVER_KEY)")  # fmt: skip
    parser.add_argument("--client-key", "--client_key", dest="client_key", metavar="FILE", default=d,
                        help="our CURVE .key_secret (env CIRCUSCTL_CLIENT_KEY)")  # fmt: skip
    parser.add_argument(
        "--ssh", metavar="USER@HOST[:PORT]", default=d, help="reach tcp endpoints through ssh"
    )
    parser.add_argument("--ssh_keyfile", "--ssh-keyfile", dest="ssh_keyfile", default=d,
                        help="private key for --ssh")  # fmt: skip


class _Skipped:
    """Stands in for a subparser build_parser(only=...) leaves out: takes its arguments, builds nothing."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None


_VALUE_OPTIONS = (
    "--endpoint", "--timeout", "--hosts", "--host", "--server-key", "--server_key", "--client-key",
    "--client_key", "--ssh", "--ssh_keyfile", "--ssh-keyfile",
)  # fmt: skip
_FLAG_OPTIONS = ("--json", "--prettify")  # `-h/--help` and `--version` want the whole parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of a circusctl command line, or None when not sure (help, odd options).

    Global options come first and some take a value, possibly abbreviated (`--end X`) as argparse allows:
    a word is the command only when everything before it is understood.
    """
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            return word if word in COMMAND_HELP else None
        name, eq, _value = word.partition("=")
        known = (*_VALUE_OPTIONS, *_FLAG_OPTIONS)
        matches = [name] if name in known else [o for o in known if len(name) > 2 and o.startswith(name)]
        if len({m.replace("_", "-") for m in matches}) != 1:
            return None  # unknown, ambiguous, `-h`, `--help`, `--version`, `--`
        if matches[0] in _VALUE_OPTIONS and not eq:
            next(words, None)
        elif matches[0] in _FLAG_OPTIONS and eq:
            return None  # `--json=x`: let argparse word the error
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """circusctl's parser; with `only`, the parser of that one command (what a one-shot call needs).

    All 27 subparsers cost ~8 ms (argparse looks up gettext catalogs and builds a formatter for every
    parser and argument), about a tenth of a `circusctl list`; the result of parsing `only`'s command
    line is the same either way.
    """
    parser = argparse.ArgumentParser(
        prog="circusctl",
        description="Control a running circusd. With no command, opens an interactive shell.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=HelpFormatter,
    )
    _globals(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"circus-linux {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    _globals(common, suppress=True)  # global options are accepted after the command too, as in Circus

    def add(name: str) -> argparse.ArgumentParser | _Skipped:
        if only is not None and name != only:
            return _Skipped()
        return sub.add_parser(
            name,
            parents=[common],
            help=COMMAND_HELP[name],
            description=COMMAND_HELP[name],
            formatter_class=HelpFormatter,
        )

    p = add("add")
    p.add_argument("--start", action="store_true")
    p.add_argument("--waiting", action="store_true")
    p.add_argument("name")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = add("rm")
    p.add_argument("name")
    p.add_argument("--nostop", action="store_true")
    p.add_argument("--waiting", action="store_true")
    for name in ("start", "stop", "restart"):
        p = add(name)
        p.add_argument("name", nargs="?")
        p.add_argument("--match", choices=("simple", "glob", "regex"))
        p.add_argument("--waiting", action="store_true")
    p = add("reload")
    p.add_argument("name", nargs="?")
    p.add_argument("--terminate", action="store_true", help="stop the old processes first (not graceful)")
    p.add_argument("--sequential", action="store_true")
    p.add_argument("--waiting", action="store_true")
    for name in ("reloadconfig", "quit"):
        add(name).add_argument("--waiting", action="store_true")
    for name in ("incr", "decr"):
        p = add(name)
        p.add_argument("name")
        p.add_argument("nb", nargs="?", type=int)
        p.add_argument("--waiting", action="store_true")
    for name in ("numprocesses", "list", "status"):
        add(name).add_argument("name", nargs="?")
    for name in ("numwatchers", "listsockets", "dstats", "upgrade"):
        add(name)
    p = add("stats")
    p.add_argument("name", nargs="?")
    p.add_argument("process", nargs="?", type=int)
    p.add_argument("--extended", action="store_true")
    add("options").add_argument("name")
    p = add("get")
    p.add_argument("name")
    p.add_argument("keys", nargs="+")
    p = add("set")
    p.add_argument("name")
    p.add_argument("pairs", nargs="+", metavar="KEY VALUE")
    p.add_argument("--waiting", action="store_true")
    add("globaloptions").add_argument("option", nargs="?")
    p = add("signal")
    p.add_argument("name")
    p.add_argument("rest", nargs="+", metavar="[PID [CHILDPID]] SIGNUM")
    p.add_argument("--children", action="store_true")
    p.add_argument("--recursive", action="store_true")
    p = add("kill")
    p.add_argument("name")
    p.add_argument("pid", nargs="?", type=int)
    p.add_argument("--signum")
    p.add_argument("--graceful-timeout", "--graceful_timeout", dest="graceful_timeout", type=float)
    p.add_argument("--waiting", action="store_true")
    p = add("listen")
    # One list, split by split_listen(): argparse cannot tell `listen ENDPOINT` from Circus's `listen TOPIC`.
    p.add_argument(
        "topics",
        nargs="*",
        metavar="[PUBSUB] TOPIC",
        help=f"topic prefixes (default: all). A first word with :// is the pubsub endpoint; without one, "
        f"the --endpoint given (one; several: each host's own), else {DEFAULT_PUBSUB}",
    )
    p.add_argument("-n", "--count", type=int, help="exit after COUNT events")
    p = add("logs")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    p.add_argument("--wid", type=int)
    p.add_argument("--lines", type=int, default=20, help="how many of the last lines (default 20)")
    p.add_argument("--pubsub", help="event endpoint for -f (default: circusd's pubsub_endpoint)")
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)  # -f: exit after COUNT new lines (tests)
    add("dashboard-url")
    p = add("keygen")
    p.add_argument("directory")
    p.add_argument("keyname", nargs="?", default="client", help="file name stem (default: client)")
    return parser


_LIST_ARGS = {"signal": "rest", "get": "keys", "set": "pairs", "listen": "topics"}


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, but positionals may follow flags (`signal web 12 --children hup`), as in Circus."""
    ns, extra = parser.parse_known_args(argv)
    dest = _LIST_ARGS.get(getattr(ns, "command", None) or "")
    if extra and dest is not None and not any(e.startswith("-") for e in extra):
        setattr(ns, dest, [*getattr(ns, dest), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(ns, "command", None) == "listen":
        ns.pubsub, ns.topics = split_listen(ns.topics)
    return ns


def split_listen(words: Sequence[str]) -> tuple[str | None, list[str]]:
    """`listen` positionals as (endpoint or None, topics): ours is `listen [ENDPOINT] [TOPIC...]`, Circus's
    `--endpoint PUBSUB listen [TOPIC...]`. A topic never holds "://", an endpoint always does."""
    if words and "://" in words[0]:
        return words[0], list(words[1:])
    return None, list(words)


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
               "off": False}


def _convert(key: str, value: str) -> Any:
    """Typed as Circus's circusctl sends it when the text reads as that type; else the text itself, which
    circusd parses (and refuses, naming the key, when it is not a valid value)."""
    try:
        if key in _INT_KEYS:
            return int(value)
        if key in _FLOAT_KEYS:
            return float(value)
    except ValueError:
        return value
    if key in _BOOL_KEYS:
        return _BOOL_WORDS.get(value.strip().lower(), value)
    return value


def to_request(ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The (command, properties) Circus's own circusctl would send for these arguments."""
    command: str = ns.command
    props: dict[str, Any] = {}
    for key in ("name", "match", "nb", "process", "option"):
        if getattr(ns, key, None) is not None:
            props[key] = getattr(ns, key)
    for flag in ("waiting", "start", "nostop", "sequential", "extended", "children", "recursive"):
        if getattr(ns, flag, False):
            props[flag] = True
    if command == "add":
        if not ns.cmd:
            raise UsageError("add needs a command")
        props["cmd"] = " ".join(ns.cmd)
    elif command == "reload":
        props["graceful"] = not ns.terminate
    elif command == "get":
        props["keys"] = list(ns.keys)
    elif command == "set":
        if len(ns.pairs) % 2:
            raise UsageError("set needs KEY VALUE pairs")
        try:
            props["options"] = {k: _convert(k, v) for k, v in zip(ns.pairs[::2], ns.pairs[1::2], strict=True)}
        except ValueError as exc:
            raise UsageError(f"set: {exc}") from None
    elif command == "signal":
        if len(ns.rest) > 3:
            raise UsageError("signal NAME [PID [CHILDPID]] SIGNUM")
        *pids, props["signum"] = ns.rest
        if pids:
            props["pid"] = _int(pids[0], "pid")
        if len(pids) == 2:
            props["childpid"] = _int(pids[1], "childpid")
    elif command == "kill":
        if ns.pid is not None:
            props["pid"] = ns.pid
        if ns.signum is not None:
            props["signum"] = ns.signum
        if ns.graceful_timeout is not None:
            props["graceful_timeout"] = ns.graceful_timeout
    return command, props


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be a number: {text!r}") from None


# ----------------------------------------------------------------------------- rendering
def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _fmt_num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else str(value)


_STATS_HEADER = ("WATCHER", "PID", "WID", "CPU%", "MEM%", "RSS", "VMS", "CTIME", "AGE", "CMD")


def _stats_rows(watcher: str, infos: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for pid, info in sorted(infos.items(), key=lambda kv: _sort_pid(kv[0])):
        if not isinstance(info, dict):
            rows.append([watcher, pid, None, None, None, None, None, None, None, info])
            continue
        rows.append(_stats_row(watcher, info))
        for child in info.get("children") or []:
            if isinstance(child, dict):
                rows.append(_stats_row("  └", child))
    return rows


def _sort_pid(pid: str) -> int:
    return int(pid) if pid.isdigit() else 0


def _stats_row(watcher: str, info: dict[str, Any]) -> list[Any]:
    age = info.get("age")
    return [
        watcher,
        info.get("pid"),
        info.get("wid"),
        _fmt_num(info.get("cpu"), ".1f"),
        _fmt_num(info.get("mem"), ".1f"),
        info.get("mem_info1"),
        info.get("mem_info2"),
        info.get("ctime"),
        None if age is None else _fmt_num(age, ".0f") + "s",
        info.get("cmdline"),
    ]


def render(command: str, reply: dict[str, Any]) -> str:
    """Readable text for an ok reply (Circus's formats where scripts rely on them: list, numbers)."""
    if "watchers" in reply:
        return ",".join(reply["watchers"])
    if "pids" in reply:
        return ",".join(str(p) for p in reply["pids"])
    if reply.get("singleton") and command in ("incr", "decr"):
        return SINGLETON_MSG
    if "numprocesses" in reply:
        return str(reply["numprocesses"])
    if "numwatchers" in reply:
        return str(reply["numwatchers"])
    if "statuses" in reply:
        return "\n".join(f"{name}: {st}" for name, st in sorted(reply["statuses"].items()))
    if "status" in reply and command == "status":
        return str(reply["status"])
    if command == "stats":
        if "infos" in reply:
            rows = [r for name in sorted(reply["infos"]) for r in _stats_rows(name, reply["infos"][name])]
        elif "process" in reply:
            info = reply.get("info")
            rows = (
                [_stats_row("", info)]
                if isinstance(info, dict)
                else [["", reply["process"], *[None] * 7, info]]
            )
        else:
            rows = _stats_rows(reply.get("name", ""), reply.get("info") or {})
        return _table(rows, _STATS_HEADER)
    if command == "dstats":
        info = dict(reply.get("info") or {})
        info.pop("children", None)
        return "\n".join(
            f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in info.items()
        )
    if command == "listsockets":
        rows = [
            [
                s.get("fd"),
                s.get("name"),
                s.get("path") or f"{s.get('host')}:{s.get('port')}",
                s.get("backlog"),
            ]
            for s in reply.get("sockets", [])
        ]
        return _table(rows, ("FD", "NAME", "ADDRESS", "BACKLOG"))
    if command == "reloadconfig" and reply.get("not_applied"):
        return "ok (not applied until circusd restarts: " + ", ".join(reply["not_applied"]) + ")"
    if "options" in reply and isinstance(reply["options"], dict):
        # `get` answers the keys in the order asked (as Circus prints them); `options` reads best sorted
        items = reply["options"].items()
        return "\n".join(f"{k}: {_opt(v)}" for k, v in (items if command == "get" else sorted(items)))
    return "ok"


def _opt(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return str(value)


# The lines circusd's ring answers for, per watcher (runtime/stream_ring.RING_SIZE; not imported here).
LOG_RING = 1000


def _seq(line: dict[str, Any]) -> tuple[int, int] | None:
    """A captured line's number (block, index in the block), when circusd sent one."""
    seq = line.get("seq")
    if isinstance(seq, list) and len(seq) == 2 and all(isinstance(x, int) for x in seq):
        return (seq[0], seq[1])
    return None


def _log_line(line: dict[str, Any]) -> str:
    """One captured line as `logs` prints it: `[wid:pid] text`, stderr lines marked."""
    mark = " (stderr)" if line.get("stream") == "stderr" else ""
    return f"[{line.get('wid')}:{line.get('pid')}]{mark} {line.get('data', '')}"


# ----------------------------------------------------------------------------- running
class Controller:
    """One connection and the output settings; runs parsed commands and prints their result."""

    def __init__(
        self,
        endpoint: str,
        timeout: float,
        as_json: bool,
        prettify: bool,
        out: TextIO,
        err: TextIO,
        keys: ClientKeys | None = None,
    ):
        self.endpoint = endpoint
        self.keys = keys
        self.timeout = timeout
        self.as_json = as_json
        self.prettify = prettify
        self.out = out
        self.err = err
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = Client(self.endpoint, self.timeout, keys=self.keys)
            except zmq.ZMQError as exc:  # a malformed endpoint: zmq refuses it at connect()
                raise CallError(f"bad endpoint {self.endpoint!r}: {exc.strerror}") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, ns: argparse.Namespace) -> int:
        if ns.command == "listen":
            return self.listen(ns.pubsub or DEFAULT_PUBSUB, ns.topics, ns.count)
        if ns.command == "logs":
            return self.logs(ns)
        try:
            command, props = to_request(ns)
        except UsageError as exc:
            print(f"error: {exc}", file=self.err)
            return EXIT_USAGE
        try:
            reply = self.client.request(command, **props)
        except CallError as exc:
            print(f"error: {exc}", file=self.err)
            # a timed-out DEALER may still receive the late reply; a fresh socket keeps the shell sane
            self.close()
            return EXIT_UNREACHED
        if self.as_json or self.prettify:
            print(
                json.dumps(reply, indent=2 if self.prettify else None, sort_keys=self.prettify), file=self.out
            )
        elif reply.get("status") != "error":
            print(render(command, reply), file=self.out)
        if reply.get("status") == "error":
            if not (self.as_json or self.prettify):
                print(f"error: {reply.get('reason', 'unknown error')}", file=self.err)
            return EXIT_ERROR_REPLY
        return EXIT_OK

    def listen(self, endpoint: str, topics: Sequence[str], count: int | None) -> int:
        ctx: zmq.Context = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:  # the event stream is CURVE-protected like the control channel
            self.keys.apply(sock)
        for topic in topics or [""]:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            print(f"error: bad endpoint {endpoint!r}: {exc.strerror}", file=self.err)
            return EXIT_UNREACHED
        seen = 0
        try:
            while count is None or seen < count:
                frames = sock.recv_multipart()
                topic = frames[0].decode(errors="replace")
                body = frames[-1].decode(errors="replace") if len(frames) > 1 else ""
                if self.prettify:
                    with contextlib.suppress(ValueError):
                        body = json.dumps(json.loads(body), indent=2, sort_keys=True)
                print(f"{topic}: {body}", file=self.out, flush=True)
                seen += 1
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()
        return 0

    def logs(self, ns: argparse.Namespace) -> int:
        """Print the last lines; with -f subscribe first, then keep printing and renewing the follow lease."""
        props: dict[str, Any] = {"name": ns.name, "lines": max(ns.lines, 0)}
        if ns.wid is not None:
            props["wid"] = ns.wid
        try:
            if not ns.follow:
                for line in self.client.call("logs", **props).get("lines", []):
                    print(_log_line(line), file=self.out)
                return 0
            return self._follow(ns, props)
        except CallError as exc:
            print(f"error: {exc}", file=self.err)
            self.close()
            return EXIT_UNREACHED if exc.reply is None else EXIT_ERROR_REPLY

    def _follow(self, ns: argparse.Namespace, props: dict[str, Any]) -> int:
        endpoint = ns.pubsub or self.client.call("globaloptions").get("options", {}).get("pubsub_endpoint")
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            self.keys.apply(sock)
        topics = {f"watcher.{ns.name}.stdout", f"watcher.{ns.name}.stderr"}
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(endpoint or DEFAULT_PUBSUB)
        # Subscribed before asking for the backlog, so no line falls between the two; the lease makes
        # circusd publish each line (publish = auto) and is renewed well before it runs out.
        lease, renew_every = 15.0, 5.0
        reply = self.client.call("logs", follow=lease, **props)
        for line in reply.get("lines", []):
            print(_log_line(line), file=self.out, flush=True)
        # Lines are numbered (block, index) by circusd: the events of blocks up to `blocks` are the
        # backlog's (or older), and the lines published before the subscription took effect (ZeroMQ
        # subscribes asynchronously) are fetched from the ring when the first event shows where it began.
        after: tuple[int, int] = (int(reply.get("blocks", 0)), 1 << 62)
        filled = "blocks" not in reply  # an older circusd: no numbers, nothing to fill or skip
        seen, renewed = 0, time.monotonic()
        try:
            while ns.count is None or seen < ns.count:
                if time.monotonic() - renewed > renew_every:
                    self.client.call("logs", name=ns.name, lines=0, follow=lease)
                    renewed = time.monotonic()
                if not sock.poll(1000):
                    continue
                frames = sock.recv_multipart()
                if frames[0].decode(errors="replace") not in topics or len(frames) < 2:
                    continue
                event = json.loads(frames[-1])
                if ns.wid is not None and event.get("wid") != ns.wid:
                    continue
                seq = _seq(event)
                if seq is not None and not filled:
                    if seq <= after:
                        continue  # in the backlog already, or older than it
                    filled = True
                    which = {"wid": ns.wid} if ns.wid is not None else {}
                    missed = self.client.call("logs", name=ns.name, lines=LOG_RING, **which)
                    for line in missed.get("lines", []):
                        at = _seq(line)
                        if at is not None and after < at < seq and (ns.count is None or seen < ns.count):
                            print(_log_line(line), file=self.out, flush=True)
                            seen += 1
                    if ns.count is not None and seen >= ns.count:
                        break
                event["stream"] = frames[0].decode().rsplit(".", 1)[-1]
                print(_log_line(event), file=self.out, flush=True)
                seen += 1
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()
        return 0

    def watcher_names(self) -> list[str]:
        try:
            reply = self.client.call("list")
        except CallError:
            self.close()
            return []
        return list(reply.get("watchers", []))


class Shell(cmd.Cmd):
    """The interactive circusctl: every command, with completion of commands and watcher names."""

    intro = "circusctl {version}\n{endpoint} (type help, or Ctrl-D to leave)"
    prompt = "(circusctl) "

    def __init__(self, controller: Controller, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.controller = controller
        self.parser = parser
        self.intro = self.intro.format(version=__version__, endpoint=controller.endpoint)
        self._names: tuple[float, list[str]] = (0.0, [])

    def get_names(self) -> list[str]:
        return [*NAMES, "listen"]

    def default(self, line: str) -> None:
        import shlex  # only the interactive shell splits lines

        try:
            words = shlex.split(line)
        except ValueError as exc:
            print(f"error: {exc}", file=self.controller.err)
            return
        if not words:
            return
        if words[0] not in self.get_names():
            print(f"error: unknown command {words[0]!r}", file=self.controller.err)
            return
        try:
            ns = parse(self.parser, words)
        except SystemExit:  # argparse already printed the usage problem
            return
        self.controller.run(ns)

    def do_help(self, arg: str) -> None:
        if arg in COMMAND_HELP:
            print(COMMAND_HELP[arg], file=self.controller.out)
            return
        for name in self.get_names():
            print(f"  {name:<14} {COMMAND_HELP[name]}", file=self.controller.out)

    def do_EOF(self, arg: str) -> bool:
        print(file=self.controller.out)
        return True

    def do_exit(self, arg: str) -> bool:
        return True

    def emptyline(self) -> bool:
        return False

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [n + " " for n in self.get_names() if n.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) == 1 and words[0] in NAMES:  # the first argument is a watcher name
            stamp, names = self._names
            if time.monotonic() - stamp > 2.0:
                names = self.controller.watcher_names()
                self._names = (time.monotonic(), names)
            return [n for n in names if n.startswith(text)]
        return []


def _complete_for(_name: str) -> Callable[..., list[str]]:
    def complete(self: Shell, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self.completedefault(text, line, begidx, endidx)

    return complete


for _cmd in NAMES:
    # cmd.Cmd looks up complete_<command>; the commands themselves go through default().
    setattr(Shell, f"complete_{_cmd}", _complete_for(_cmd))


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser(command_of(sys.argv[1:] if argv is None else argv))
    try:
        ns = parse(parser, argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if ns.command == "keygen":
        from circus_linux.cli.multihost import keygen

        return keygen(ns.directory, ns.keyname, out, err)
    if ns.command == "dashboard-url":
        return dashboard_url(ns, out, err)
    tunnel = None
    if ns.ssh:
        from circus_linux.cli.multihost import SshTunnel

        tunnel = SshTunnel(ns.ssh, ns.ssh_keyfile)
    try:
        return _run(ns, parser, out, err, tunnel)
    except (CircusError, ValueError) as exc:
        # A bad key file (control.keys.KeyError_), a bad hosts file (control.multi.HostsFileError), a bad
        # --ssh: usage problems. Matched through their base class so that those modules stay unimported
        # on the single-endpoint path (CallError never gets here: Controller.run reports it).
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except zmq.ZMQError as exc:  # a malformed endpoint among several hosts (one host: Controller says it)
        print(f"error: bad endpoint: {exc}", file=err)
        return EXIT_UNREACHED
    finally:
        if tunnel is not None:
            tunnel.close()


def dashboard_url(ns: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`circusctl dashboard-url`: print the URL (with the token) circusd wrote for the control endpoint."""
    from circus_linux.control.webtoken import read_url, token_path

    endpoints = list(ns.endpoint or [])
    endpoint = endpoints[0] if endpoints else os.environ.get("CIRCUSCTL_ENDPOINT") or DEFAULT_ENDPOINT
    path = token_path(endpoint)
    if path is None:
        print(f"error: no dashboard token file for {endpoint} (no XDG_RUNTIME_DIR)", file=err)
        return EXIT_USAGE
    try:
        print(read_url(path), file=out)
    except FileNotFoundError:
        print(f"error: {path} does not exist: is circusd running with [circus] httpd = true?", file=err)
        return EXIT_UNREACHED
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}: only users who may use the control socket may act on the "
              "dashboard", file=err)
        return EXIT_UNREACHED
    return EXIT_OK


def _run(
    ns: argparse.Namespace,
    parser: argparse.ArgumentParser,
    out: TextIO,
    err: TextIO,
    tunnel: SshTunnel | None,
) -> int:
    endpoints = list(ns.endpoint or [])
    keys = None if ns.hosts else _client_keys(ns)
    if ns.hosts or len(endpoints) > 1:
        from circus_linux.control import multi

        if ns.hosts:  # server keys come from the file's third column (or --server-key for every host)
            client_key = ns.client_key or os.environ.get("CIRCUSCTL_CLIENT_KEY") or None
            server_key = ns.server_key or os.environ.get("CIRCUSCTL_SERVER_KEY") or None
            hosts = multi.load_hosts(ns.hosts, client_key, server_key)
        else:
            hosts = multi.hosts_from_endpoints(endpoints, keys)
        if ns.host:
            hosts = multi.select(hosts, ns.host)
        if tunnel is not None:
            hosts = [multi.Host(h.name, tunnel.forward(h.endpoint), h.keys) for h in hosts]
        return _run_hosts(ns, hosts, out, err)
    endpoint = endpoints[0] if endpoints else os.environ.get("CIRCUSCTL_ENDPOINT") or DEFAULT_ENDPOINT
    if ns.command == "listen":
        # Circus's `--endpoint PUBSUB listen TOPIC`; CIRCUSCTL_ENDPOINT stays the control endpoint only.
        ns.pubsub = ns.pubsub or (endpoints[0] if endpoints else DEFAULT_PUBSUB)
        if tunnel is not None:
            ns.pubsub = tunnel.forward(ns.pubsub)
    elif tunnel is not None:
        endpoint = tunnel.forward(endpoint)
    controller = Controller(endpoint, ns.timeout, ns.json, ns.prettify, out, err, keys=keys)
    try:
        if ns.command is None:
            Shell(controller, parser).cmdloop()
            return 0
        return controller.run(ns)
    finally:
        controller.close()


def _client_keys(ns: argparse.Namespace) -> ClientKeys | None:
    """CURVE keys from the options or the environment; None (control.keys left unimported) without any."""
    if not (
        ns.server_key
        or ns.client_key
        or os.environ.get("CIRCUSCTL_SERVER_KEY")
        or os.environ.get("CIRCUSCTL_CLIENT_KEY")
    ):
        return None
    from circus_linux.control.keys import client_keys_from

    return client_keys_from(ns.server_key, ns.client_key)


def _run_hosts(ns: argparse.Namespace, hosts: list[Host], out: TextIO, err: TextIO) -> int:
    from circus_linux.cli import multihost

    if ns.command is None:
        print("error: the interactive shell talks to one host: give a command, or one --endpoint", file=err)
        return EXIT_USAGE
    if ns.command == "listen":
        if ns.pubsub is not None:
            print("error: listen ENDPOINT is for one host (several: each one's pubsub_endpoint)", file=err)
            return EXIT_USAGE
        return multihost.listen_hosts(hosts, ns.topics, ns.count, ns.timeout, ns.prettify, out)
    try:
        command, props = to_request(ns)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    return multihost.run_hosts(
        hosts, command, props, ns.timeout, ns.json, ns.prettify, out, err, render, _stats_rows, _STATS_HEADER
    )


if __name__ == "__main__":
    raise SystemExit(main())
