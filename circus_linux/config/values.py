"""Value parsers for ini strings: each returns a typed value or raises ValueError saying what was expected.

Pure apart from uid/gid name resolution through pwd/grp; never reads files or the environment.
"""

from __future__ import annotations

import grp
import pwd
import re
import resource
import signal
import socket
from typing import Literal

MAX: Literal["max"] = "max"  # the cgroup v2 spelling of "no limit"; str(MAX) is what the kernel file takes

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _got(text: str) -> str:
    return f"got {text!r}"


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false/yes/no/on/off/1/0), {_got(text)}")


# What a kernel interface can hold: rlim_t/u64 counters are capped below 2**63 (RLIM_INFINITY is all ones),
# uid_t/gid_t are 32-bit with (uid_t)-1 reserved, pids never exceed PID_MAX_LIMIT (include/linux/threads.h).
INT64_MAX = (1 << 63) - 1
ID_MAX = (1 << 32) - 2
PID_MAX_LIMIT = 1 << 22
_ASCII_INT = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str, minimum: int | None = None, maximum: int | None = None) -> int:
    # int() alone would also take "1_000" and non-ASCII digits ("١٢"): not numbers a reader sees as such
    raw = text.strip()
    value = int(raw, 10) if _ASCII_INT.fullmatch(raw) else None
    too_low = value is not None and minimum is not None and value < minimum
    too_high = value is not None and maximum is not None and value > maximum
    if value is None or too_low or too_high:
        raise ValueError(f"expected an integer{_bounds(minimum, maximum)}, {_got(text)}")
    return value


def parse_count(text: str) -> int:
    """numprocesses: an integer >= 0 that can be satisfied (no machine runs more than PID_MAX_LIMIT pids)."""
    value = parse_int(text, 0)
    if value > PID_MAX_LIMIT:
        raise ValueError(f"expected an integer between 0 and {PID_MAX_LIMIT} (PID_MAX_LIMIT), {_got(text)}")
    return value


def parse_float(text: str, minimum: float | None = None) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = None
    # nan/inf parse as floats but are never a meaningful delay or timeout
    if value is None or value != value or value in (float("inf"), float("-inf")) or (
        minimum is not None and value < minimum
    ):
        raise ValueError(f"expected a number{_bounds(minimum, None)}, {_got(text)}")
    return value


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum} and {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def parse_octal(text: str) -> int:
    """A umask: always octal ('022', '0o022', '0022'); Circus parsed [socket] umask as decimal, we do not."""
    raw = text.strip().lower()
    digits = raw[2:] if raw.startswith("0o") else raw
    if not digits or not re.fullmatch(r"[0-7]+", digits) or int(digits, 8) > 0o777:
        raise ValueError(f"expected an octal umask between 000 and 777, {_got(text)}")
    return int(digits, 8)


def parse_signal(text: str) -> int:
    """A signal by number or name, with or without SIG, any case: '15', 'TERM', 'sigterm', 'SIGRTMIN+1'."""
    raw = text.strip()
    if raw.isdigit():
        num = int(raw)
        if 1 <= num <= signal.SIGRTMAX:
            return num
        raise ValueError(f"expected a signal number between 1 and {int(signal.SIGRTMAX)}, {_got(text)}")
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    rt = re.fullmatch(r"SIGRT(MIN|MAX)(?:([+-])(\d+))?", name)
    if rt:
        base = signal.SIGRTMIN if rt.group(1) == "MIN" else signal.SIGRTMAX
        off = int(rt.group(3) or 0) * (-1 if rt.group(2) == "-" else 1)
        num = int(base) + off
        if signal.SIGRTMIN <= num <= signal.SIGRTMAX:
            return num
    else:
        sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(sig, signal.Signals):
            return int(sig)
    raise ValueError(f"expected a signal name or number (e.g. SIGTERM, TERM, 15), {_got(text)}")


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes_or_max(text: str) -> int | Literal["max"]:
    """A cgroup memory limit: bytes with an optional K/M/G/T suffix (powers of 1024), or 'max'."""
    raw = text.strip().lower()
    if raw == MAX:
        return MAX
    m = re.fullmatch(r"(\d+)\s*([kmgt]?)(?:i?b)?", raw)
    if not m:
        raise ValueError(f"expected a size in bytes with optional K/M/G/T suffix, or 'max', {_got(text)}")
    value = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if value > INT64_MAX:
        raise ValueError(f"expected a size below 8 EiB, or 'max', {_got(text)}")
    return value


# cgroup v2 cpu.max and v1 cpu.cfs_quota_us/cfs_period_us: period in [1ms, 1s], quota in [1ms, 2^44-1 us]
# (kernel/sched/core.c tg_set_cfs_bandwidth: max_cfs_runtime = MAX_BW us, MAX_BW = 2^(64-BW_SHIFT) - 1,
# BW_SHIFT = 20); one more is EINVAL on both hierarchies (checked on a private cgroup, Linux 6.18).
CPU_PERIOD_DEFAULT_US = 100_000
_CPU_PERIOD_MIN_US = 1_000
_CPU_PERIOD_MAX_US = 1_000_000
_CPU_QUOTA_MIN_US = 1_000
_CPU_QUOTA_MAX_US = (1 << 44) - 1


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """cpu_max: 'N%' of one CPU, 'QUOTA PERIOD' (us), 'max [PERIOD]' -> (quota_us or None, period_us)."""
    raw = text.strip().lower()
    expected = "expected 'N%' (of one CPU), 'QUOTA PERIOD' in microseconds, or 'max'"
    pct = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", raw)
    if pct:
        exact = float(pct.group(1)) * CPU_PERIOD_DEFAULT_US / 100  # inf for a huge number: compared first
        if not exact <= _CPU_QUOTA_MAX_US or round(exact) < _CPU_QUOTA_MIN_US:
            top = _CPU_QUOTA_MAX_US * 100 // CPU_PERIOD_DEFAULT_US
            raise ValueError(f"{expected}; a percentage must be between 1% and {top}%, {_got(text)}")
        return round(exact), CPU_PERIOD_DEFAULT_US
    parts = raw.split()
    if len(parts) in (1, 2) and (parts[0] == MAX or parts[0].isdigit()) and (
        len(parts) == 1 or parts[1].isdigit()
    ):
        if len(parts) == 1 and parts[0] != MAX:
            raise ValueError(f"{expected}; a bare quota needs a period, {_got(text)}")
        period = int(parts[1]) if len(parts) == 2 else CPU_PERIOD_DEFAULT_US
        if not _CPU_PERIOD_MIN_US <= period <= _CPU_PERIOD_MAX_US:
            raise ValueError(f"{expected}; the period must be between 1000 and 1000000 us, {_got(text)}")
        if parts[0] == MAX:
            return None, period
        quota = int(parts[0])
        if not _CPU_QUOTA_MIN_US <= quota <= _CPU_QUOTA_MAX_US:
            raise ValueError(
                f"{expected}; the quota must be between 1000 and {_CPU_QUOTA_MAX_US} us, {_got(text)}"
            )
        return quota, period
    raise ValueError(f"{expected}, {_got(text)}")


def parse_weight(text: str) -> int:
    """cpu_weight / io_weight: the cgroup v2 range 1..10000."""
    return parse_int(text, 1, 10000)


def parse_int_or_max(text: str, maximum: int = PID_MAX_LIMIT) -> int | Literal["max"]:
    """pids_max: an integer in 0..PID_MAX_LIMIT (what the kernel's pids.max accepts) or 'max'."""
    if text.strip().lower() == MAX:
        return MAX
    try:
        return parse_int(text, 0, maximum)
    except ValueError:
        raise ValueError(f"expected an integer between 0 and {maximum} or 'max', {_got(text)}") from None


def rlimit_resource(name: str) -> int:
    """'nofile' -> resource.RLIMIT_NOFILE; ValueError for a name this kernel/Python does not know."""
    value = getattr(resource, "RLIMIT_" + name.upper(), None)
    if not isinstance(value, int) or not name.isidentifier():
        known = sorted(n[7:].lower() for n in dir(resource) if n.startswith("RLIMIT_"))
        raise ValueError(f"expected rlimit_<name> with name one of {', '.join(known)}, got {name!r}")
    return value


def parse_rlimit(text: str) -> int:
    """An rlimit value: an integer >= 0 or 'unlimited'/'infinity' (resource.RLIM_INFINITY); an empty value
    is unlimited too, as in Circus (config.rlimit_value)."""
    raw = text.strip().lower()
    if raw in ("", "unlimited", "infinity", "inf", "-1"):
        return resource.RLIM_INFINITY
    try:
        return parse_int(raw, 0, INT64_MAX)
    except ValueError:
        raise ValueError(f"expected an integer between 0 and 2**63-1 or 'unlimited', {_got(text)}") from None


def parse_uid(text: str) -> int:
    """A user by number or name; names are resolved through pwd (the only lookup config does)."""
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        return _id_number(raw, "uid")
    try:
        return pwd.getpwnam(raw).pw_uid
    except KeyError:
        raise ValueError(f"expected a user name or uid, got unknown user {raw!r}") from None


def _id_number(raw: str, what: str) -> int:
    value = int(raw)
    if value > ID_MAX:
        raise ValueError(f"expected a {what} between 0 and {ID_MAX}, got {raw!r}")
    return value


def parse_gid(text: str) -> int:
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        return _id_number(raw, "gid")
    try:
        return grp.getgrnam(raw).gr_gid
    except KeyError:
        raise ValueError(f"expected a group name or gid, got unknown group {raw!r}") from None


_FAMILIES = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6, "AF_UNIX": socket.AF_UNIX}
_TYPES = {"SOCK_STREAM": socket.SOCK_STREAM, "SOCK_DGRAM": socket.SOCK_DGRAM,
          "SOCK_SEQPACKET": socket.SOCK_SEQPACKET}
# no getprotobyname(): it reads /etc/protocols, and these are the only protocols a socket section can use
_PROTOS = {"ip": 0, "tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": socket.IPPROTO_SCTP}


def parse_family(text: str) -> int:
    name = text.strip().upper()
    name = name if name.startswith("AF_") else "AF_" + name
    if name not in _FAMILIES:
        raise ValueError(f"expected a socket family (AF_INET, AF_INET6, AF_UNIX), {_got(text)}")
    return int(_FAMILIES[name])


def parse_socktype(text: str) -> int:
    name = text.strip().upper()
    name = name if name.startswith("SOCK_") else "SOCK_" + name
    if name not in _TYPES:
        raise ValueError(f"expected a socket type (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET), {_got(text)}")
    return int(_TYPES[name])


def parse_proto(text: str) -> int:
    raw = text.strip().lower()
    if raw.isdigit():
        return int(raw)
    if raw not in _PROTOS:
        raise ValueError(f"expected a protocol number or one of {', '.join(_PROTOS)}, {_got(text)}")
    return _PROTOS[raw]


_LOGLEVELS = ("debug", "info", "warning", "error", "critical")


def parse_loglevel(text: str) -> str:
    raw = text.strip().lower()
    if raw == "warn":
        return "warning"
    if raw not in _LOGLEVELS:
        raise ValueError(f"expected a log level ({', '.join(_LOGLEVELS)}), {_got(text)}")
    return raw


# The transports libzmq can bind (zmq_bind(3)); which of them count as local is sections.py's business.
_ZMQ_TRANSPORTS = ("tcp", "ipc", "inproc", "tipc", "vmci", "udp", "pgm", "epgm", "ws", "wss", "norm")


def parse_endpoint(text: str) -> str:
    """A ZeroMQ endpoint circusd binds: 'tcp://HOST:PORT' (PORT 1-65535 or '*'; 'SRC;HOST:PORT' too),
    'ipc:///path' or 'ipc://@name', 'inproc://name', or another zmq_bind(3) transport with an address.

    Checked here so that a typo is a config error naming the key, not a bind failure found at run time.
    """
    raw = text.strip()
    scheme, sep, address = raw.partition("://")
    if not sep or scheme not in _ZMQ_TRANSPORTS or not address:
        example = "tcp://127.0.0.1:5555 or ipc:///run/circus/circus.sock"
        raise ValueError(f"expected a ZeroMQ endpoint like {example}, {_got(text)}")
    if scheme == "tcp":
        host, colon, port = address.rpartition(";")[2].rpartition(":")
        if not colon or not host or not (port == "*" or (port.isdigit() and 1 <= int(port) <= 65535)):
            raise ValueError(f"expected tcp://HOST:PORT with a port between 1 and 65535 (or *), {_got(text)}")
    return raw


_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def parse_dotted(text: str) -> str:
    """A dotted Python name 'pkg.mod.attr' (at least one dot); not imported here."""
    raw = text.strip()
    if not _DOTTED.fullmatch(raw):
        raise ValueError(f"expected a dotted Python name like 'package.module.name', {_got(text)}")
    return raw


def split_list(text: str) -> tuple[str, ...]:
    """'a, b c' -> ('a', 'b', 'c'): Circus lists are separated by commas and/or whitespace."""
    return tuple(p for p in re.split(r"[\s,]+", text.strip()) if p)
