"""The Circus 0.19 control wire format as pure functions: parse, validate, reply; no sockets, no runtime."""

from __future__ import annotations

import enum
import fnmatch
import json
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from circus_linux.errors import MessageError

# A control message is a small JSON object; anything larger is either a bug or an attack. Bigger frames
# get errno 3 and are never handed to the JSON parser.
MAX_MESSAGE_SIZE = 1 << 20


class Errno(enum.IntEnum):
    """Error numbers of Circus replies (circus/commands/errors.py); clients switch on them."""

    NOT_SPECIFIED = 0
    INVALID_JSON = 1
    UNKNOWN_COMMAND = 2
    MESSAGE_ERROR = 3
    OS_ERROR = 4
    COMMAND_ERROR = 5
    BAD_MSG_DATA_ERROR = 6


class RequestError(MessageError):
    """A request cannot be executed; carries the errno for the reply and what is known of the request."""

    def __init__(
        self,
        message: str,
        errno: Errno = Errno.MESSAGE_ERROR,
        field: str | None = None,
        request_id: Any = None,
        cast: bool = False,
    ) -> None:
        super().__init__(message, field)
        self.errno = errno
        self.request_id = request_id
        self.cast = cast


class Kind(enum.Enum):
    """Wire type of one property. Coercions follow what Circus's own circusctl actually sends."""

    STR = "string"
    INT = "integer"  # int, or a decimal string (Circus's signal command sends pid as typed text)
    NUMBER = "number"
    BOOL = "boolean"
    DICT = "object"
    STR_LIST = "list of strings"
    SIGNAL = "signal"  # 15, "15", "term", "SIGTERM", any case
    MATCH = "match mode"  # simple | glob | regex
    ANY = "any"


@dataclass(frozen=True)
class Prop:
    """One property a command accepts."""

    name: str
    kind: Kind
    required: bool = False


MATCH_MODES = ("simple", "glob", "regex")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Request:
    """A parsed request: `properties` are validated and coerced when the command is known."""

    id: Any
    command: str
    properties: Mapping[str, Any]
    msg_type: str = "call"

    @property
    def cast(self) -> bool:
        return self.msg_type == "cast"

    @property
    def waiting(self) -> bool:
        return bool(self.properties.get("waiting", False))


def to_signum(value: Any) -> int:
    """A signal from a number or a name with or without SIG, any case; ValueError when unknown."""
    if isinstance(value, bool):
        raise ValueError(f"not a signal: {value!r}")
    if isinstance(value, int):
        signum = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            signum = int(text)
        else:
            name = text.upper()
            if not name.startswith("SIG"):
                name = "SIG" + name
            try:
                signum = int(signal.Signals[name])
            except KeyError:
                raise ValueError(f"unknown signal: {value!r}") from None
    else:
        raise ValueError(f"not a signal: {value!r}")
    if not 1 <= signum < signal.NSIG:
        raise ValueError(f"signal out of range: {value!r}")
    return signum


def _coerce(prop: Prop, value: Any) -> Any:
    """The value converted to the property's kind; MessageError (naming the field) when it cannot be."""
    kind = prop.kind
    bad = RequestError(f"expected {kind.value}, got {type(value).__name__}", Errno.MESSAGE_ERROR, prop.name)
    if kind is Kind.ANY:
        return value
    if kind is Kind.STR:
        if not isinstance(value, str):
            raise bad
        return value
    if kind is Kind.INT:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
            return int(value)
        raise bad
    if kind is Kind.NUMBER:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad
    if kind is Kind.DICT:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return value
    if kind is Kind.STR_LIST:
        if isinstance(value, str):  # a lone key is a list of one, as Circus's loose clients send it
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        return value
    if kind is Kind.SIGNAL:
        try:
            return to_signum(value)
        except ValueError as exc:
            raise RequestError(str(exc), Errno.MESSAGE_ERROR, prop.name) from None
    if kind is Kind.MATCH:
        if value not in MATCH_MODES:
            raise RequestError(f"must be one of {', '.join(MATCH_MODES)}", Errno.MESSAGE_ERROR, prop.name)
        return value
    raise AssertionError(kind)  # pragma: no cover - every Kind is handled above


def validate_properties(props: Any, spec: Sequence[Prop]) -> dict[str, Any]:
    """Check and coerce `props` against `spec`: required keys present, every known key of the right type.

    Unknown keys are kept untouched: newer clients may send more, and Circus ignores what it does not use.
    """
    if not isinstance(props, dict):
        raise RequestError("properties must be an object", Errno.MESSAGE_ERROR, "properties")
    out = dict(props)
    for prop in spec:
        if prop.name not in props or props[prop.name] is None:
            if prop.required:
                raise RequestError("missing required property", Errno.MESSAGE_ERROR, prop.name)
            out.pop(prop.name, None)
            continue
        out[prop.name] = _coerce(prop, props[prop.name])
    return out


def parse_request(raw: bytes, specs: Mapping[str, Sequence[Prop]]) -> Request:
    """Parse one request frame; `specs` maps each known command to its properties.

    Raises RequestError with the errno Circus uses: 3 for an oversized frame (never parsed), 1 when the
    frame is not a JSON object, 2 for an unknown command, 3 for bad properties. The error keeps the id
    and the cast flag when they could be read, so the reply can still be routed (or skipped).
    """
    if len(raw) > MAX_MESSAGE_SIZE:
        raise RequestError(f"message too large ({len(raw)} > {MAX_MESSAGE_SIZE} bytes)", Errno.MESSAGE_ERROR)
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RequestError("json invalid", Errno.INVALID_JSON) from None
    if not isinstance(msg, dict):
        raise RequestError("json invalid: not an object", Errno.INVALID_JSON)
    mid = msg.get("id")
    if mid is not None and not isinstance(mid, str | int | float):
        mid = None  # echoing back a structure we did not build is pointless; the id is opaque text
    cast = msg.get("msg_type") == "cast"
    command = msg.get("command")
    if not isinstance(command, str):
        raise RequestError(f"unknown command: {command!r}", Errno.UNKNOWN_COMMAND, "command", mid, cast)
    name = command.lower()
    if name not in specs:
        raise RequestError(f"unknown command: {command!r}", Errno.UNKNOWN_COMMAND, "command", mid, cast)
    try:
        props = validate_properties(msg.get("properties", {}) or {}, specs[name])
    except RequestError as exc:
        exc.request_id, exc.cast = mid, cast
        raise
    return Request(mid, name, props, "cast" if cast else "call")


def ok(
    request_id: Any, result: Mapping[str, Any] | list[Any] | None = None, now: float | None = None
) -> dict:
    """An ok reply: `{"status": "ok", "time", "id"}` plus the result keys (a list goes in `results`)."""
    reply: dict[str, Any] = {"status": "ok", "time": time.time() if now is None else now}
    if isinstance(result, list):
        reply["results"] = result
    elif result:
        reply.update(result)
    # No re-assertion of "ok": Circus lets a result key override it, and `status NAME` relies on that
    # (the reply is {"status": "active", ...}; Circus's circusctl prints reply["status"]).
    reply["id"] = request_id
    return reply


def error(
    request_id: Any, reason: str, errno: int = Errno.NOT_SPECIFIED, now: float | None = None
) -> dict[str, Any]:
    """An error reply exactly as Circus shapes it (`tb` stays null: tracebacks go to our log, not clients)."""
    return {
        "status": "error",
        "reason": reason,
        "tb": None,
        "time": time.time() if now is None else now,
        "errno": int(errno),
        "id": request_id,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(reply: Mapping[str, Any]) -> bytes:
    """The reply as a frame; TypeError/ValueError when a result holds something JSON cannot carry."""
    return json.dumps(reply, default=_json_default, allow_nan=False).encode()


def make_request(command: str, properties: Mapping[str, Any], request_id: str, cast: bool = False) -> dict:
    """A request object as Circus clients build it."""
    msg: dict[str, Any] = {"id": request_id, "command": command, "properties": dict(properties)}
    if cast:
        msg["msg_type"] = "cast"
    return msg


def select_names(names: Iterable[str], pattern: str, mode: str = "glob") -> list[str]:
    """Names selected by `pattern` under `match` mode, in the order given.

    simple: equality; glob (Circus's default): fnmatch, case-sensitive; regex: the whole name must match.
    An invalid regex is a MessageError on the `name` field.
    """
    match: Callable[[str], bool]
    if mode == "simple":
        match = pattern.__eq__
    elif mode == "glob":
        match = lambda name: fnmatch.fnmatchcase(name, pattern)  # noqa: E731
    elif mode == "regex":
        try:
            rx = re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise RequestError(f"invalid regex: {exc}", Errno.MESSAGE_ERROR, "name") from None
        match = lambda name: rx.fullmatch(name) is not None  # noqa: E731
    else:
        raise RequestError(f"must be one of {', '.join(MATCH_MODES)}", Errno.MESSAGE_ERROR, "match")
    return [name for name in names if match(name)]
