"""circusd: the composition root. Parses the command line, loads the config, wires arbiter + control, runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from circus_linux import __version__
from circus_linux import config as configmod
from circus_linux.cli.helpformat import HelpFormatter
from circus_linux.errors import CircusError, ConfigError, ExitCode

if TYPE_CHECKING:
    import asyncio
    import logging

DESCRIPTION = """\
Run the circus-linux arbiter in the foreground: start every autostart watcher of CONFIG in priority
order and keep their workers alive. Without CONFIG, runs the embedded example config (a small pool of
shell workers that print a line every few seconds). Signals: TERM/INT/QUIT stop everything and exit 0,
HUP re-reads the config and reloads the workers gracefully, USR2 re-executes circusd in place (same
PID) keeping its workers and listening sockets (as `circusctl upgrade`). Watchers without hooks,
sockets, notify, captured output or warmup_delay get their workers spawned before the rest of circusd
is loaded (only the first watcher with a [circus] warmup_delay, the pause between two watchers' starts;
CIRCUS_LINUX_PRESTART=0 in the environment turns that off).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circusd", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("config", nargs="?", help="Circus ini file (default: the embedded example config)")
    p.add_argument("--check", action="store_true", help="validate CONFIG (includes resolved) and exit 0/1")
    p.add_argument(
        "--log-level",
        dest="loglevel",
        help="debug, info, warning, error (default: [circus] loglevel or info)",
    )
    p.add_argument(
        "--log-output", dest="logoutput", help="'-' for stderr (default), 'journal', or a file path"
    )
    p.add_argument("--pidfile", help="write circusd's pid there (default: [circus] pidfile)")
    p.add_argument("--version", action="version", version=f"circus-linux {__version__}")
    return p


def _log() -> logging.Logger:
    """circusd's logger. logging (~7 ms of imports here) waits until the prestart's workers are spawned."""
    import logging

    return logging.getLogger("circus_linux.circusd")


def setup_logging(level: str | None, output: str | None) -> None:
    import logging

    lvl = getattr(logging, (level or "info").upper(), logging.INFO)
    handler: logging.Handler
    if output in (None, "-", "stderr", "stdout") and os.environ.get("JOURNAL_STREAM") and _journal_ok():
        output = "journal"
    if output == "journal":
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="circusd")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    elif output in (None, "-", "stderr"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s circusd[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    elif output == "stdout":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            logging.Formatter("%(asctime)s circusd[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    else:
        handler = logging.FileHandler(output)
        handler.setFormatter(
            logging.Formatter("%(asctime)s circusd[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)


def _journal_ok() -> bool:
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True


def load_config(path: str | None) -> Any:
    if path is None:
        return configmod.load(configmod.default_config_path())
    return configmod.load(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"circusd: invalid configuration ({len(exc.issues)} error(s)):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return ExitCode.CONFIG
    except OSError as exc:
        print(f"circusd: cannot read {args.config}: {exc.strerror}", file=sys.stderr)
        return ExitCode.CONFIG
    if args.check:
        from circus_linux.runtime.cgroups import check_warnings  # limits that cgroup_root = off drops

        for warning in (*cfg.warnings, *check_warnings(cfg)):
            print(f"warning: {warning}", file=sys.stderr)
        counts = f"{len(cfg.watchers)} watchers, {len(cfg.sockets)} sockets, {len(cfg.plugins)} plugins"
        print(f"{cfg.path}: OK ({counts})")
        return ExitCode.OK

    # Signals are blocked before any thread exists (zmq's I/O threads included) and before any worker is
    # spawned, so they are only ever delivered to the signalfd the arbiter reads.
    from circus_linux.runtime import signals

    signals.block()
    if cfg.circus.umask is not None:
        os.umask(cfg.circus.umask)
    pidfile = args.pidfile or cfg.circus.pidfile
    if pidfile:
        with open(pidfile, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    # Workers first: those that need no event loop are spawned now (runtime/prestart.py), and exec while
    # the rest of circusd is imported; the arbiter adopts them.
    from circus_linux.runtime.prestart import prestart

    prestarted = prestart(cfg)
    try:
        return _run(cfg, args, prestarted)
    finally:
        prestarted.discard()  # only workers the arbiter never adopted (it failed before): no one else's
        if pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pidfile)


def _run(cfg: Any, args: argparse.Namespace, prestarted: Any) -> int:
    """Everything after the prestart's spawns: logging (prestart logs nothing: the arbiter reports what it
    did, so logging's imports wait until the workers exec), then the event loop."""
    output = args.logoutput or cfg.circus.logoutput
    try:
        setup_logging(args.loglevel or cfg.circus.loglevel, output)
    except OSError as exc:
        print(f"circusd: cannot open the log output {output}: {exc.strerror}", file=sys.stderr)
        return ExitCode.CONFIG
    except ImportError:
        print(f"circusd: log output {output}: python-systemd is not installed", file=sys.stderr)
        return ExitCode.CONFIG
    if args.config is None:
        _log().info("no config given: running the embedded example %s", cfg.path)
    for warning in cfg.warnings:
        _log().warning("%s", warning)

    # First import of asyncio in this process, before anything that imports it: without its TLS half.
    from circus_linux.runtime.aio import import_asyncio

    asyncio = import_asyncio()
    try:
        return asyncio.run(serve(cfg, prestarted))
    except CircusError as exc:
        _log().error("%s", exc)
        _notify_errno(exc)
        return ExitCode.RUNTIME


def _notify_errno(exc: BaseException) -> None:
    from circus_linux.kernel.notify import Notifier

    err = getattr(exc, "errno", None) or 1
    Notifier.from_environ().notify(STATUS=f"failed: {exc}", ERRNO=err)


async def serve(cfg: Any, prestarted: Any = None) -> int:
    import asyncio  # already imported by main(), without its TLS half

    from circus_linux.core.prestart import control_first
    from circus_linux.runtime.arbiter import Arbiter
    from circus_linux.runtime.cgroups import CgroupManager

    tree = prestarted.tree if prestarted is not None else None
    arbiter = Arbiter(cfg, cgroups=CgroupManager.from_config(cfg, tree), prestarted=prestarted)
    control: Any = None
    starting: asyncio.Future[None] | None = None
    try:
        await arbiter.setup()
        if control_first(cfg):
            control = _make_control(arbiter, cfg)
            await control.start()
        starting = asyncio.ensure_future(arbiter.start(announce=False))
        if control is None:
            # Workers first: the control channel (pyzmq and the command layer, ~20 ms of imports here) is
            # built once the first watcher has issued its first spawns, or after CONTROL_WAIT at the latest.
            # A client that connects before that waits in ZeroMQ's reconnect and is answered then.
            await _first_spawns(arbiter, starting, CONTROL_WAIT)
            control = _make_control(arbiter, cfg)
            await control.start()
        await starting
        arbiter.announce()  # READY=1 once circusctl can reach us
        while True:
            code = await arbiter.run_until_stopped()
            if not arbiter.upgrade_requested:
                return code
            await _upgrade_in_place(arbiter, control)
            # The exec failed: the closed control service (its ZeroMQ context terminated) is built again.
            control = _make_control(arbiter, cfg)
            await control.start()
    finally:
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        # Commands end first (nothing starts while the watchers stop), the event stream last: the
        # shutdown's events (arbiter.stopping, kill, reap, stop) reach `listen` and the plugins, which
        # stop last, as in Circus (Arbiter.stop: the watchers, then the controller).
        if control is not None:
            await control.close_commands()
        try:
            await arbiter.shutdown()
        finally:
            if control is not None:
                await control.close(flush=1.0)


# The longest the first spawns may keep the control channel unbuilt (a slow before_start hook, say).
CONTROL_WAIT = 1.0


async def _first_spawns(arbiter: Any, starting: asyncio.Future[None], timeout: float) -> None:
    """Until a watcher has made its first reconcile pass (its first spawns are issued), the start ended,
    or `timeout` passed."""
    import asyncio

    waits = [asyncio.ensure_future(w.passed()) for w in arbiter.watchers.values()]
    try:
        await asyncio.wait([starting, *waits], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def _upgrade_in_place(arbiter: Any, control: Any) -> None:
    """Re-exec ourselves with the workers and sockets handed over; returns only if the exec failed."""
    from circus_linux.runtime import upgrade

    if control is not None:
        await control.close()  # the new image binds the endpoints again; clients' DEALERs reconnect
    state = await arbiter.freeze()
    import logging

    logging.shutdown()
    try:
        upgrade.exec_upgrade(state)
    except OSError as exc:
        _log().error("in-place upgrade failed, carrying on with this image: %s", exc)
        arbiter.thaw()


def _make_control(arbiter: Any, cfg: Any) -> Any:
    from circus_linux.control.service import ControlService

    return ControlService(arbiter, cfg.circus)
