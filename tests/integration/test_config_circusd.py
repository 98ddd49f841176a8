"""What circusd itself takes from [circus]: log output, pidfile, loggerconfig; real circusd processes.

A problem with any of them is a configuration error (exit 1, `circusd: ...` naming the key) found
before a single worker is spawned.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import circusd_argv, wait_for

from circus_linux.errors import ExitCode

TOUCHER = "[watcher:w]\ncmd = /bin/sh -c 'touch {marker}; exec sleep 1000'\n"


def test_logoutput_starts_workers(circusd: Any, tmp_path: Path) -> None:
    marker = tmp_path / "worker-ran"
    d = circusd(TOUCHER.format(marker=marker), wait=False, logoutput="/nonexistent-dir/circusd.log")
    assert d.proc.wait(30) == ExitCode.CONFIG
    log = d.log_text()
    assert "circusd: invalid configuration" in log and "[circus] logoutput: cannot open" in log, log
    assert "/nonexistent-dir/circusd.log: No such file or directory" in log, log
    assert not marker.exists()
    # the same from the command line names the option
    r = subprocess.run(circusd_argv(str(d.path), "--log-output", "/nonexistent-dir/x.log"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == ExitCode.CONFIG and "command line --log-output: cannot open" in r.stderr, r.stderr
    assert not marker.exists()


def test_unwritable_pidfile_traceback(circusd: Any, tmp_path: Path) -> None:
    marker = tmp_path / "worker-ran"
    d = circusd(TOUCHER.format(marker=marker), wait=False, pidfile="/nonexistent-dir/circusd.pid")
    assert d.proc.wait(30) == ExitCode.CONFIG
    log = d.log_text()
    assert "Traceback" not in log, log
    assert "[circus] pidfile: cannot write /nonexistent-dir/circusd.pid: No such file or dir" in log, log
    assert log.startswith("circusd: "), log
    assert not marker.exists()


def test_loggerconfig_ignored(circusd: Any, tmp_path: Path) -> None:
    # Circus's configure_logger: a loggerconfig replaces loglevel and logoutput (.json: dictConfig)
    records = tmp_path / "from-loggerconfig.log"
    schema = {"version": 1, "handlers": {"f": {"class": "logging.FileHandler", "filename": str(records)}},
              "root": {"handlers": ["f"], "level": "DEBUG"}}
    (tmp_path / "log.json").write_text(json.dumps(schema))
    unused = tmp_path / "unused.log"
    d = circusd("[watcher:w]\ncmd = /bin/sleep 1000\n", loggerconfig=tmp_path / "log.json",
                logoutput=unused, loglevel="error")
    wait_for(lambda: d.pids("w"), what="the worker")
    text = wait_for(lambda: records.exists() and "prestart:" in records.read_text() and records.read_text(),
                    what="circusd's records in the loggerconfig's file")
    assert "no worker spawned" in text or "workers spawned" in text, text
    assert not unused.exists()


def test_loggerconfig_ignored_ini_file_config(circusd: Any, tmp_path: Path) -> None:
    records = tmp_path / "ini.log"
    (tmp_path / "log.ini").write_text(
        "[loggers]\nkeys = root\n[handlers]\nkeys = f\n[formatters]\nkeys = plain\n"
        "[logger_root]\nlevel = INFO\nhandlers = f\n"
        f"[handler_f]\nclass = FileHandler\nformatter = plain\nargs = ({str(records)!r},)\n"
        "[formatter_plain]\nformat = INI %(name)s %(message)s\n"
    )
    d = circusd("[watcher:w]\ncmd = /bin/sleep 1000\n", loggerconfig=tmp_path / "log.ini")
    wait_for(lambda: d.pids("w"), what="the worker")
    wait_for(lambda: records.exists() and "INI circus_linux." in records.read_text(), what="ini records")


def test_loggerconfig_ignored_failing_config_spawns_nothing(circusd: Any, tmp_path: Path) -> None:
    marker = tmp_path / "worker-ran"
    schema = {"version": 1, "handlers": {"f": {"class": "no.such.Handler"}}, "root": {"handlers": ["f"]}}
    (tmp_path / "log.json").write_text(json.dumps(schema))
    d = circusd(TOUCHER.format(marker=marker), wait=False, loggerconfig=tmp_path / "log.json")
    assert d.proc.wait(30) == ExitCode.CONFIG
    log = d.log_text()
    assert "[circus] loggerconfig: cannot apply the logging config" in log and "Traceback" not in log, log
    assert not marker.exists()


def test_loggerconfig_ignored_yaml_with_pyyaml(circusd: Any, tmp_path: Path) -> None:
    pytest.importorskip("yaml")  # optional: without it the loader refuses a .yaml loggerconfig
    records = tmp_path / "yaml.log"
    (tmp_path / "log.yaml").write_text(
        "version: 1\nhandlers:\n  f:\n    class: logging.FileHandler\n"
        f"    filename: {records}\nroot:\n  handlers: [f]\n  level: INFO\n"
    )
    d = circusd("[watcher:w]\ncmd = /bin/sleep 1000\n", loggerconfig=tmp_path / "log.yaml")
    wait_for(lambda: d.pids("w"), what="the worker")
    wait_for(lambda: records.exists() and "prestart:" in records.read_text(), what="yaml records")
