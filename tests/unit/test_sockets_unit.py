"""Pure parts of kernel/sockets.py and kernel/notify.py: env parsing, notify wire format, names."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circus_linux.kernel.notify import format_notify, notify_address, parse_notify, watchdog_usec
from circus_linux.kernel.sockets import SocketSetupError, check_fdname, listen_fds, parse_listen_env

# -- LISTEN_FDS ----------------------------------------------------------------------------------------------


def test_listen_env_names_match_fds_in_order() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "ctl:web:web"}
    assert parse_listen_env(env, 42) == [(3, "ctl"), (4, "web"), (5, "web")]


def test_listen_env_for_another_pid_is_ignored() -> None:
    env = {"LISTEN_PID": "41", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert parse_listen_env(env, 42) == []


def test_listen_env_without_pid_is_ignored() -> None:
    assert parse_listen_env({"LISTEN_FDS": "2"}, 42) == []


@pytest.mark.parametrize("fds", ["", "x", "-1", "0"])
def test_listen_env_bad_or_zero_count(fds: str) -> None:
    assert parse_listen_env({"LISTEN_PID": "7", "LISTEN_FDS": fds}, 7) == []


def test_listen_env_missing_names_default_to_unknown() -> None:
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web::"}
    assert parse_listen_env(env, 7) == [(3, "web"), (4, "unknown"), (5, "unknown")]
    assert parse_listen_env({"LISTEN_PID": "7", "LISTEN_FDS": "1"}, 7) == [(3, "unknown")]


def test_listen_env_extra_names_are_ignored() -> None:
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b:c"}
    assert parse_listen_env(env, 7) == [(3, "a")]


# -- notify wire format --------------------------------------------------------------------------------------


def test_format_notify_fields_and_state() -> None:
    assert format_notify(None, {"READY": 1, "STATUS": "3 up"}) == b"READY=1\nSTATUS=3 up"
    assert format_notify("RELOADING=1\n", {"MONOTONIC_USEC": 5}) == b"RELOADING=1\nMONOTONIC_USEC=5"
    assert format_notify(None, {"READY": True}) == b"READY=1"


def test_format_notify_refuses_field_injection() -> None:
    with pytest.raises(ValueError, match="newline"):
        format_notify(None, {"STATUS": "ok\nREADY=1"})
    with pytest.raises(ValueError):
        format_notify(None, {"A=B": "x"})
    with pytest.raises(ValueError):
        format_notify(None, {})


def test_parse_notify_ignores_junk_lines_and_last_wins() -> None:
    assert parse_notify(b"READY=1\n\nnoequals\n=novalue\nSTATUS=a=b\nSTATUS=c\n") == {
        "READY": "1",
        "STATUS": "c",
    }
    assert parse_notify(b"STATUS=\xff") == {"STATUS": "\ufffd"}


# st.text() already excludes surrogates; plain map/filter keeps this valid on Debian's older hypothesis.
_key = st.text(max_size=20).map(lambda t: t.replace("=", "").replace("\n", "")).filter(bool)
_value = st.text(max_size=40).map(lambda t: t.replace("\n", ""))


@given(st.dictionaries(_key, _value, min_size=1, max_size=8))
def test_parse_notify_roundtrips_format_notify(fields: dict[str, str]) -> None:
    assert parse_notify(format_notify(None, fields)) == fields


@given(st.binary(max_size=512))
def test_parse_notify_never_raises_and_keys_have_no_separator(payload: bytes) -> None:
    parsed = parse_notify(payload)
    for key, value in parsed.items():
        assert key and "\n" not in key and "=" not in key
        assert "\n" not in value


def test_notify_address_forms() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@foo") == "\0foo"
    for bad in ("", "relative/path", "vsock:2:1234"):
        with pytest.raises(ValueError):
            notify_address(bad)


def test_watchdog_usec_rules() -> None:
    me = str(os.getpid())
    assert watchdog_usec({}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "30000000"}) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "0"}) is None


# -- names and errors ----------------------------------------------------------------------------------------


def test_fdname_rules() -> None:
    assert check_fdname("web-1.sock") == "web-1.sock"
    for bad in ("", "a:b", "has space", "x" * 256, "é"):
        with pytest.raises(ValueError):
            check_fdname(bad)


def test_socket_setup_error_names_section_and_os_error() -> None:
    err = SocketSetupError("web", "bind 127.0.0.1:80", OSError(98, "Address already in use"))
    assert str(err) == "[socket:web] cannot bind 127.0.0.1:80: [Errno 98] Address already in use"
    assert err.errno == 98 and err.name == "web"


def test_listen_fds_for_another_pid_returns_nothing_and_unsets() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "PATH": "/bin"}
    assert listen_fds(env) == {}
    assert env == {"PATH": "/bin"}
    kept = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
    assert listen_fds(kept, unset=False) == {}
    assert kept == {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
