"""The control wire format: parsing, validation, reply shapes, name matching; pure, no sockets."""

from __future__ import annotations

import json
import signal

import pytest

from circus_linux.control import protocol
from circus_linux.control.commands import COMMANDS, NAMES, SPECS
from circus_linux.control.commands.add import watcher_ini
from circus_linux.control.protocol import MAX_MESSAGE_SIZE, Errno, Kind, RequestError, parse_request

PROTOCOL_TABLE = {  # /work/shared/PROTOCOL.md: command -> required properties
    "add": {"name", "cmd"}, "rm": {"name"}, "start": set(), "stop": set(), "restart": set(),
    "reload": set(), "reloadconfig": set(), "quit": set(), "incr": {"name"}, "decr": {"name"},
    "numprocesses": set(), "numwatchers": set(), "list": set(), "listsockets": set(), "status": set(),
    "stats": set(), "dstats": set(), "options": {"name"}, "get": {"name", "keys"},
    "set": {"name", "options"}, "globaloptions": set(), "signal": {"name", "signum"}, "kill": {"name"},
}  # fmt: skip
# Our additions beyond Circus: command -> required properties
EXTENSIONS = {"upgrade": set(), "logs": {"name"}}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_every_command_of_the_protocol_table_is_registered_with_its_required_properties() -> None:
    assert set(NAMES) == set(PROTOCOL_TABLE) | set(EXTENSIONS)
    for name, required in {**PROTOCOL_TABLE, **EXTENSIONS}.items():
        assert {p.name for p in SPECS[name] if p.required} == required, name


def test_each_command_module_docstring_documents_every_property() -> None:
    for name, module in COMMANDS.items():
        doc = module.__doc__ or ""
        assert doc.startswith(f"{name}: "), name
        for prop in module.PROPERTIES:
            assert prop.name in doc, (name, prop.name)
        assert "Reply" in doc and "CLI" in doc, name


def test_parse_a_circus_request() -> None:
    req = parse_request(raw({"id": "abc", "command": "INCR", "properties": {"name": "web", "nb": 2}}), SPECS)
    assert (req.id, req.command, dict(req.properties), req.cast) == (
        "abc",
        "incr",
        {"name": "web", "nb": 2},
        False,
    )


def test_properties_may_be_absent_and_cast_is_read() -> None:
    req = parse_request(raw({"id": 7, "command": "list", "msg_type": "cast"}), SPECS)
    assert req.cast and req.properties == {} and req.id == 7


@pytest.mark.parametrize("frame", [b"", b"{", b"\xff\xfe", b"[1, 2]", b'"list"', b"null", b"1e999999"])
def test_garbage_is_errno_1(frame: bytes) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(frame, SPECS)
    assert info.value.errno == Errno.INVALID_JSON


@pytest.mark.parametrize("command", [None, 3, "nope", "", ["list"]])
def test_unknown_command_is_errno_2_and_keeps_the_id(command: object) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw({"id": "x1", "command": command}), SPECS)
    assert (info.value.errno, info.value.request_id, info.value.field) == (
        Errno.UNKNOWN_COMMAND,
        "x1",
        "command",
    )


def test_missing_required_property_is_errno_3_naming_the_field() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw({"id": "x", "command": "get", "properties": {"name": "web"}}), SPECS)
    assert (info.value.errno, info.value.field) == (Errno.MESSAGE_ERROR, "keys")
    assert "keys" in str(info.value)


@pytest.mark.parametrize(
    ("command", "props", "field"),
    [
        ("incr", {"name": 3}, "name"),
        ("incr", {"name": "web", "nb": "many"}, "nb"),
        ("incr", {"name": "web", "nb": True}, "nb"),
        ("start", {"waiting": "perhaps"}, "waiting"),
        ("start", {"match": "fuzzy"}, "match"),
        ("set", {"name": "web", "options": [1]}, "options"),
        ("get", {"name": "web", "keys": [1]}, "keys"),
        ("signal", {"name": "web", "signum": "SIGNOPE"}, "signum"),
        ("signal", {"name": "web", "signum": 0}, "signum"),
        ("kill", {"name": "web", "graceful_timeout": "soon"}, "graceful_timeout"),
        ("list", "not an object", "properties"),
    ],
)
def test_wrong_types_are_errno_3_naming_the_field(command: str, props: object, field: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw({"id": "i", "command": command, "properties": props}), SPECS)
    assert (info.value.errno, info.value.field, info.value.request_id) == (Errno.MESSAGE_ERROR, field, "i")


def test_circusctl_text_values_are_coerced_as_circus_does() -> None:
    req = parse_request(
        raw(
            {
                "command": "signal",
                "properties": {"name": "w", "signum": "hup", "pid": "42", "children": "true"},
            }
        ),
        SPECS,
    )
    assert req.properties == {"name": "w", "signum": signal.SIGHUP, "pid": 42, "children": True}
    assert protocol.to_signum("SIGterm") == signal.SIGTERM
    assert protocol.to_signum("9") == 9
    assert parse_request(
        raw({"command": "get", "properties": {"name": "w", "keys": "cmd"}}), SPECS
    ).properties["keys"] == ["cmd"]


def test_oversized_frame_is_errno_3_and_never_parsed() -> None:
    # Valid JSON, just too big: if it were parsed it would succeed.
    frame = raw({"id": "big", "command": "list", "properties": {"pad": "x" * MAX_MESSAGE_SIZE}})
    with pytest.raises(RequestError) as info:
        parse_request(frame, SPECS)
    assert info.value.errno == Errno.MESSAGE_ERROR and "too large" in str(info.value)
    assert info.value.request_id is None


def test_ok_reply_shape() -> None:
    assert protocol.ok("i", {"numprocesses": 3}, now=1.5) == {
        "status": "ok", "time": 1.5, "numprocesses": 3, "id": "i"}  # fmt: skip
    assert protocol.ok("i", [1, 2], now=1.0) == {"status": "ok", "time": 1.0, "results": [1, 2], "id": "i"}
    assert protocol.ok(None, None, now=2.0) == {"status": "ok", "time": 2.0, "id": None}


def test_status_result_overrides_ok_as_in_circus() -> None:
    assert protocol.ok("i", {"status": "active"}, now=1.0)["status"] == "active"


def test_error_reply_shape() -> None:
    assert protocol.error("i", "boom", Errno.COMMAND_ERROR, now=3.0) == {
        "status": "error", "reason": "boom", "tb": None, "time": 3.0, "errno": 5, "id": "i"}  # fmt: skip


def test_encode_handles_sets_and_enums_and_refuses_objects() -> None:
    assert json.loads(protocol.encode({"a": {1}, "b": Kind.INT})) == {"a": [1], "b": "integer"}
    with pytest.raises(TypeError):
        protocol.encode({"a": object()})
    with pytest.raises(ValueError):
        protocol.encode({"a": float("nan")})


def test_select_names_modes() -> None:
    names = ["web", "web-2", "worker", "db"]
    assert protocol.select_names(names, "web*") == ["web", "web-2"]
    assert protocol.select_names(names, "web*", "simple") == []
    assert protocol.select_names(names, "web", "simple") == ["web"]
    assert protocol.select_names(names, "w.+r", "regex") == ["worker"]
    assert protocol.select_names(names, "web", "regex") == ["web"]  # whole-name match, not a prefix
    with pytest.raises(RequestError) as info:
        protocol.select_names(names, "(", "regex")
    assert info.value.field == "name"


def test_add_builds_ini_text_and_refuses_injection() -> None:
    text = watcher_ini("web", "python -m http.server", ["--bind", "127.0.0.1"], {"numprocesses": 2,
                       "env": {"A": "1"}, "respawn": False})  # fmt: skip
    assert "[watcher:web]" in text and "numprocesses = 2" in text and "respawn = false" in text
    assert "args = --bind 127.0.0.1" in text and "[env:web]\nA = 1" in text
    for bad in ({"x": "1\n[watcher:evil]"}, {"a b": 1}, {"x": {"y": 1}}):
        with pytest.raises(RequestError):
            watcher_ini("web", "true", None, bad)
    with pytest.raises(RequestError):
        watcher_ini("bad]name", "true", None, {})
