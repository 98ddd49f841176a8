"""circusctl builds only the subparser of the command it runs: same parse result, and it knows its options."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stderr, redirect_stdout

import pytest

from circus_linux.cli import circusctl

ARGVS = [
    ["list"],
    ["list", "web"],
    ["--endpoint", "ipc:///x", "list", "web"],
    ["--endpoint=ipc:///x", "--json", "status"],
    ["--end", "ipc:///x", "--time", "3", "stats", "web", "12", "--extended"],
    ["--timeout", "2", "--prettify", "signal", "web", "12", "--children", "hup"],
    ["--server-key", "s.key", "--client_key", "c.key_secret", "numwatchers"],
    ["--hosts", "h.txt", "--host", "a", "--host", "b", "status"],
    ["--ssh", "me@box:2222", "--ssh-keyfile", "id", "list"],
    ["set", "web", "numprocesses", "3", "--waiting", "--endpoint", "ipc:///y"],
    ["add", "--start", "web", "sleep", "10"],
    ["kill", "web", "12", "--signum", "9", "--graceful-timeout", "2"],
    ["logs", "web", "-f", "--lines", "5"],
    ["listen", "ipc:///p", "watcher.", "-n", "3"],
    ["keygen", "/tmp/k"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=lambda a: " ".join(a))
def test_one_subparser_parses_like_all_of_them(argv: list[str]) -> None:
    only = circusctl.command_of(argv)
    assert only is not None and only == circusctl.parse(circusctl.build_parser(), argv).command
    full = circusctl.parse(circusctl.build_parser(), argv)
    assert vars(circusctl.parse(circusctl.build_parser(only), argv)) == vars(full)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-h", "list"],
        ["--version"],
        ["--hos", "x", "list"],  # ambiguous (--hosts, --host): argparse words the error
        ["--json=1", "list"],
        ["--nope", "list"],
        ["--", "list"],
        ["lits"],
        ["--endpoint"],
    ],
    ids=lambda a: " ".join(a) or "(none)",
)
def test_unsure_command_lines_get_the_whole_parser(argv: list[str]) -> None:
    assert circusctl.command_of(argv) is None


def test_the_scanner_knows_every_global_option() -> None:
    # A global option added to the parser but not to the scanner would make it misread the next word.
    parser = circusctl.build_parser()
    with_value: set[str] = set()
    flags: set[str] = set()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        (with_value if action.nargs != 0 else flags).update(action.option_strings)
    assert with_value == set(circusctl._VALUE_OPTIONS)
    assert flags == {*circusctl._FLAG_OPTIONS, "-h", "--help", "--version"}


def test_help_and_errors_are_unchanged() -> None:
    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = circusctl.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    code, out, _ = run("--help")
    assert code == 0 and all(f"    {name}" in out for name in circusctl.COMMAND_HELP)
    code, out, _ = run("list", "--help")
    assert code == 0 and out.startswith("usage: circusctl list")
    code, _, err = run("list", "a", "b")
    assert code == 2 and "unrecognized arguments: b" in err
    code, _, err = run("lits")
    assert code == 2 and "invalid choice: 'lits'" in err and "'list'" in err
