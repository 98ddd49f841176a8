"""The stream hub: captures workers' stdout/stderr into lines, feeds sinks, the tail ring and the events.

Per watcher and per stream kind a Channel holds the configured sink (a Stream in its own writer thread).
Per worker pipe a PipeReader (stream_reader.py) turns bytes into blocks of whole lines, so lines of two
workers never interleave. A block stays one bytes object all the way to the sink (a file sink writes it as
is): lines are split out only for what needs them (events while followed, time_format, journald, `logs`).
A slow sink costs the loop nothing: past `buffer_size` bytes queued for one worker, that worker's pipe is
no longer read (overflow = block, the default: the worker blocks in write) or its lines
are dropped and counted (overflow = drop). Must not import zmq: events leave through `emit`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from circus_linux.runtime.stream_lines import MAX_LINE, split_block
from circus_linux.runtime.stream_reader import PipeReader, Valve, loop_pool, make_pipe
from circus_linux.runtime.stream_ring import RING_SIZE, LineRing
from circus_linux.runtime.stream_sink import Sink
from circus_linux.streams import STDERR, STDOUT, Chunk, canonical, is_direct, make_stream
from circus_linux.streams.base import opt_bool, opt_int
from circus_linux.streams.journal import JOURNAL_STDOUT, PRIORITY, open_stream_fd

log = logging.getLogger("circus_linux.streams")

Emit = Callable[[str, dict[str, Any]], None]
KINDS = (STDOUT, STDERR)
FD_OF = {STDOUT: 1, STDERR: 2}
BUFFER_SIZE = 1024 * 1024  # per worker pipe: bytes queued for the sink before backpressure or drops
# Per sink (overflow = block): bytes queued over all its pipes before they wait for the writer. Without it,
# 50 flooding workers queue 50 MiB: blocks are written long after they were read, out of every CPU cache,
# and the copy into the page cache costs several times more. Past it, the valve of the output that crossed
# it shuts (stream_reader.Valve): none of its pipes is read until the sink is back under half of it.
SINK_BOUND = 2 * 1024 * 1024
DRAIN_TIMEOUT = 2.0  # after a worker exits, how long its pipe may stay open (held by a grandchild)
FLUSH_TIMEOUT = 30.0  # how long stop/shutdown waits for a sink to write what it has queued
DROP_REPORT_EVERY = 1.0  # seconds between two output_dropped events of one watcher


@dataclass
class Channel:
    """One configured output of a watcher (stdout, stderr or both when configured alike)."""

    config: Any  # config.StreamConfig
    sink: Sink | None  # None in direct journal mode: nothing passes through circusd
    direct: bool
    overflow: str
    buffer_size: int
    max_line: int
    publish: str  # always | never | auto (while a `logs` follower holds a lease)
    drain_timeout: float


@dataclass
class WatcherOutput:
    name: str
    channels: dict[str, Channel] = field(default_factory=dict)
    ring: LineRing = field(default_factory=lambda: LineRing(RING_SIZE))
    by_pid: dict[int, list[PipeReader]] = field(default_factory=dict)  # live readers, by worker pid
    valves: dict[str, Valve] = field(default_factory=dict)  # by kind: shut while that sink is over its bound
    nbytes: int = 0  # read from the pipes (bytes, not lines: counting lines costs more than writing them)
    blocks: int = 0  # blocks read: each line is numbered (block, index) in the ring and in its event
    dropped: int = 0
    split_done: int = 0  # long lines cut, from readers already finished
    last_drop_report: float = 0.0

    @property
    def readers(self) -> list[PipeReader]:
        """Every live reader of the watcher (a snapshot: safe to iterate while readers finish)."""
        return [r for rs in self.by_pid.values() for r in rs]


@dataclass
class Capture:
    """The pipes made for one spawn: `stdio` for build_spawn_spec, then attach(pid, wid) or abort()."""

    hub: StreamHub
    watcher: str
    stdio: dict[int, int]
    read_ends: dict[str, int]

    def attach(self, pid: int, wid: int) -> None:
        """After a successful spawn: close circusd's copies of the write ends, start reading."""
        self._close_write_ends()
        for kind, fd in self.read_ends.items():
            self.hub._start_reader(self.watcher, kind, fd, pid, wid)
        self.read_ends = {}

    def abort(self) -> None:
        self._close_write_ends()
        for fd in self.read_ends.values():
            os.close(fd)
        self.read_ends = {}

    def _close_write_ends(self) -> None:
        # Until circusd closes its copy, the pipe has a writer and its reader would never see EOF.
        for fd in set(self.stdio.values()):
            os.close(fd)
        self.stdio = {}


def _stream_cfg(cfg: Any, kind: str) -> Any:
    if getattr(cfg, f"close_child_{kind}", False):
        return None  # Circus: close_child_* sends that stream to /dev/null, whatever the stream says
    return getattr(cfg, f"{kind}_stream", None)


def _publish_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("1", "true", "yes", "on", "always"):
        return "always"
    if text in ("0", "false", "no", "off", "never"):
        return "never"
    raise ValueError(f"publish: expected auto, true or false, got {value!r}")


def stream_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The `stdout_stream.*` / `stderr_stream.*` keys of a `set` request."""
    return {k: v for k, v in changes.items() if k.startswith(tuple(f"{k}_stream." for k in KINDS))}


def apply_stream_options(cfg: Any, changes: Mapping[str, Any]) -> Any:
    """A copy of the watcher config with `set` stream keys applied (pure; StreamConfig comes from config)."""
    from circus_linux.config import StreamConfig

    new: dict[str, Any] = {}
    for kind in KINDS:
        prefix = f"{kind}_stream."
        mine = {k[len(prefix) :]: v for k, v in changes.items() if k.startswith(prefix)}
        if not mine:
            continue
        old = getattr(cfg, f"{kind}_stream", None)
        options = dict(old.options) if old is not None else {}
        cls = mine.pop("class", None) or (old.cls if old is not None else None)
        options.update(mine)
        if cls is None:
            cls = "FileStream" if "filename" in options else "StdoutStream"
        new[f"{kind}_stream"] = StreamConfig(canonical(str(cls)), options)
    if not new:
        return cfg
    out = dataclasses.replace(cfg, **new)
    if hasattr(out, "raw"):
        out = dataclasses.replace(out, raw={**out.raw, **{k: str(v) for k, v in changes.items()}})
    return out


class StreamHub:
    """Owned by the arbiter, lent to watchers (WatcherServices.streams)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.outputs: dict[str, WatcherOutput] = {}
        self._retired: list[Sink] = []
        self._followed: dict[str, float] = {}  # watcher -> monotonic end of the follow lease
        self._held: dict[Sink, set[Valve]] = {}  # valves shut until their sink drains (overflow = block)

    # ------------------------------------------------------------------ configuration
    def _output(self, name: str) -> WatcherOutput:
        out = self.outputs.get(name)
        if out is None:
            out = self.outputs[name] = WatcherOutput(name)
        return out

    def _make_channel(self, name: str, kind: str, scfg: Any) -> Channel:
        opts = dict(scfg.options)
        direct = is_direct(scfg.cls, opts)
        overflow = str(opts.get("overflow", "block")).lower()
        if overflow not in ("block", "drop"):
            raise ValueError(f"{kind}_stream.overflow: expected block or drop, got {overflow!r}")
        sink = None
        if not direct:
            stream = make_stream(scfg.cls, opts)
            sink = Sink(stream, f"{name}.{kind}", asyncio.get_running_loop(), self._written)
        return Channel(
            config=scfg,
            sink=sink,
            direct=direct,
            overflow=overflow,
            buffer_size=max(opt_int(opts, "buffer_size", BUFFER_SIZE), 4096),
            max_line=max(opt_int(opts, "max_line", MAX_LINE), 64),
            publish=_publish_mode(opts.get("publish", "auto")),
            drain_timeout=float(opts.get("drain_timeout", DRAIN_TIMEOUT)),
        )

    def refresh(self, cfg: Any) -> None:
        """Make the channels match the watcher's config: new sinks for changed streams, old ones retired.

        Raises ValueError (bad class or options) before changing anything.
        """
        out = self._output(cfg.name)
        wanted = {kind: _stream_cfg(cfg, kind) for kind in KINDS}
        fresh: dict[str, Channel] = {}
        try:
            for kind, scfg in wanted.items():
                if scfg is None:
                    continue
                current = out.channels.get(kind)
                if current is not None and current.config == scfg:
                    fresh[kind] = current
                elif kind == STDERR and STDOUT in fresh and fresh[STDOUT].config == scfg:
                    fresh[kind] = fresh[STDOUT]  # one sink for both: one writer, whole lines, one order
                else:
                    fresh[kind] = self._make_channel(cfg.name, kind, scfg)
        except ValueError:
            self._retire(fresh.values(), keep=out.channels.values())
            raise
        self._retire(out.channels.values(), keep=fresh.values())
        out.channels = fresh

    def _retire(self, channels: Any, keep: Any) -> None:
        kept = {id(c) for c in keep}
        for ch in {id(c): c for c in channels if id(c) not in kept}.values():
            if ch.sink is not None:
                ch.sink.close()  # writes what it has queued, then closes its file
                ch.sink.settle()  # credits from before: later ones wake the loop themselves (closed)
                self._retired.append(ch.sink)

    def reconfigure(self, cfg: Any, changes: Mapping[str, Any]) -> tuple[Any, bool]:
        """`set NAME stdout_stream.KEY VALUE`: the new config, and whether workers must be respawned.

        Only a change of what the worker's fd 1/2 is (captured or not, direct journald or not) needs new
        workers; a new file name or class takes effect at once for the running ones.
        """
        new = apply_stream_options(cfg, changes)
        before = {k: self._mode(cfg, k) for k in KINDS}
        self.refresh(new)
        return new, before != {k: self._mode(new, k) for k in KINDS}

    @staticmethod
    def _mode(cfg: Any, kind: str) -> str:
        scfg = _stream_cfg(cfg, kind)
        if scfg is None:
            return "inherit"
        return "direct" if is_direct(scfg.cls, scfg.options) else "pipe"

    # ------------------------------------------------------------------ spawning
    def prepare(self, cfg: Any, wid: int) -> Capture | None:
        """Pipes (or journald sockets) for one spawn; None when the worker inherits circusd's stdio."""
        self.refresh(cfg)
        out = self.outputs[cfg.name]
        stdio: dict[int, int] = {}
        read_ends: dict[str, int] = {}
        try:
            for kind, ch in out.channels.items():
                if ch.direct:
                    opts = ch.config.options
                    stdio[FD_OF[kind]] = open_stream_fd(
                        cfg.name,
                        PRIORITY[kind],
                        opt_bool(opts, "level_prefix", False),
                        str(opts.get("socket", JOURNAL_STDOUT)),  # another journald (a container's)
                    )
                else:
                    read_ends[kind], stdio[FD_OF[kind]] = make_pipe()
        except OSError:
            for fd in [*stdio.values(), *read_ends.values()]:
                os.close(fd)
            raise
        if not stdio:
            return None
        return Capture(self, cfg.name, stdio, read_ends)

    def _start_reader(self, name: str, kind: str, fd: int, pid: int, wid: int) -> None:
        out = self._output(name)
        ch = out.channels.get(kind)
        valve = out.valves.get(kind)
        if valve is None:
            valve = out.valves[kind] = Valve()
        reader = PipeReader(
            fd, name, kind, pid, wid, ch.max_line if ch else MAX_LINE, self._deliver, self._reader_done,
            valve=valve,
        )
        out.by_pid.setdefault(pid, []).append(reader)
        reader.start()

    def process_exited(self, name: str, pid: int) -> None:
        """The worker was reaped: its pipes get a bounded time to drain."""
        out = self.outputs.get(name)
        if out is None:
            return
        # By pid: scanning every reader made a mass exit of N workers cost N*N checks (~21 ms at N=500).
        for reader in list(out.by_pid.get(pid, ())):
            ch = out.channels.get(reader.kind)
            reader.worker_exited(ch.drain_timeout if ch else DRAIN_TIMEOUT)

    # ------------------------------------------------------------------ the data path (event loop)
    def _deliver(self, reader: PipeReader, block: bytes) -> None:
        """One block of whole lines from one pipe: ring, events (if followed), sink; no work per line else."""
        out = self.outputs[reader.watcher]
        now = time.time()
        nbytes = len(block)
        out.nbytes += nbytes
        out.blocks += 1
        seq = out.blocks
        out.ring.add(now, reader.pid, reader.wid, reader.kind, block, seq)
        ch = out.channels.get(reader.kind)
        if ch is None:
            return
        if ch.publish == "always" or (
            ch.publish == "auto" and self._followed.get(reader.watcher, 0.0) > time.monotonic()
        ):
            topic = f"watcher.{reader.watcher}.{reader.kind}"
            for i, line in enumerate(split_block(block)):
                self._emit(
                    topic,
                    {"pid": reader.pid, "wid": reader.wid, "data": line.decode(errors="replace"),
                     "seq": [seq, i], "time": now},
                )
        sink = ch.sink
        if sink is None:
            return
        sink.settle()  # the writer's credits so far: the bounds below see what is really still queued
        drop = ch.overflow == "drop"
        # A block is dropped when it would take this pipe past buffer_size, unless nothing of it is queued:
        # one read (up to 256 KiB) can be bigger than a small buffer_size, and an idle sink takes it.
        if drop and reader.queued and reader.queued + nbytes > ch.buffer_size:
            self._drop(out, reader, block.count(b"\n"))  # counted only when dropped
            return
        reader.queued += nbytes
        chunk = Chunk(reader.watcher, reader.kind, reader.pid, reader.wid, now, block=block)
        sink.submit(chunk, reader, nbytes)
        if reader.queued >= ch.buffer_size and not drop:
            reader.pause()
        elif ch.overflow == "block" and sink.queued >= SINK_BOUND:
            # Every pipe of this output waits, not only this one: see Valve.
            reader.valve.shut = True
            self._held.setdefault(sink, set()).add(reader.valve)
        else:
            return
        self._await_credit(sink)

    @staticmethod
    def _await_credit(sink: Sink) -> None:
        """A reader waits on `sink`: have its writer wake the loop for the next credit (and take any now)."""
        sink.wanted = True
        sink.settle()

    def _drop(self, out: WatcherOutput, reader: PipeReader, n: int) -> None:
        reader.dropped += n
        out.dropped += n
        now = time.monotonic()
        if now - out.last_drop_report >= DROP_REPORT_EVERY:
            out.last_drop_report = now
            log.warning("watcher %s: sink too slow, %d lines dropped so far", out.name, out.dropped)
            self._emit(
                f"watcher.{out.name}.output_dropped",
                {"pid": reader.pid, "wid": reader.wid, "stream": reader.kind, "dropped": out.dropped},
            )

    def _written(self, sink: Sink, charged: dict[Any, int]) -> None:
        """Credit from a writer thread (via Sink.settle, in the loop): resume readers under half their bounds,
        open the valves held on this sink once it is under half of SINK_BOUND.

        Whoever still waits on this sink's bytes keeps `sink.wanted` set, so the next credit wakes us.
        """
        waiting = False
        for reader, n in charged.items():
            reader.queued -= n
            if reader.paused:
                ch = self.outputs.get(reader.watcher, WatcherOutput("")).channels.get(reader.kind)
                if ch is None or reader.queued <= ch.buffer_size // 2:
                    reader.resume()
                else:
                    waiting = True
        valves = self._held.get(sink)
        if valves:
            if sink.queued <= SINK_BOUND // 2:
                del self._held[sink]
                for valve in valves:
                    valve.shut = False
                loop_pool(asyncio.get_running_loop()).release()
            else:
                waiting = True
        if waiting:
            sink.wanted = True

    def _reader_done(self, reader: PipeReader) -> None:
        out = self.outputs.get(reader.watcher)
        if out is not None:
            mine = out.by_pid.get(reader.pid)
            if mine is not None and reader in mine:
                mine.remove(reader)
                if not mine:
                    del out.by_pid[reader.pid]
            out.split_done += reader.splitter.split

    # ------------------------------------------------------------------ draining
    # ------------------------------------------------------------------ in-place upgrade
    async def freeze(self) -> dict[int, dict[str, int]]:
        """Upgrade: stop reading every live worker's pipes (keeping them open), flush every sink.

        Returns {pid: {kind: read fd}}: the new image reads the same pipes, so workers never see EPIPE.
        A partial line still in a splitter is written out first, so nothing read is lost.
        """
        handed: dict[int, dict[str, int]] = {}
        for out in self.outputs.values():
            for reader in out.readers:
                if reader.fd is None or reader.exited:
                    continue
                reader.pause()
                rest = reader.splitter.finish_block()
                if rest:
                    self._deliver(reader, rest)
                handed.setdefault(reader.pid, {})[reader.kind] = reader.fd
        sinks = [c.sink for out in self.outputs.values() for c in out.channels.values() if c.sink is not None]
        flushes = [s.flush() for s in {id(s): s for s in sinks}.values() if not s.closed]
        if flushes:
            await asyncio.wait(flushes, timeout=FLUSH_TIMEOUT)
        return handed

    def thaw(self) -> None:
        """The upgrade's exec failed: read the pipes again."""
        for out in self.outputs.values():
            for reader in out.readers:
                if reader.paused and reader.fd is not None:
                    reader.resume()

    def adopt(self, cfg: Any, kind: str, fd: int, pid: int, wid: int) -> None:
        """Upgrade, new image: read a worker's pipe handed over by the previous image."""
        self.refresh(cfg)
        self._start_reader(cfg.name, kind, fd, pid, wid)

    async def drain(self, name: str, timeout: float | None = None) -> bool:
        """Wait until the pipes of exited workers ended and the sinks wrote everything; False on timeout."""
        out = self.outputs.get(name)
        if out is None:
            return True
        ok = True
        exited = [r for r in out.readers if r.exited]
        if exited:
            limit = timeout or max(
                [c.drain_timeout for c in out.channels.values()] + [DRAIN_TIMEOUT]
            ) + 1.0
            waits = [asyncio.create_task(r.finished.wait()) for r in exited]
            _done, pending = await asyncio.wait(waits, timeout=limit)
            for task in pending:
                task.cancel()
            for reader in exited:
                reader.finish()  # past the deadline: the worker is gone, stop waiting on its pipe
            ok = not pending
        sinks = {id(c.sink): c.sink for c in out.channels.values() if c.sink is not None}
        flushes = [s.flush() for s in sinks.values() if not s.closed]
        if flushes:
            _done2, pending2 = await asyncio.wait(flushes, timeout=timeout or FLUSH_TIMEOUT)
            ok = ok and not pending2
        return ok

    async def remove(self, name: str) -> None:
        """A watcher was removed (and stopped): drain, close its sinks."""
        await self.drain(name)
        out = self.outputs.pop(name, None)
        if out is None:
            return
        for reader in out.readers:
            reader.finish()
        sinks = {id(c.sink): c.sink for c in out.channels.values() if c.sink is not None}
        for sink in sinks.values():
            sink.close()
            await sink.wait_closed(FLUSH_TIMEOUT)

    async def close(self) -> None:
        """circusd shutdown: every pipe read to its end (bounded), every sink flushed and closed."""
        for name in list(self.outputs):
            for reader in self.outputs[name].readers:
                if not reader.exited:
                    reader.worker_exited(DRAIN_TIMEOUT)  # nothing is supervised any more
            await self.remove(name)
        for sink in self._retired:
            await sink.wait_closed(FLUSH_TIMEOUT)
        self._retired.clear()

    # ------------------------------------------------------------------ queries (logs command)
    def follow(self, name: str, seconds: float) -> None:
        """Publish this watcher's lines as events for the next `seconds` (publish = auto, the default).

        One event per line costs circusd several microseconds per line (JSON + zmq): paid only while a
        follower (`circusctl logs -f`, which renews the lease) is there, or always with publish = true.
        """
        self._followed[name] = time.monotonic() + max(0.0, min(seconds, 3600.0))

    def blocks(self, name: str) -> int:
        """The number of the last block read from this watcher's pipes (0: none yet)."""
        out = self.outputs.get(name)
        return out.blocks if out is not None else 0

    def tail(self, name: str, lines: int = 20, wid: int | None = None) -> list[dict[str, Any]]:
        out = self.outputs.get(name)
        if out is None or lines <= 0:
            return []
        return [
            {"time": t, "pid": pid, "wid": w, "stream": kind, "data": data.decode(errors="replace"),
             "seq": list(seq)}
            for t, pid, w, kind, data, seq in out.ring.last(lines, wid)
        ]

    def stats(self, name: str) -> dict[str, Any]:
        out = self.outputs.get(name)
        if out is None:
            return {"captured": False}
        sinks = {id(c.sink): c.sink for c in out.channels.values() if c.sink is not None}
        for sink in sinks.values():
            sink.settle()
        return {
            "captured": bool(out.channels),
            "streams": {k: {"class": c.config.cls, "direct": c.direct} for k, c in out.channels.items()},
            "bytes": out.nbytes,
            "dropped": out.dropped,
            "split": out.split_done + sum(r.splitter.split for r in out.readers),
            "written_bytes": sum(s.written_bytes for s in sinks.values()),
            "write_errors": sum(s.lost_lines for s in sinks.values()),
            "queued_bytes": sum(r.queued for r in out.readers),
            "paused": sum(1 for r in out.readers if r.paused),
            "held": sorted(kind for kind, valve in out.valves.items() if valve.shut),
        }
