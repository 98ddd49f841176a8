"""circus-top: a live terminal view of watchers and processes over the control client; renders, never acts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import curses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from circus_linux import __version__
from circus_linux.cli import multihost
from circus_linux.control import multi
from circus_linux.control.client import DEFAULT_ENDPOINT, CallError, Client
from circus_linux.control.keys import ClientKeys, client_keys_from
from circus_linux.errors import CircusError

SORT_KEYS = {"c": "cpu", "m": "mem", "p": "pid", "w": "wid"}
STREAM_FRESH = 3.0  # seconds: older stream data means the stream stopped; fall back to polling


@dataclass
class WatcherView:
    name: str
    status: str = "?"
    numprocesses: int | None = None
    procs: dict[int, dict[str, Any]] = field(default_factory=dict)
    restarts: int | None = None
    oom_kills: int | None = None


@dataclass
class Model:
    """What the screen shows: fed by polling `stats`/`status`, or by the stats stream when circusd has one."""

    watchers: dict[str, WatcherView] = field(default_factory=dict)
    source: str = "polling"
    error: str = ""
    updated: float = 0.0
    stream_seen: float = 0.0
    # Several hosts (circus-top --hosts, or --endpoint twice): one Model per host name, in the hosts'
    # order; a host's Model.error set means it did not answer (or refused) at the last poll.
    hosts: dict[str, Model] | None = None

    def watcher(self, name: str) -> WatcherView:
        if name not in self.watchers:
            self.watchers[name] = WatcherView(name)
        return self.watchers[name]


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def human(n: float) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}B"


def fmt_age(seconds: float) -> str:
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def _watcher_extras(w: WatcherView, info: Any) -> None:
    """Watcher-level counters when the server sends them (stats stream or a richer `stats`)."""
    if not isinstance(info, dict):
        return
    for key in ("restarts",):
        if _opt_int(info.get(key)) is not None:
            w.restarts = info[key]
    cgroup = info.get("cgroup")
    for source in (info, cgroup if isinstance(cgroup, dict) else {}):
        for key in ("oom_kills", "oom_kill"):
            if _opt_int(source.get(key)) is not None:
                w.oom_kills = source[key]


def apply_stats(model: Model, infos: dict[str, Any]) -> None:
    """`stats` (no name) reply's `infos`: {watcher: {pid: info}} replaces the process lists."""
    for name, procs in infos.items():
        w = model.watcher(name)
        w.procs = {}
        if not isinstance(procs, dict):
            continue
        for pid, info in procs.items():
            if isinstance(info, dict) and str(pid).isdigit():
                w.procs[int(pid)] = info
            elif not str(pid).isdigit():
                _watcher_extras(w, {pid: info})


def apply_restarts(model: Model, restarts: Any) -> None:
    """`stats` (no name) reply's `restarts`: {watcher: count}, absent from Circus's own circusd."""
    if isinstance(restarts, dict):
        for name, count in restarts.items():
            if name in model.watchers:
                _watcher_extras(model.watchers[name], {"restarts": count})


def apply_stream(model: Model, topic: str, data: Any, now: float) -> None:
    """One stats-stream message, Circus topics: stat.<watcher>.<pid>, stat.<watcher>, stat.circus..."""
    parts = topic.split(".")
    if len(parts) < 2 or parts[0] != "stat" or parts[1] in ("circus", "sockets"):
        return
    if _is_process_stat(parts, data):
        name, pid = ".".join(parts[1:-1]), int(parts[-1])
        model.watcher(name).procs[pid] = {**data, "_seen": now}
        model.stream_seen = now
    else:
        _watcher_extras(model.watcher(".".join(parts[1:])), data)


def _is_process_stat(parts: list[str], data: Any) -> bool:
    """stat.<watcher>.<pid> rather than the aggregate stat.<watcher>, told by content: a watcher may be
    named `worker.1`, whose aggregate topic `stat.worker.1` reads like process 1 of `worker`. A process's
    payload has its own pid as an int (the topic's last part); an aggregate has a list of pids, or none."""
    if len(parts) < 3 or not parts[-1].isdigit() or not isinstance(data, dict):
        return False
    pid = data.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and str(pid) == parts[-1]


class Feed:
    """Pulls data: polls the control endpoint and drains the stats stream SUB socket when there is one."""

    def __init__(
        self,
        client: Client,
        stats_endpoint: str | None,
        context: zmq.Context | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.client = client
        self.stats_endpoint = stats_endpoint
        self._keys = keys  # the stats XPUB is CURVE-secured with the same keys as the control socket
        self._ctx = context or zmq.Context.instance()
        self._sub: zmq.Socket | None = None

    def _subscribe(self) -> None:
        if self._sub is not None:
            return
        endpoint = self.stats_endpoint
        if endpoint is None:
            try:
                opts = self.client.call("globaloptions").get("options", {})
            except CallError:
                return
            endpoint = opts.get("stats_endpoint") if isinstance(opts, dict) else None
        if not endpoint:
            return
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"stat.")
        if self._keys is not None:
            self._keys.apply(sub)
        try:
            sub.connect(endpoint)
        except zmq.ZMQError:
            sub.close()
            return
        self._sub = sub

    def drain_stream(self, model: Model) -> None:
        if self._sub is None:
            return
        now = time.monotonic()
        while self._sub.poll(0):
            frames = self._sub.recv_multipart()
            if len(frames) >= 2:
                topic, body = frames[0], frames[-1]
            else:
                topic, _, body = frames[0].partition(b" ")
            try:
                apply_stream(model, topic.decode("utf-8", "replace"), json.loads(body), now)
            except ValueError:
                continue

    def refresh(self, model: Model) -> None:
        self._subscribe()
        self.drain_stream(model)
        now = time.monotonic()
        try:
            statuses = self.client.call("status").get("statuses", {})
            for gone in set(model.watchers) - set(statuses):
                del model.watchers[gone]
            for name, status in statuses.items():
                w = model.watcher(name)
                w.status = str(status)
                w.numprocesses = _opt_int(self.client.call("numprocesses", name=name).get("numprocesses"))
            if now - model.stream_seen > STREAM_FRESH:
                model.source = "polling"
                reply = self.client.call("stats")
                apply_stats(model, reply.get("infos", {}))
                apply_restarts(model, reply.get("restarts"))
            else:
                model.source = "stats stream"
                for w in model.watchers.values():  # drop pids the stream stopped reporting
                    w.procs = {p: i for p, i in w.procs.items() if now - i.get("_seen", now) <= STREAM_FRESH}
            model.error = ""
        except CallError as exc:
            model.error = f"{self.client.endpoint}: {exc}"
        model.updated = time.time()

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None


class MultiFeed:
    """Polls several circusd once per refresh (`status`, `numprocesses`, `stats`), all hosts at once.

    No stats stream here: one poll per interval is enough for an overview, and a host that does not
    answer only costs its own row. Synchronous outside (run() stays the same), asyncio inside.
    """

    def __init__(self, hosts: Sequence[multi.Host], timeout: float) -> None:
        self.hosts = list(hosts)
        self._loop = asyncio.new_event_loop()
        self._ctx = zmq.asyncio.Context()
        # One MultiClient per host: the watchers (hence the `numprocesses` calls) differ from host to host.
        self._clients = {h.name: multi.MultiClient([h], timeout, self._ctx) for h in self.hosts}

    async def _poll_host(self, name: str, model: Model) -> None:
        client = self._clients[name]
        (answer,) = await client.request("status")
        if not answer.ok:
            # Stale rows would pass for live ones: a silent host shows only its 'unreachable' row.
            model.watchers.clear()
            if answer.reply is None:
                model.error = f"unreachable: {answer.error}"
            else:
                model.error = f"error: {answer.reply.get('reason', 'unknown error')}"
            return
        assert answer.reply is not None
        statuses = answer.reply.get("statuses", {})
        statuses = statuses if isinstance(statuses, dict) else {}
        for gone in set(model.watchers) - set(statuses):
            del model.watchers[gone]
        for wname, status in statuses.items():
            w = model.watcher(wname)
            w.status = str(status)
            (num,) = await client.request("numprocesses", name=wname)
            w.numprocesses = _opt_int((num.reply or {}).get("numprocesses")) if num.ok else None
        (stats,) = await client.request("stats")
        if stats.ok and stats.reply is not None:
            infos = stats.reply.get("infos", {})
            apply_stats(model, infos if isinstance(infos, dict) else {})
            apply_restarts(model, stats.reply.get("restarts"))
        model.error = ""

    def refresh(self, model: Model) -> None:
        if model.hosts is None:
            model.hosts = {}
        for h in self.hosts:
            model.hosts.setdefault(h.name, Model())

        async def poll_all() -> None:
            assert model.hosts is not None
            await asyncio.gather(*(self._poll_host(h.name, model.hosts[h.name]) for h in self.hosts))

        self._loop.run_until_complete(poll_all())
        model.source = "polling"
        model.updated = time.time()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._ctx.destroy(linger=0)
        self._loop.close()


def _sort_procs(procs: dict[int, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    rows = [{**info, "pid": pid} for pid, info in procs.items()]
    if key in ("cpu", "mem"):
        return sorted(rows, key=lambda r: -_num(r.get(key)))
    return sorted(rows, key=lambda r: _num(r.get(key)))


def render(model: Model, sort: str, endpoint: str, width: int = 160) -> list[str]:
    """The screen as lines (pure, so tests can check it without a terminal).

    With several hosts (`model.hosts`) every watcher row and process row starts with a HOST column.
    """
    keys = "  ".join(f"[{k}]{v[1:]}" if v[0] == k else f"[{k}] {v}" for k, v in SORT_KEYS.items())
    lines = [
        # The endpoint last: a long ipc:// path may be cut at the screen's edge, the keys must not be.
        f"circus-top  sort: {sort}  source: {model.source}  {keys}  [q]uit",
        (time.strftime("%H:%M:%S", time.localtime(model.updated)) if model.updated else "connecting...")
        + f"  {endpoint}",
    ]
    if model.error:
        lines.append(f"error: {model.error}")
    lines.append("")
    # (host, watcher) pairs; host "" and no HOST column for a single circusd (the screen as it always was).
    rows: list[tuple[str, WatcherView]] = []
    if model.hosts is None:
        hostw = 0
        rows = [("", w) for w in model.watchers.values()]
    else:
        # No cap on the column: ipc:// host names differ only at their end, and the line is cut anyway.
        hostw = max([len("HOST"), *map(len, model.hosts)])
        for host, sub in model.hosts.items():
            if sub.error:
                lines.append(f"{host} {sub.error}")
            rows += [(host, w) for w in sub.watchers.values()]

    def col(text: str) -> str:
        return f"{text:<{hostw}} " if hostw else ""

    head = (
        f"{col('HOST')}{'WATCHER':<20} {'STATE':<9} {'PROCS':>7} {'CPU%':>6} {'MEM%':>6} {'RSS':>8} "
        f"{'RESTARTS':>8} {'OOM':>5}  PIDS"
    )
    lines.append(head)
    if sort in ("cpu", "mem"):
        rows.sort(key=lambda r: -sum(_num(p.get(sort)) for p in r[1].procs.values()))
    for host, w in rows:
        procs = _sort_procs(w.procs, sort)
        cpu = sum(_num(p.get("cpu")) for p in procs)
        mem = sum(_num(p.get("mem")) for p in procs)
        rss = sum(_num(p.get("rss")) for p in procs)
        want = "?" if w.numprocesses is None else str(w.numprocesses)
        restarts = "-" if w.restarts is None else str(w.restarts)
        oom = "-" if w.oom_kills is None else str(w.oom_kills)
        pids = " ".join(str(p["pid"]) for p in procs)
        lines.append(
            f"{col(host)}{w.name[:20]:<20} {w.status[:9]:<9} {f'{len(procs)}/{want}':>7} {cpu:>6.1f} "
            f"{mem:>6.1f} {human(rss):>8} {restarts:>8} {oom:>5}  {pids}"
        )
        if procs:
            lines.append(
                f"    {col('HOST')}{'PID':>8} {'WID':>4} {'CPU%':>6} {'MEM%':>6} {'RSS':>8} {'AGE':>10}  CMD"
            )
        for p in procs:
            wid = "-" if p.get("wid") is None else str(p.get("wid"))
            lines.append(
                f"    {col(host)}{p['pid']:>8} {wid:>4} {_num(p.get('cpu')):>6.1f} "
                f"{_num(p.get('mem')):>6.1f} {human(_num(p.get('rss'))):>8} "
                f"{fmt_age(_num(p.get('age'))):>10}  {p.get('cmdline', '')!s}"
            )
    return [line[:width] for line in lines]


def _draw(screen: Any, lines: Sequence[str]) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for y, line in enumerate(lines[: height - 1]):
        with contextlib.suppress(curses.error):  # writing the bottom-right cell raises; harmless
            screen.addnstr(y, 0, line, width - 1, curses.A_BOLD if y == 0 else curses.A_NORMAL)
    screen.refresh()


def run(screen: Any, feed: Feed | MultiFeed, endpoint: str, interval: float, sort: str) -> None:
    curses.curs_set(0)
    screen.timeout(100)  # getch() wakes 10 times a second: keys feel immediate, the loop stays idle
    model = Model()
    next_refresh = 0.0
    while True:
        now = time.monotonic()
        if now >= next_refresh:
            feed.refresh(model)
            next_refresh = now + interval
            _draw(screen, render(model, sort, endpoint, screen.getmaxyx()[1]))
        key = screen.getch()
        if key in (ord("q"), ord("Q"), 27):
            return
        if key >= 0 and chr(key) in SORT_KEYS:
            sort = SORT_KEYS[chr(key)]
            _draw(screen, render(model, sort, endpoint, screen.getmaxyx()[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="circus-top",
        description="Live view of a circusd's watchers and processes. Keys: c/m/p/w sort by cpu, memory, "
        "pid, wid; q quits. Several circusd at once (--endpoint repeated, or --hosts FILE): one table "
        "with a HOST column, polled once per interval; a host that does not answer shows "
        "'HOST unreachable'.",
    )
    p.add_argument(
        "--endpoint",
        action="append",
        help=f"control endpoint (env CIRCUSCTL_ENDPOINT, default {DEFAULT_ENDPOINT}); repeat it to watch "
        "several hosts, each named after its endpoint",
    )
    p.add_argument(
        "--stats-endpoint",
        help="stats stream (PUB) endpoint; default: asked from circusd (globaloptions); one host only",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--sort", choices=sorted(SORT_KEYS.values()), default="cpu")
    p.add_argument("--version", action="version", version=f"circus-linux {__version__}")
    # --hosts/--host, the CURVE keys and --ssh: the same flags and environment variables as circusctl.
    multihost.add_options(p, suppress=False)
    return p


def make_client(args: argparse.Namespace, endpoint: str) -> tuple[Client, ClientKeys | None]:
    keys = client_keys_from(args.server_key, args.client_key)
    return Client(endpoint, timeout=args.timeout, keys=keys), keys


def hosts_of(args: argparse.Namespace) -> list[multi.Host] | None:
    """The hosts to watch when there are several (as circusctl picks them); None for a single circusd."""
    endpoints = list(args.endpoint or [])
    if args.hosts:  # server keys from the file's third column, or --server-key for every host
        client_key = args.client_key or os.environ.get("CIRCUSCTL_CLIENT_KEY") or None
        server_key = args.server_key or os.environ.get("CIRCUSCTL_SERVER_KEY") or None
        hosts = multi.load_hosts(args.hosts, client_key, server_key)
    elif len(endpoints) > 1:
        hosts = multi.hosts_from_endpoints(endpoints, client_keys_from(args.server_key, args.client_key))
    else:
        return None
    if args.host:
        hosts = multi.select(hosts, args.host)
    return hosts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    endpoints = list(args.endpoint or [])
    endpoint = endpoints[0] if endpoints else os.environ.get("CIRCUSCTL_ENDPOINT") or DEFAULT_ENDPOINT
    if not sys.stdout.isatty():
        print("circus-top: needs a terminal", file=sys.stderr)
        return 2
    tunnel = multihost.SshTunnel(args.ssh, args.ssh_keyfile) if args.ssh else None
    client: Client | None = None
    feed: Feed | MultiFeed
    try:
        hosts = hosts_of(args)
        if hosts is not None:
            if tunnel is not None:
                hosts = [multi.Host(h.name, tunnel.forward(h.endpoint), h.keys) for h in hosts]
            feed = MultiFeed(hosts, args.timeout)
            label = ", ".join(h.name for h in hosts)
        else:
            if tunnel is not None:
                endpoint = tunnel.forward(endpoint)
                if args.stats_endpoint:
                    args.stats_endpoint = tunnel.forward(args.stats_endpoint)
            client, keys = make_client(args, endpoint)
            feed = Feed(client, args.stats_endpoint, keys=keys)
            label = endpoint
    except (CircusError, ValueError) as exc:  # unreadable keys or hosts file, unknown --host, bad --ssh
        print(f"circus-top: {exc}", file=sys.stderr)
        if tunnel is not None:
            tunnel.close()
        return 2
    try:
        curses.wrapper(run, feed, label, max(0.1, args.interval), args.sort)
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()
        if client is not None:
            client.close()
        if tunnel is not None:
            tunnel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
