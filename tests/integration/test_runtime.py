"""The runtime in-process with real children: spawn, reap, respawn, backoff, stop escalation, orphans."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from circus_linux import config
from circus_linux.core.states import WatcherState
from circus_linux.errors import ReloadAbandoned, UnknownWatcher
from circus_linux.kernel import native
from circus_linux.runtime import signals
from circus_linux.runtime.arbiter import Arbiter
from circus_linux.runtime.cgroups import CgroupManager


class Harness:
    def __init__(self, arbiter: Arbiter, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.arbiter = arbiter
        self.events = events

    def topics(self, suffix: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t.endswith(suffix)]

    async def until(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what or predicate}")
            await asyncio.sleep(0.002)


@pytest.fixture
def blocked_signals() -> Any:
    signals.block()
    yield
    native.unblock_signals(signals.HANDLED)


class Arena:
    """Runs one test body in its own event loop with a factory of started arbiters, shut down after."""

    def __init__(self, tmp_path: Path, cgroup_root: str) -> None:
        self.tmp_path = tmp_path
        self.cgroup_root = cgroup_root

    def run(self, body: Callable[[Callable[..., Any]], Any]) -> None:
        asyncio.run(self._main(body))

    async def _main(self, body: Callable[[Callable[..., Any]], Any]) -> None:
        made: list[Arbiter] = []

        async def make(sections: str, cgroups: bool = True) -> Harness:
            text = f"[circus]\ncgroup_root = {self.cgroup_root}\n\n{sections}"
            path = self.tmp_path / f"a{len(made)}.ini"
            path.write_text(text)
            cfg = config.load(str(path))
            events: list[tuple[str, dict[str, Any]]] = []
            arb = Arbiter(
                cfg,
                emit=lambda t, p: events.append((t, p)),
                cgroups=CgroupManager.from_config(cfg) if cgroups else None,
            )
            made.append(arb)
            await arb.setup()
            await arb.start()
            return Harness(arb, events)

        try:
            await body(make)
        finally:
            for arb in made:
                await arb.shutdown()


@pytest.fixture
def arena(tmp_path: Path, cgroup_root: str, blocked_signals: None) -> Arena:
    return Arena(tmp_path, cgroup_root)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it vanished between open and read
        return False


def test_pool_starts_with_wids_and_env(arena: Arena, tmp_path: Path) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[env]\nGREETING = hello\n[watcher:pool]\n"
            f"cmd = /bin/sh -c 'echo \"$CIRCUS_WID $GREETING\" > {tmp_path}/out.$$; exec sleep 1000'\n"
            "numprocesses = 3\n"
        )
        w = h.arbiter.get_watcher("pool")
        assert w.state is WatcherState.ACTIVE
        assert sorted(p.wid for p in w.processes()) == [1, 2, 3]

        def written() -> bool:
            files = list(tmp_path.glob("out.*"))
            return len(files) == 3 and all(f.read_text() for f in files)

        await h.until(written, what="workers wrote their wid")
        lines = sorted(f.read_text().strip() for f in tmp_path.glob("out.*"))
        assert lines == ["1 hello", "2 hello", "3 hello"]
        assert [p["wid"] for p in h.topics(".spawn")] == [1, 2, 3]

    arena.run(body)


def test_sigkill_worker_is_replaced_at_once_reusing_its_wid(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:w]\ncmd = sleep 1000\nnumprocesses = 3\n")
        w = h.arbiter.get_watcher("w")
        victim = next(p for p in w.processes() if p.wid == 2)
        t0 = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        new = await h.until(
            lambda: [p for p in w.live() if p.wid == 2 and p.pid != victim.pid], what="replacement of wid 2"
        )
        elapsed = time.monotonic() - t0
        assert len(w.live()) == 3
        assert not alive(victim.pid)  # reaped, not a zombie
        reap = [p for p in h.topics(".reap") if p["process_pid"] == victim.pid]
        assert reap and reap[0]["exit_code"] == -signal.SIGKILL and reap[0]["wid"] == 2
        assert new[0].wid == 2
        # Not a speed benchmark: it shows that no timer (Circus's was 5 s) decided when the death was seen.
        assert elapsed < 1.0

    arena.run(body)


def _queued(w: Any) -> int:
    """Tasks waiting for the watcher's lock (asyncio.Lock keeps them in `_waiters`)."""
    return len(w.lock._waiters or ())


def test_a_start_waiting_on_a_backoff_does_not_spin_the_manager(arena: Arena) -> None:
    # start() waits for the pool (or the give-up); its waits on reconcile passes used to force a pass
    # each, so a crash loop's backoff delays were spent in a busy loop of passes at 100 % CPU.
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:bad]\ncmd = /nonexistent/binary\nmax_retry = 3\nautostart = false\n")
        w = h.arbiter.get_watcher("bad")
        cpu = time.process_time()
        await w.start()  # returns at the give-up: 4 failed spawns, 0.3 s of backoff in between
        cpu = time.process_time() - cpu
        assert len(h.topics("bad.exec_error")) == 4 and len(h.topics("bad.giveup")) == 1
        # A pass per spawn, per exit, per backoff timer and per state change; a busy loop makes thousands.
        assert w._passes < 40, (w._passes, cpu)

    arena.run(body)


def test_a_give_up_while_the_lock_is_held_spawns_nothing_more_and_stops_once(arena: Arena) -> None:
    # The fuzz test's hang: a command held the watcher's lock (a reload waiting on its pool) while the
    # watcher gave up; the queued stop could not run, so every reconcile pass spawned again, failed, gave
    # up again and queued one more stop (17,077 of them, and a busy loop, in one run).
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:bad]\ncmd = /nonexistent/binary\nnumprocesses = 2\n"
                               "max_retry = 1\nautostart = false\n")
        w = h.arbiter.get_watcher("bad")
        async with w.lock:  # what a long command on this watcher does
            await w._start_locked()
            await h.until(lambda: h.topics("bad.giveup"), what="the give-up")
            errors = len(h.topics("bad.exec_error"))
            for _ in range(3):
                await w._next_pass(timeout=5.0)  # each returns once a whole reconcile pass is done
            assert len(h.topics("bad.exec_error")) == errors
            assert len(h.topics("bad.giveup")) == 1
            assert w.state is WatcherState.STARTING  # its stop waits for the lock
        await h.until(lambda: w.state is WatcherState.STOPPED, what="the stop queued by the give-up")
        assert len(h.topics("bad.giveup")) == 1 and len(h.topics("bad.stop")) == 1

    arena.run(body)


def test_a_restart_does_not_hold_the_lock_while_its_pool_backs_off(arena: Arena) -> None:
    # A restart used to wait for its pool under the watcher's lock: every command queued behind it on a
    # watcher that cannot start waited out the whole backoff to the give-up (the fuzz test's 80 s waits).
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:bad]\ncmd = /nonexistent/binary\nmax_retry = 5\nautostart = false\n")
        w = h.arbiter.get_watcher("bad")
        restart = asyncio.create_task(w.restart())
        await h.until(lambda: h.topics("bad.exec_error"), what="the first failed spawn")
        await w.stop()  # 3.1 s of backoff remain before the give-up: the stop does not wait for it
        assert not h.topics("bad.giveup") and w.state is WatcherState.STOPPED
        await restart  # its wait for the pool ends with the stop
        assert len(h.topics("bad.exec_error")) < 6

    arena.run(body)


def test_commands_queued_on_a_removed_watcher_fail_instead_of_bringing_it_back(arena: Arena) -> None:
    # Seen in the fuzz test: a start queued on a watcher's lock ran after `rm` had removed that watcher
    # and gave it a new manager, which supervised workers that `list` could no longer show.
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:w]\ncmd = /bin/sleep 1000\nautostart = false\n")
        w = h.arbiter.get_watcher("w")
        async with w.lock:  # a command in progress: what follows queues
            rm = asyncio.create_task(h.arbiter.rm_watcher("w"))
            await h.until(lambda: _queued(w) == 1, what="rm queued")
            start = asyncio.create_task(w.start())
            incr = asyncio.create_task(w.incr(2))
            await h.until(lambda: _queued(w) == 3, what="start, incr queued")
        await rm
        for queued in (start, incr):
            with pytest.raises(UnknownWatcher):
                await queued
        assert w.state is WatcherState.STOPPED and not w.procs and w._manager is None
        assert "w" not in h.arbiter.watchers and not h.topics("w.spawn")

    arena.run(body)


def test_a_graceful_reload_of_a_respawn_false_watcher_starts_its_new_pool(arena: Arena) -> None:
    # respawn = false only means "do not replace workers that exit": the reload asks for a new pool.
    # Without that, the reload waited ready_timeout (30 s by default) for a pool nobody spawned, holding
    # the watcher's lock, then stopped the old workers and left none (seen in the fuzz test).
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:w]\ncmd = /bin/sleep 1000\nnumprocesses = 2\nrespawn = false\n"
                               "ready_timeout = 5\n")
        w = h.arbiter.get_watcher("w")
        await h.until(lambda: len(w.live()) == 2, what="the first pool")
        old = {p.pid for p in w.live()}
        started = time.monotonic()
        await w.reload(graceful=True)
        new = {p.pid for p in w.live()}
        assert len(new) == 2 and not new & old
        assert time.monotonic() - started < 5  # it did not wait out ready_timeout

    arena.run(body)


def test_a_reload_waiting_on_its_pool_ends_when_rm_nostop_removes_the_watcher(arena: Arena) -> None:
    # Seen in the fuzz test: `rm --nostop` (which does not wait for the lock) cancelled the manager of a
    # watcher whose graceful reload waited for its new pool; the reload then held the lock for the whole
    # ready_timeout (30 s), with 577 commands queued behind it.
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:w]\ncmd = /nonexistent/binary\nmax_retry = 50\nready_timeout = 30\n"
                               "autostart = false\n")
        w = h.arbiter.get_watcher("w")
        await w.start(wait=False)
        await h.until(lambda: h.topics("w.exec_error"), what="a failed spawn")
        reload = asyncio.create_task(w.reload(graceful=True))  # waits for a pool that backs off
        await h.until(lambda: w.lock.locked(), what="the reload holding the lock")
        await h.arbiter.rm_watcher("w", stop=False)
        await asyncio.wait_for(reload, 5.0)  # ends within a pass timeout (1 s), not ready_timeout
        assert w.removed and not w.lock.locked()

    arena.run(body)


# A notify worker that says READY=1 only while the flag file exists: the first pool gets ready, the pool of
# a reload made after the flag is removed never does.
READY_IF_FLAG = (
    "import os, socket, sys, time\n"
    "if os.path.exists(sys.argv[1]):\n"
    "    addr = os.environ['NOTIFY_SOCKET']\n"
    "    addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n"
    "    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', addr)\n"
    "time.sleep(1000)\n"
)


class StuckReload:
    """A watcher `w` of 2 notify workers, ready, then a graceful reload whose new pool never gets ready
    (the flag file is gone), under way and holding the watcher's lock."""

    def __init__(self, h: Harness, flag: Path, reload: asyncio.Task[None]) -> None:
        self.h, self.flag, self.reload = h, flag, reload
        self.w = h.arbiter.get_watcher("w")

    @classmethod
    async def make(cls, make_arbiter: Any, tmp_path: Path) -> StuckReload:
        flag = tmp_path / "ready.flag"
        flag.touch()
        script = tmp_path / "ready_if_flag.py"
        script.write_text(READY_IF_FLAG)
        h = await make_arbiter(
            f"[watcher:w]\ncmd = {sys.executable} {script} {flag}\nnumprocesses = 2\nnotify = true\n"
            "ready_timeout = 120\ngraceful_timeout = 2\n"
        )
        w = h.arbiter.get_watcher("w")
        await h.until(lambda: len(w.live()) == 2 and all(p.state.value == "ready" for p in w.live()))
        flag.unlink()
        reload = asyncio.create_task(w.reload(graceful=True))
        await h.until(lambda: len(w.processes()) == 4 and w.lock.locked(), what="the new pool, the lock held")
        return cls(h, flag, reload)


def test_a_stop_does_not_queue_behind_a_graceful_reload_waiting_for_readiness(
    arena: Arena, tmp_path: Path
) -> None:
    # The reload would hold the watcher's lock for ready_timeout (120 s here): the stop cancels it instead.
    async def body(make_arbiter: Any) -> None:
        stuck = await StuckReload.make(make_arbiter, tmp_path)
        w = stuck.w
        await asyncio.wait_for(w.stop(), 20)  # it used to queue for ready_timeout (120 s)
        with pytest.raises(ReloadAbandoned, match="watcher w: reload abandoned"):
            await stuck.reload
        assert w.state is WatcherState.STOPPED and not w.processes() and not w.lock.locked()
        # a stopped watcher starts again as usual, and reloads still work once the pool can get ready
        stuck.flag.touch()
        await asyncio.wait_for(w.start(), 30)
        old = {p.pid for p in w.live()}
        await asyncio.wait_for(w.reload(graceful=True), 30)
        assert len(w.live()) == 2 and not {p.pid for p in w.live()} & old

    arena.run(body)


def test_a_stop_abandons_a_graceful_reload_queued_on_the_lock(arena: Arena, tmp_path: Path) -> None:
    # incr, reload and stop arrive together: the reload waits for the lock when the stop comes, so there
    # is no reload under way to cancel yet; it gives up when it gets the lock instead of waiting out
    # ready_timeout (120 s) ahead of the stop.
    async def body(make_arbiter: Any) -> None:
        stuck = await StuckReload.make(make_arbiter, tmp_path)
        w = stuck.w
        await asyncio.wait_for(w.stop(), 20)  # the first reload, under way: cancelled as before
        with pytest.raises(ReloadAbandoned):
            await stuck.reload
        stuck.flag.touch()
        await asyncio.wait_for(w.start(), 30)
        stuck.flag.unlink()  # a reload's new pool would never get ready again
        async with w.lock:  # what a command holding the lock (an incr's pass, say) does
            reload = asyncio.create_task(w.reload(graceful=True))
            await asyncio.sleep(0)  # the reload's first step: it waits for the lock
            stop = asyncio.create_task(w.stop())
            await asyncio.sleep(0)  # the stop's first step: it has asked, and queues behind the reload
            assert not reload.done() and not stop.done()
        await asyncio.wait_for(stop, 20)
        with pytest.raises(ReloadAbandoned, match="a stop came meanwhile"):
            await reload
        assert w.state is WatcherState.STOPPED and not w.processes()

    arena.run(body)


def test_circusd_shutdown_does_not_wait_for_a_graceful_reload_waiting_for_readiness(
    arena: Arena, tmp_path: Path
) -> None:
    async def body(make_arbiter: Any) -> None:
        stuck = await StuckReload.make(make_arbiter, tmp_path)
        await asyncio.wait_for(stuck.h.arbiter.shutdown(), 20)
        assert stuck.reload.done() and isinstance(stuck.reload.exception(), ReloadAbandoned)
        assert not stuck.w.processes()

    arena.run(body)


def test_dstats_tasks_say_what_a_queued_command_waits_on(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:w]\ncmd = /bin/sleep 1000\nautostart = false\n")
        w = h.arbiter.get_watcher("w")
        async with w.lock:  # a command in progress: these three queue behind it
            queued = [asyncio.create_task(w.start(), name=f"control-start-{i}") for i in range(3)]
            await h.until(lambda: _queued(w) == 3, what="3 starts queued")
            tasks = h.arbiter.dstats()["tasks"]
        await asyncio.gather(*queued)
        assert tasks["count"] >= 4  # the test's own task too
        group = next(g for g in tasks["groups"] if g["name"] == "control-start")
        assert group["count"] == 3
        assert "Watcher.start" in group["chain"][0] and "Lock.acquire" in group["chain"][-1], group

    arena.run(body)


def test_a_restart_voids_the_stop_a_give_up_queued_before_it(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:bad]\ncmd = /nonexistent/binary\nmax_retry = 0\nautostart = false\n")
        w = h.arbiter.get_watcher("bad")
        async with w.lock:
            await w._start_locked()
            await h.until(lambda: h.topics("bad.giveup"), what="the give-up")
            # While the give-up's stop waits for the lock, the command holding it restarts the watcher,
            # now with a command that works: the stale stop must not stop the new start.
            await w._stop_locked()
            w.config = dataclasses.replace(w.config, cmd="/bin/sleep", args="1000")
            await w._start_locked()
        assert await w.wait_started(timeout=10.0)
        async with w.lock:  # FIFO: the give-up's stop, queued first, has had its turn
            assert w.state is WatcherState.ACTIVE and len(w.live()) == 1
        assert len(h.topics("bad.stop")) == 1  # the restart's own
        assert len(h.topics("bad.giveup")) == 1

    arena.run(body)


def test_exec_failure_is_an_event_and_gives_up(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:bad]\ncmd = /nonexistent/binary --flag\nmax_retry = 2\n")
        w = h.arbiter.get_watcher("bad")
        await h.until(lambda: w.state is WatcherState.STOPPED, what="give up")
        errors = h.topics("bad.exec_error")
        assert len(errors) == 3  # the first try and max_retry retries
        assert errors[0]["stage"] == "execve" and errors[0]["errno"] == 2
        assert h.topics("bad.giveup")
        assert h.topics("bad.stop")

    arena.run(body)


def test_crash_loop_backs_off_then_gives_up(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:crash]\ncmd = /bin/sh -c 'exit 7'\nmax_retry = 3\n")
        w = h.arbiter.get_watcher("crash")
        await h.until(lambda: w.state is WatcherState.STOPPED, what="give up")
        spawns = [p["time"] for p in h.topics("crash.spawn")]
        reaps = h.topics("crash.reap")
        assert len(spawns) == 4 and all(r["exit_code"] == 7 for r in reaps)
        gaps = [b - a for a, b in itertools.pairwise(spawns)]
        # first retry immediate, then 0.1 s, 0.2 s: growing delays between attempts
        assert gaps[1] >= 0.09 and gaps[2] >= 0.19 and gaps[2] > gaps[1]
        assert "failed to start 4 times" in h.topics("crash.giveup")[0]["reason"]

    arena.run(body)


def test_respawn_false_does_not_respawn(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:once]\ncmd = /bin/sh -c 'exit 0'\nrespawn = false\n")
        await h.until(lambda: h.topics("once.reap"), what="the single run")
        w = h.arbiter.get_watcher("once")
        await w._next_pass()
        assert len(h.topics("once.spawn")) == 1 and w.live() == []

    arena.run(body)


def test_stop_escalates_to_sigkill_after_graceful_timeout(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:stubborn]\ncmd = /bin/sh -c 'trap \"\" TERM; while :; do sleep 0.05; done'\n"
            "graceful_timeout = 0.5\n"
        )
        w = h.arbiter.get_watcher("stubborn")
        pid = w.processes()[0].pid
        await h.until(
            lambda: "SigIgn:\t0000000000004000" in Path(f"/proc/{pid}/status").read_text(),
            what="the trap to be installed",
        )
        t0 = time.monotonic()
        await w.stop()
        assert time.monotonic() - t0 >= 0.5
        reap = [p for p in h.topics(".reap") if p["process_pid"] == pid]
        assert reap[0]["exit_code"] == -signal.SIGKILL

    arena.run(body)


def test_stop_of_a_worker_with_children_kills_the_whole_tree(arena: Arena, tmp_path: Path) -> None:
    async def body(make_arbiter: Any) -> None:
        pidfile = tmp_path / "grandchild.pid"
        h = await make_arbiter(
            f"[watcher:tree]\ncmd = /bin/sh -c '(sleep 1000 & echo $! > {pidfile}); exec sleep 1000'\n"
        )
        grandchild = int(await h.until(lambda: pidfile.exists() and pidfile.read_text().strip()))
        assert alive(grandchild)
        await h.arbiter.get_watcher("tree").stop()
        # The double-forked sleep was re-parented to us (subreaper) and the cgroup kill reached it.
        await h.until(lambda: not alive(grandchild), what="grandchild gone")

    arena.run(body)


def test_stop_children_without_cgroup(arena: Arena, tmp_path: Path) -> None:
    async def body(make_arbiter: Any) -> None:
        pidfile = tmp_path / "child.pid"
        h = await make_arbiter(
            f"[watcher:kids]\ncmd = /bin/sh -c 'sleep 1000 & echo $! > {pidfile}; wait'\n"
            "stop_children = true\n",
            cgroups=False,
        )
        child = int(await h.until(lambda: pidfile.exists() and pidfile.read_text().strip()))
        await h.arbiter.get_watcher("kids").stop()
        await h.until(lambda: not alive(child), what="child of the worker gone")

    arena.run(body)


def test_orphaned_grandchild_is_reaped_not_left_zombie(arena: Arena, tmp_path: Path) -> None:
    async def body(make_arbiter: Any) -> None:
        pidfile = tmp_path / "orphan.pid"
        h = await make_arbiter(
            f'[watcher:parent]\ncmd = /bin/sh -c \'(sh -c "echo \\$\\$ > {pidfile}; exec sleep 0.2" &); '
            "exec sleep 1000'\n"
        )
        orphan = int(await h.until(lambda: pidfile.exists() and pidfile.read_text().strip()))
        # It was re-parented to us (the subreaper), exits after 0.2 s, and must not stay a zombie.
        await h.until(lambda: not os.path.exists(f"/proc/{orphan}"), what="orphan reaped")
        assert h.arbiter.reaped_orphans >= 1

    arena.run(body)


def test_incr_decr_stop_oldest(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:s]\ncmd = sleep 1000\nnumprocesses = 2\n")
        w = h.arbiter.get_watcher("s")
        oldest = [p.pid for p in w.processes()]
        assert await w.incr(3) == 5
        assert len(w.live()) == 5
        assert await w.decr(2) == 3
        await h.until(lambda: all(not alive(pid) for pid in oldest), what="the two oldest stopped")
        assert len(w.live()) == 3

    arena.run(body)


def test_graceful_reload_starts_new_before_stopping_old(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:r]\ncmd = sleep 1000\nnumprocesses = 2\n")
        w = h.arbiter.get_watcher("r")
        old = {p.pid for p in w.processes()}
        h.events.clear()
        await w.reload(graceful=True)
        new = {p.pid for p in w.live()}
        assert len(new) == 2 and not (new & old)
        order = [t.rsplit(".", 1)[1] for t, _ in h.events]
        assert order.index("spawn") < order.index("kill")

    arena.run(body)


def test_max_age_recycles_workers(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:aged]\ncmd = sleep 1000\nmax_age = 1\nmax_age_variance = 0\n")
        w = h.arbiter.get_watcher("aged")
        first = w.processes()[0].pid
        await h.until(lambda: w.live() and w.live()[0].pid != first, timeout=15, what="recycled worker")
        await h.until(lambda: not alive(first), what="old worker gone")

    arena.run(body)


def test_workers_are_placed_in_their_watcher_cgroup(arena: Arena, cgroup_root: str) -> None:
    async def body(make_arbiter: Any) -> None:
        if not (
            os.path.isdir("/sys/fs/cgroup/unified") or os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        ):
            pytest.skip("no cgroup2 mount on this host")
        h = await make_arbiter("[watcher:placed]\ncmd = sleep 1000\nnumprocesses = 2\n")
        for p in h.arbiter.get_watcher("placed").processes():
            text = Path(f"/proc/{p.pid}/cgroup").read_text()
            assert f"0::{cgroup_root}/placed" in text, text

    arena.run(body)


def test_mass_kill_of_500_workers_all_come_back(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:big]\ncmd = sleep 1000\nnumprocesses = 500\n")
        w = h.arbiter.get_watcher("big")
        before = [p.pid for p in w.processes()]
        assert len(before) == 500
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        await h.until(
            lambda: len(w.live()) == 500 and not set(p.pid for p in w.live()) & set(before),
            timeout=60,
            what="500 replacements",
        )
        assert sorted(p.wid for p in w.live()) == list(range(1, 501))
        await h.until(lambda: all(not alive(pid) for pid in before), what="no zombies")

    arena.run(body)


def _children_of_us() -> list[int]:
    """This process's children, whatever thread made them (proc(5): the children file is per thread)."""
    kids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/self/task/{tid}/children") as fh:
            kids += [int(x) for x in fh.read().split()]
    return kids


def _ignores_term(pid: int) -> bool:
    """The worker ran its `trap "" TERM` (SigIgn in /proc/PID/status): a TERM sent before would kill it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ign = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(ign, 16) & (1 << (signal.SIGTERM - 1)))


def test_a_stop_cancelled_half_way_is_finished_by_the_next_stop_or_start(arena: Arena) -> None:
    # circusd's shutdown cancels the commands in flight: a stop cancelled after STOPPING left the watcher
    # stuck there (start refused, every later stop a no-op) and its workers outliving circusd.
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:deaf]\ncmd = sh -c 'trap \"\" TERM; while :; do sleep 0.1; done'\n"
            "graceful_timeout = 30\nnumprocesses = 2\n"
        )
        w = h.arbiter.get_watcher("deaf")

        async def cancelled_stop() -> list[int]:
            pids = [p.pid for p in w.live()]
            await h.until(lambda: all(_ignores_term(p) for p in pids), what="the workers' trap")
            stopping = asyncio.create_task(w.stop())
            await h.until(lambda: w.state is WatcherState.STOPPING, what="the stop under way")
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            assert w.state is WatcherState.STOPPING and all(alive(p) for p in pids)
            return pids

        pids = await cancelled_stop()
        w.config = dataclasses.replace(w.config, graceful_timeout=0.2)  # the finishing stop kills soon
        await w.start()  # finishes the stop first, then starts
        assert w.state is WatcherState.ACTIVE and not any(alive(p) for p in pids)
        w.config = dataclasses.replace(w.config, graceful_timeout=30)
        again = await cancelled_stop()
        w.config = dataclasses.replace(w.config, graceful_timeout=0.2)
        await h.arbiter.shutdown()  # what circusd does after cancelling its commands
        await h.until(lambda: not any(alive(p) for p in again), what="no worker outliving the shutdown")
        assert w.state is WatcherState.STOPPED

    arena.run(body)


def test_a_watcher_whose_stop_had_to_kill_its_cgroup_starts_again(arena: Arena) -> None:
    # Each worker ignores TERM and keeps a child: its stop ends in SIGKILL, then the cgroup's kill takes
    # the orphaned child. With cgroup.kill, Linux 6.18 then SIGKILLed every worker cloned into the cgroup
    # (CLONE_INTO_CGROUP): the next start lost all of them and gave up.
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:deaf]\ncmd = sh -c 'trap \"\" TERM; while :; do sleep 0.1; done'\n"
            "graceful_timeout = 0.2\nnumprocesses = 2\n"
        )
        w = h.arbiter.get_watcher("deaf")
        old = [p.pid for p in w.live()]
        await h.until(lambda: all(_ignores_term(p) for p in old), what="the workers' trap")
        await w.stop()
        await w.start()
        new = [p.pid for p in w.live()]
        assert len(new) == 2 and not set(new) & set(old)
        # Past their trap, they were not killed on the way in: alive, never reaped, still the pool.
        await h.until(lambda: all(_ignores_term(p) for p in new), what="the new workers' trap")
        reaped = {r["process_pid"] for r in h.topics("deaf.reap")}
        assert all(alive(p) for p in new) and not reaped & set(new)
        assert [p.pid for p in w.live()] == new and w.state is WatcherState.ACTIVE

    arena.run(body)


def test_a_failing_reconcile_pass_does_not_end_the_manager(arena: Arena, monkeypatch: Any) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:w]\ncmd = sleep 1000\nnumprocesses = 2\n")
        w = h.arbiter.get_watcher("w")
        real = w._reconcile
        failures: list[int] = []

        async def once_broken() -> float | None:
            if not failures:
                failures.append(1)
                raise RuntimeError("a bug in a pass")
            return await real()

        monkeypatch.setattr(w, "_reconcile", once_broken)
        victim = w.live()[0].pid
        os.kill(victim, signal.SIGKILL)
        await h.until(lambda: len(w.live()) == 2 and victim not in w.procs, what="the replacement")
        assert failures and w._managed()
        await w.freeze()  # and freeze/close do not re-raise it

    arena.run(body)


def test_circusd_shutdown_ends_a_sighup_reload_before_closing_the_watchers(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:w]\ncmd = sleep 1000\nnumprocesses = 2\n"
            "[watcher:later]\ncmd = sleep 1000\nautostart = false\n"
        )
        before = set(_children_of_us())
        h.arbiter.handle_hup()
        await asyncio.sleep(0)  # the reload task has begun
        await h.arbiter.shutdown()
        assert all(w.state is WatcherState.STOPPED for w in h.arbiter.watchers.values())
        await h.until(lambda: not (set(_children_of_us()) - before) and not any(alive(p) for p in before),
                      what="no worker left")

    arena.run(body)


def test_reloadconfig_diffs_against_the_running_watchers(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        base = "[watcher:a]\ncmd = sleep 1000\n"
        h = await make_arbiter(base + "[watcher:b]\ncmd = sleep 1000\n")
        arb, path = h.arbiter, Path(h.arbiter.config.path)
        await arb.rm_watcher("b")
        # rm, then the same file: b comes back (Circus compares the file with what runs)
        assert (await arb.reload_config())["added"] == ["b"] and arb.get_watcher("b").live()
        await arb.rm_watcher("b")
        path.write_text(path.read_text().replace("[watcher:b]\ncmd = sleep 1000\n", ""))
        assert (await arb.reload_config())["added"] == []  # b gone from both: nothing to do, no error
        path.write_text(path.read_text().replace("sleep 1000\n", "sleep 1000\nnumprocesses = 3\n"))
        assert (await arb.reload_config())["scaled"] == {"a": [1, 3]}
        # add, then the file names the same watcher with the same section: the running watcher stays
        added = await arb.add_watcher(dataclasses.replace(arb.get_watcher("a").config, name="x",
                                                          numprocesses=2), start=True)
        pids = [p.pid for p in added.live()]
        path.write_text(path.read_text() + "[watcher:x]\ncmd = sleep 1000\nnumprocesses = 2\n")
        report = await arb.reload_config()
        assert "x" not in report["added"] and arb.get_watcher("x") is added
        assert [p.pid for p in added.live()] == pids
        # and a watcher made by add that the file does not name goes, as with Circus
        other = await arb.add_watcher(dataclasses.replace(arb.get_watcher("a").config, name="y"), start=True)
        gone = [p.pid for p in other.live()]
        assert (await arb.reload_config())["removed"] == ["y"] and "y" not in arb.watchers
        await h.until(lambda: not any(alive(p) for p in gone), what="y's worker stopped")

    arena.run(body)


def test_an_incr_during_a_pass_of_a_respawn_false_watcher_is_not_lost(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:slow]\ncmd = sleep 1000\nnumprocesses = 2\nrespawn = false\nwarmup_delay = 0.3\n"
            "autostart = false\n"
        )
        w = h.arbiter.get_watcher("slow")
        await w.start(wait=False)
        await h.until(lambda: len(w.live()) == 1, what="the first spawn, then the warmup delay")
        assert w._in_pass
        await w.incr(1)  # asks for a spawn while the pass still sleeps before its second one
        await h.until(lambda: len(w.live()) == 3, timeout=10, what="3 workers")
        assert w.state is WatcherState.ACTIVE

    arena.run(body)


def test_a_give_up_ends_the_pass_that_gave_up(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:bad]\ncmd = /nonexistent/binary\nnumprocesses = 20\nmax_retry = 0\n"
                               "autostart = false\n")
        w = h.arbiter.get_watcher("bad")
        await w.start()
        await h.until(lambda: w.state is WatcherState.STOPPED, what="the stop after the give-up")
        assert len(h.topics("bad.exec_error")) == 1 and len(h.topics("bad.giveup")) == 1

    arena.run(body)


def test_an_adopted_worker_still_waiting_for_ready_keeps_its_ready_timeout(arena: Arena) -> None:
    # In-place upgrade: a notify worker handed over before its READY=1 got no ready deadline in the new
    # image, so one that never got ready kept the watcher starting for good.
    from circus_linux.runtime.upgrade import AdoptedProcess, AdoptedWatcher

    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:n]\ncmd = sleep 1000\nnotify = true\nready_timeout = 0.5\nautostart = false\n"
            "max_retry = 0\n"
        )
        w = h.arbiter.get_watcher("n")
        child = native.spawn(native.SpawnSpec(path="/bin/sleep", argv=["sleep", "1000"], env={}, fds={}))
        w.adopt(AdoptedWatcher("n", 1, "starting", [AdoptedProcess(
            pid=child.pid, pidfd=child.pidfd, wid=1, started=time.time(), age=0.1, cmdline=["sleep", "1000"],
            state="running")]))
        assert w.procs[child.pid].ready_deadline is not None
        await h.until(lambda: not alive(child.pid), timeout=10, what="the adopted worker's ready timeout")
        await h.until(lambda: w.state is not WatcherState.STARTING, timeout=10, what="the start settled")

    arena.run(body)


def test_a_thaw_after_a_failed_upgrade_finishes_the_stops_the_freeze_cancelled(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter(
            "[watcher:deaf]\ncmd = sh -c 'trap \"\" TERM; while :; do sleep 0.1; done'\n"
            "graceful_timeout = 30\nnumprocesses = 2\n"
            "[watcher:bad]\ncmd = /nonexistent/binary\nmax_retry = 0\nautostart = false\n"
        )
        w, bad = h.arbiter.get_watcher("deaf"), h.arbiter.get_watcher("bad")
        await h.until(lambda: all(_ignores_term(p.pid) for p in w.live()), what="the workers' trap")
        await w.decr(1)  # the surplus worker's stop waits out graceful_timeout (TERM is ignored)
        leaving = next(p.pid for p in w.processes() if p.expected_exit)
        async with bad.lock:  # the give-up's stop queues behind this lock
            await bad._start_locked()
            await h.until(lambda: bad._gave_up, what="the give-up")
            await w.freeze()  # the upgrade: background work cancelled
            await bad.freeze()
        w.config = dataclasses.replace(w.config, graceful_timeout=0.2)
        w.thaw()  # the exec failed
        bad.thaw()
        await h.until(lambda: not alive(leaving), what="the surplus worker stopped after the thaw")
        await h.until(lambda: bad.state is WatcherState.STOPPED, what="the give-up's stop after the thaw")
        assert len(w.live()) == 1

    arena.run(body)


def test_sighup_and_sigterm_through_the_signalfd(arena: Arena) -> None:
    async def body(make_arbiter: Any) -> None:
        h = await make_arbiter("[watcher:sig]\ncmd = sleep 1000\n")
        old = h.arbiter.get_watcher("sig").processes()[0].pid
        os.kill(os.getpid(), signal.SIGHUP)  # blocked: queued on the signalfd, read by the loop
        await h.until(lambda: h.topics("sig.reload"), what="reload after SIGHUP")
        assert h.arbiter.get_watcher("sig").live()[0].pid != old
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(h.arbiter.run_until_stopped(), 5) == 0

    arena.run(body)


def test_python_worker_sees_sys_executable() -> None:
    assert os.path.exists(sys.executable)
