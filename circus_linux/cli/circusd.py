"""circusd: the composition root. Parses the command line, loads the config, wires arbiter + control, runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from circus_linux import __version__
from circus_linux import config as configmod
from circus_linux.cli import logsetup
from circus_linux.cli.helpformat import HelpFormatter
from circus_linux.cli.logsetup import LogOutput
from circus_linux.config import loggerconfig
from circus_linux.errors import CircusError, ConfigError, ConfigIssue, ExitCode

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
        "--log-output",
        dest="logoutput",
        help="'-' for stderr (default), 'journal', or a file path; [circus] loggerconfig (an .ini, .json "
        "or .yaml logging config, as in Circus) replaces --log-level and --log-output",
    )
    p.add_argument("--pidfile", help="write circusd's pid there (default: [circus] pidfile)")
    p.add_argument("--version", action="version", version=f"circus-linux {__version__}")
    return p


def _log() -> logging.Logger:
    """circusd's logger. logging (~7 ms of imports here) waits until the prestart's workers are spawned."""
    import logging

    return logging.getLogger("circus_linux.circusd")


def load_config(path: str | None) -> Any:
    if path is None:
        return configmod.load(configmod.default_config_path())
    return configmod.load(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _config_error(exc)
    except OSError as exc:
        print(f"circusd: cannot read {args.config}: {exc.strerror}", file=sys.stderr)
        return ExitCode.CONFIG
    if args.check:
        from circus_linux.runtime.cgroups import check_warnings  # limits that cgroup_root = off drops

        try:
            check_imports(cfg)
        except ConfigError as exc:
            return _config_error(exc)

        for warning in (*cfg.warnings, *check_warnings(cfg)):
            print(f"warning: {warning}", file=sys.stderr)
        counts = f"{len(cfg.watchers)} watchers, {len(cfg.sockets)} sockets, {len(cfg.plugins)} plugins"
        print(f"{cfg.path}: OK ({counts})")
        return ExitCode.OK

    # Signals are blocked before any thread exists (zmq's I/O threads included) and before any worker is
    # spawned, so they are only ever delivered to the signalfd the arbiter reads.
    from circus_linux.runtime import signals

    signals.block()
    try:
        check_imports(cfg)  # after block(): a thread the user's module starts must not take our signals
    except ConfigError as exc:
        return _config_error(exc)
    if cfg.circus.umask is not None:
        os.umask(cfg.circus.umask)
    # What circusd itself needs from the config is checked before any worker exists: the log output (or
    # the loggerconfig) and the pidfile.
    try:
        output = _logging_first(cfg, args)
    except ConfigError as exc:
        return _config_error(exc)
    pidfile = args.pidfile or cfg.circus.pidfile
    if pidfile:
        try:
            with open(pidfile, "w") as fh:
                fh.write(f"{os.getpid()}\n")
        except OSError as exc:
            why = f"cannot write {pidfile}: {_why(exc)}"
            return _config_error(_issue(cfg, args.pidfile and "--pidfile", "pidfile", why))
    # Workers first: those that need no event loop are spawned now (runtime/prestart.py), and exec while
    # the rest of circusd is imported; the arbiter adopts them.
    from circus_linux.runtime.prestart import prestart

    prestarted = prestart(cfg)
    try:
        return _run(cfg, args, prestarted, output)
    finally:
        prestarted.discard()  # only workers the arbiter never adopted (it failed before): no one else's
        if pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pidfile)


def check_imports(cfg: Any) -> None:
    """Import every plugin class (`use =`) and hook function the config names, as Circus does when it
    loads a config (get_plugin_cmd, Watcher._resolve_hook): a typo is a ConfigError naming file, line,
    section and key, before anything runs, rather than a plugin that crash-loops until it is given up or a
    hook that fails every spawn. This runs the modules' import-time code in circusd, as Circus does; it
    happens before the prestart, so only configs that name such targets pay for it."""
    targets = getattr(cfg, "imports", ())
    if not targets:
        return
    from circus_linux.runtime.aio import import_asyncio

    import_asyncio()  # runtime.hooks imports asyncio: this process's first import of it, without TLS
    from circus_linux.plugins.run import resolve as resolve_plugin
    from circus_linux.runtime.hooks import resolve as resolve_hook

    issues = []
    for t in targets:
        try:
            if t.kind == "plugin":
                _in_plugin_path(resolve_plugin, t.target)
            else:
                resolve_hook(t.target)
        except Exception as exc:  # the module's own code may raise anything; it is the config's error
            reason = str(exc).removeprefix(f"{t.target!r}: ") or type(exc).__name__
            message = f"cannot import {t.target}: {reason}"
            issues.append(ConfigIssue(t.file, t.section, t.key, message, t.line))
    if issues:
        raise ConfigError(issues)


def _in_plugin_path(resolve: Any, target: str) -> Any:
    """resolve(target) with the sys.path a plugin process has: `python -m circus_linux.plugins.run` puts
    its working directory (circusd's) first, which circusd itself (a console script, or `python -P`) lacks."""
    cwd = os.getcwd()
    if cwd in sys.path:
        return resolve(target)
    sys.path.insert(0, cwd)
    try:
        return resolve(target)
    finally:
        sys.path.remove(cwd)


def _config_error(exc: ConfigError) -> int:
    print(f"circusd: invalid configuration ({len(exc.issues)} error(s)):", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    return ExitCode.CONFIG


def _issue(cfg: Any, option: str | None, key: str, message: str) -> ConfigError:
    """An error in what circusd itself uses: named by its command-line `option` when it came from there,
    by its [circus] key otherwise."""
    if option is not None:
        return ConfigError([ConfigIssue("command line", None, option, message)])
    return ConfigError([ConfigIssue(cfg.path, "circus", key, message)])


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _logging_first(cfg: Any, args: argparse.Namespace) -> LogOutput | None:
    """Before the prestart: apply [circus] loggerconfig (None returned: it replaces loglevel and
    logoutput, as in Circus), or open the log output, without importing logging (cli/logsetup.py)."""
    if not loggerconfig.is_default(cfg.circus.loggerconfig):
        try:
            logsetup.apply_loggerconfig(cfg.circus.loggerconfig)
        except ValueError as exc:
            raise _issue(cfg, None, "loggerconfig", str(exc)) from None
        return None
    output = args.logoutput or cfg.circus.logoutput
    option = args.logoutput and "--log-output"
    try:
        return logsetup.open_output(output)
    except ModuleNotFoundError:
        raise _issue(cfg, option, "logoutput", f"{output}: python-systemd is not installed") from None
    except OSError as exc:
        raise _issue(cfg, option, "logoutput", f"cannot open {output}: {_why(exc)}") from None


def _run(cfg: Any, args: argparse.Namespace, prestarted: Any, output: LogOutput | None) -> int:
    """Everything after the prestart's spawns: logging (prestart logs nothing: the arbiter reports what it
    did, so logging's imports wait until the workers exec), then the event loop."""
    if output is not None:
        logsetup.setup(args.loglevel or cfg.circus.loglevel, output)
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
