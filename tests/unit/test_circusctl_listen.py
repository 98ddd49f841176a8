"""circusctl listen: which endpoint and topics each command line means (ours and Circus's form)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest

from circus_linux.cli import circusctl


@pytest.fixture
def heard(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Controller.listen replaced by a recorder: (endpoint, topics) per call, nothing connected."""
    calls: list[tuple[str, list[str]]] = []

    def listen(self: circusctl.Controller, endpoint: str, topics: Sequence[str], count: int | None) -> int:
        calls.append((endpoint, list(topics)))
        return 0

    monkeypatch.setattr(circusctl.Controller, "listen", listen)
    monkeypatch.setenv("CIRCUSCTL_ENDPOINT", "ipc:///control.sock")  # never the event stream
    return calls


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["listen"], (circusctl.DEFAULT_PUBSUB, [])),
        (["listen", "watcher.web"], (circusctl.DEFAULT_PUBSUB, ["watcher.web"])),
        (["listen", "ipc:///p.sock"], ("ipc:///p.sock", [])),
        (["listen", "tcp://10.0.0.1:5556", "a", "b", "-n", "2"], ("tcp://10.0.0.1:5556", ["a", "b"])),
        (["--endpoint", "ipc:///x/pub.sock", "listen", "watcher.tr"], ("ipc:///x/pub.sock", ["watcher.tr"])),
        (["--endpoint", "ipc:///x/pub.sock", "listen", "a", "b"], ("ipc:///x/pub.sock", ["a", "b"])),
        (["listen", "a", "--endpoint", "ipc:///x/pub.sock", "b"], ("ipc:///x/pub.sock", ["a", "b"])),
        (["--endpoint", "ipc:///x/c.sock", "listen", "ipc:///y/p.sock", "a"], ("ipc:///y/p.sock", ["a"])),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_endpoint_and_topics(heard: list[tuple[str, list[str]]], argv: list[str], expected: tuple) -> None:
    assert circusctl.main(argv, io.StringIO(), io.StringIO()) == 0
    assert heard == [expected]


def test_split_listen() -> None:
    assert circusctl.split_listen([]) == (None, [])
    assert circusctl.split_listen(["watcher.", "stat."]) == (None, ["watcher.", "stat."])
    assert circusctl.split_listen(["ipc:///p", "watcher."]) == ("ipc:///p", ["watcher."])


def test_an_endpoint_with_several_hosts_is_a_usage_error() -> None:
    err = io.StringIO()
    argv = ["--endpoint", "ipc:///a", "--endpoint", "ipc:///b", "listen", "ipc:///p", "watcher."]
    assert circusctl.main(argv, io.StringIO(), err) == 2 and "one host" in err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["listen", "bogus://x", "watcher."],
        ["--endpoint", "tcp://no-port", "listen", "watcher."],
        ["--endpoint", "nonsense", "--endpoint", "ipc:///b", "listen"],
    ],
    ids=" ".join,
)
def test_a_bad_endpoint_is_one_line_and_exit_1(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert circusctl.main(argv, out, err) == 1
    assert out.getvalue() == "" and err.getvalue().startswith("error: bad endpoint")
    assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue()
