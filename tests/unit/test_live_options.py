"""config.parse_watcher_option: what `set` accepts, parsed as the ini parses it (pure, no process)."""

from __future__ import annotations

import resource
import signal

import pytest

from circus_linux.config import parse_watcher_option
from circus_linux.config.model import HookConfig
from circus_linux.control.commands.set import cgroup_changes
from circus_linux.control.protocol import Errno, RequestError
from circus_linux.errors import ConfigError


@pytest.mark.parametrize(
    ("key", "value", "field", "parsed"),
    [
        ("stop_signal", "int", "stop_signal", int(signal.SIGINT)),
        ("stop_signal", 9, "stop_signal", 9),
        ("send_hup", "Off", "send_hup", False),
        ("shell", True, "shell", True),
        ("numprocesses", "3", "numprocesses", 3),
        ("graceful_timeout", 2.5, "graceful_timeout", 2.5),
        ("cmd", " sleep 1 ", "cmd", "sleep 1"),
        ("env", "A=1, B=two", "env", {"A": "1", "B": "two"}),
        ("env", {"A": "1"}, "env", {"A": "1"}),
        ("rlimit_nofile", "4096", "rlimits.nofile", 4096),
        ("rlimit_core", "unlimited", "rlimits.core", resource.RLIM_INFINITY),
        ("hooks.before_start", "pkg.mod.fn, true", "hooks.before_start",
         HookConfig("before_start", "pkg.mod.fn", True)),
        ("stdout_stream.max_bytes", "1024", "stdout_stream.max_bytes", 1024),
        ("stdout_stream.class", "circus.stream.FileStream", "stdout_stream.class", "FileStream"),
        ("memory_max", "256M", "cgroup.memory_max", 256 * 1024 * 1024),
    ],
)
def test_known_keys_are_parsed(key: str, value: object, field: str, parsed: object) -> None:
    assert parse_watcher_option("w", key, value) == (field, parsed)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stop_signal", "NOPE"),
        ("send_hup", "maybe"),
        ("numprocesses", True),
        ("numprocesses", "1.5"),
        ("numprocesses", str(10**30)),
        ("cmd", ""),
        ("cmd", 3),
        ("env", "novalue"),
        ("env", {"A": 1}),
        ("rlimit_bogus", "1"),
        ("rlimit_nofile", "-5"),
        ("hooks.nope", "a.b"),
        ("hooks.before_start", "notdotted"),
        ("stdout_stream.class", "NoSuchStream"),
        ("stdout_stream.rotate_when", "sometimes"),
        ("cpu_max", "100000000000000000 100000"),  # test_cpu_max_unbounded_is_refused_by_set below
    ],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_watcher_option("w", key, value)
    assert [i.key for i in err.value.issues] == [key]
    assert err.value.issues[0].section == "watcher:w"


def test_keys_it_does_not_know_are_left_to_the_caller() -> None:
    for key in ("flapping.max_retry", "sockets", "name"):
        with pytest.raises(KeyError):
            parse_watcher_option("w", key, "x")


def test_cpu_max_unbounded_is_refused_by_set() -> None:
    # review cgroups #8: `set` shares the ini's parser, so a quota the kernel cannot take is errno 3
    # naming the key before anything is written to a cgroup
    top = (1 << 44) - 1
    assert parse_watcher_option("w", "cpu_max", f"{top} 100000") == ("cgroup.cpu_max", (top, 100_000))
    for value in (f"{top + 1} 100000", "1000000000000%", "50000 1000001"):
        with pytest.raises(RequestError) as err:
            cgroup_changes("w", {"cpu_max": value})
        assert err.value.errno == Errno.MESSAGE_ERROR and "cpu_max: " in str(err.value), err.value
