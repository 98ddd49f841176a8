"""Property tests over the message space: any input gives a Request or a well-formed error, nothing else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from circus_linux.control import protocol
from circus_linux.control.commands import SPECS
from circus_linux.control.protocol import Errno, Kind, Prop, RequestError, parse_request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ERROR_KEYS = {"status", "reason", "tb", "time", "errno", "id"}


def outcome(frame: bytes) -> dict[str, Any]:
    """What the server would answer: a reply dict, checked to be well formed and encodable."""
    try:
        req = parse_request(frame, SPECS)
    except RequestError as exc:
        reply = protocol.error(exc.request_id, str(exc), exc.errno)
        assert set(reply) == ERROR_KEYS
        assert reply["errno"] in {int(e) for e in Errno} and reply["tb"] is None
        assert isinstance(reply["reason"], str) and reply["reason"]
    else:
        assert req.command in SPECS
        reply = protocol.ok(req.id, {})
    json.loads(protocol.encode(reply))
    return reply


@settings(max_examples=200)
@given(st.binary(max_size=256))
def test_random_bytes(frame: bytes) -> None:
    outcome(frame)


@settings(max_examples=200)
@given(json_values)
def test_random_json(value: Any) -> None:
    outcome(json.dumps(value).encode())


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(SPECS)),
    st.dictionaries(st.sampled_from(["name", "nb", "keys", "options", "signum", "pid", "waiting", "match",
                                     "cmd", "process", "x"]), json_values, max_size=5),
    st.one_of(st.none(), st.text(max_size=10), st.integers()),
)  # fmt: skip
def test_random_properties_for_known_commands(command: str, props: dict[str, Any], mid: Any) -> None:
    reply = outcome(json.dumps({"id": mid, "command": command, "properties": props}).encode())
    assert reply["id"] == mid


def wrong_value(kind: Kind) -> st.SearchStrategy[Any]:
    """Values that the kind must refuse."""
    not_str = (
        st.none()
        | st.integers()
        | st.lists(st.integers(), min_size=1)
        | st.dictionaries(st.text(), st.integers())
    )
    return {
        Kind.STR: not_str.filter(lambda v: v is not None),
        Kind.INT: st.text(alphabet="abcxyz.", min_size=1) | st.lists(st.integers()) | st.booleans(),
        Kind.NUMBER: st.text(alphabet="abcxyz", min_size=1) | st.lists(st.integers()) | st.booleans(),
        Kind.BOOL: st.text(alphabet="abcxyz", min_size=1)
        | st.integers(min_value=2)
        | st.lists(st.integers()),
        Kind.DICT: st.integers() | st.text() | st.lists(st.integers()),
        Kind.STR_LIST: st.integers()
        | st.lists(st.integers(), min_size=1)
        | st.dictionaries(st.text(), st.text()),
        Kind.SIGNAL: st.integers(min_value=200)
        | st.text(alphabet="xyzq", min_size=1)
        | st.lists(st.integers()),
        Kind.MATCH: st.text(alphabet="xyzq", min_size=1) | st.integers(),
    }[kind]


TYPED = [(cmd, p) for cmd, spec in sorted(SPECS.items()) for p in spec if p.kind is not Kind.ANY]


@settings(max_examples=400)
@given(st.sampled_from(TYPED), st.data())
def test_wrong_type_for_each_property_names_that_property(
    case: tuple[str, Prop], data: st.DataObject
) -> None:
    command, prop = case
    props = {p.name: {"name": "w", "cmd": "c", "keys": ["k"], "options": {}, "signum": 15}.get(p.name, 1)
             for p in SPECS[command] if p.required}  # fmt: skip
    props[prop.name] = data.draw(wrong_value(prop.kind))
    frame = json.dumps({"id": "z", "command": command, "properties": props}).encode()
    reply = outcome(frame)
    assert reply["status"] == "error" and reply["errno"] == Errno.MESSAGE_ERROR, (props, reply)
    assert reply["reason"].startswith(prop.name + ":"), reply
