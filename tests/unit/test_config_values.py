"""Value parsers: accepted spellings and the 'expected ..., got ...' messages."""

import resource
import signal

import pytest

from circus_linux.config import values as v


@pytest.mark.parametrize("text", ["true", "TRUE", "Yes", "on", "1", " On "])
def test_bool_true_spellings(text):
    assert v.parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "No", "OFF", "0"])
def test_bool_false_spellings(text):
    assert v.parse_bool(text) is False


def test_bool_rejects_other_words():
    with pytest.raises(ValueError, match=r"expected a boolean.*got 'maybe'"):
        v.parse_bool("maybe")


def test_int_bounds_in_message():
    assert v.parse_int("12", 0) == 12
    with pytest.raises(ValueError, match=r"expected an integer >= 0, got 'abc'"):
        v.parse_int("abc", 0)
    with pytest.raises(ValueError, match=r"expected an integer >= 0, got '-1'"):
        v.parse_int("-1", 0)
    with pytest.raises(ValueError, match=r"between 1 and 10000"):
        v.parse_weight("0")


def test_float_rejects_nan_and_inf():
    assert v.parse_float("2.5", 0) == 2.5
    for bad in ("nan", "inf", "x"):
        with pytest.raises(ValueError, match="expected a number"):
            v.parse_float(bad)


@pytest.mark.parametrize("text", ["TERM", "SIGTERM", "sigterm", "term", "15"])
def test_signal_spellings(text):
    assert v.parse_signal(text) == signal.SIGTERM


def test_signal_realtime_and_unknown():
    assert v.parse_signal("SIGRTMIN+2") == signal.SIGRTMIN + 2
    with pytest.raises(ValueError, match="expected a signal name or number"):
        v.parse_signal("SIGFOO")
    with pytest.raises(ValueError, match="expected a signal number"):
        v.parse_signal("0")
    with pytest.raises(ValueError):
        v.parse_signal("Signals")


def test_octal_umask():
    assert v.parse_octal("022") == 0o22
    assert v.parse_octal("0o077") == 0o77
    assert v.parse_octal("2") == 2
    for bad in ("8", "0999", "", "1000", "abc"):
        with pytest.raises(ValueError, match="expected an octal umask"):
            v.parse_octal(bad)


def test_bytes_suffixes_and_max():
    assert v.parse_bytes_or_max("512") == 512
    assert v.parse_bytes_or_max("64M") == 64 << 20
    assert v.parse_bytes_or_max("1g") == 1 << 30
    assert v.parse_bytes_or_max("2KiB") == 2048
    assert v.parse_bytes_or_max("3T") == 3 << 40
    assert v.parse_bytes_or_max("MAX") == "max"
    with pytest.raises(ValueError, match="expected a size"):
        v.parse_bytes_or_max("12Q")


def test_cpu_max_forms():
    assert v.parse_cpu_max("50%") == (50_000, 100_000)
    assert v.parse_cpu_max("200%") == (200_000, 100_000)
    assert v.parse_cpu_max("12.5%") == (12_500, 100_000)
    assert v.parse_cpu_max("20000 100000") == (20_000, 100_000)
    assert v.parse_cpu_max("max") == (None, 100_000)
    assert v.parse_cpu_max("max 50000") == (None, 50_000)
    assert v.parse_cpu_max(f"{(1 << 44) - 1} 1000000") == ((1 << 44) - 1, 1_000_000)
    for bad in ("0%", "20000", "10 100000", "20000 999", "20000 2000000", "fast", f"{1 << 44} 100000"):
        with pytest.raises(ValueError, match="expected 'N%'"):
            v.parse_cpu_max(bad)


def test_pids_max():
    assert v.parse_int_or_max("100") == 100
    assert v.parse_int_or_max("max") == "max"
    with pytest.raises(ValueError, match="or 'max'"):
        v.parse_int_or_max("-3")


def test_rlimit_empty_means_unlimited():
    # Circus's config.rlimit_value: `rlimit_core =` is RLIM_INFINITY
    assert v.parse_rlimit("") == resource.RLIM_INFINITY
    assert v.parse_rlimit("  ") == resource.RLIM_INFINITY


def test_rlimits():
    assert v.rlimit_resource("nofile") == resource.RLIMIT_NOFILE
    assert v.parse_rlimit("unlimited") == resource.RLIM_INFINITY
    assert v.parse_rlimit("Infinity") == resource.RLIM_INFINITY
    assert v.parse_rlimit("1024") == 1024
    with pytest.raises(ValueError, match="expected rlimit_<name>"):
        v.rlimit_resource("bogus")
    with pytest.raises(ValueError, match="or 'unlimited'"):
        v.parse_rlimit("lots")


def test_uid_gid_resolution():
    assert v.parse_uid("root") == 0
    assert v.parse_uid("1234") == 1234
    assert v.parse_gid("root") == 0
    with pytest.raises(ValueError, match="unknown user 'no-such-user-xyz'"):
        v.parse_uid("no-such-user-xyz")
    with pytest.raises(ValueError, match="unknown group"):
        v.parse_gid("no-such-group-xyz")


def test_families_types_protos():
    import socket

    assert v.parse_family("AF_INET6") == socket.AF_INET6
    assert v.parse_family("unix") == socket.AF_UNIX
    assert v.parse_socktype("SOCK_DGRAM") == socket.SOCK_DGRAM
    assert v.parse_proto("tcp") == socket.IPPROTO_TCP
    assert v.parse_proto("17") == 17
    with pytest.raises(ValueError, match="expected a socket family"):
        v.parse_family("AF_PACKETS")


def test_split_list_commas_and_spaces():
    assert v.split_list(" a, b  c,,d ") == ("a", "b", "c", "d")
    assert v.split_list("") == ()
