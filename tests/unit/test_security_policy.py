"""Pure parts of the security layer: exposure rule, config keys, command policy, ZAP answers, hosts files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from circus_linux import config
from circus_linux.config.sections import is_exposed_endpoint
from circus_linux.control.auth import CommandPolicy, KeyRing, ZapHandler
from circus_linux.control.keys import generate
from circus_linux.control.multi import (
    Host,
    HostsFileError,
    hosts_from_endpoints,
    parse_hosts,
    reachable_pubsub,
)
from circus_linux.errors import ConfigError


@pytest.mark.parametrize(
    ("endpoint", "exposed"),
    [
        ("tcp://127.0.0.1:5555", False),
        ("tcp://127.3.4.5:1", False),
        ("tcp://localhost:5555", False),
        ("tcp://[::1]:5555", False),
        ("ipc:///run/circus/circus.sock", False),
        ("tcp://0.0.0.0:5555", True),
        ("tcp://*:5555", True),
        ("tcp://10.77.0.1:5555", True),
        ("tcp://eth0:5555", True),
        ("inproc://circus", False),
        ("ipc://@circus", True),
        ("tipc://{15560,0,0}", True),
        ("vmci://1:5555", True),
        ("udp://127.0.0.1:5555", True),
        ("pgm://eth0;239.192.1.1:5555", True),
        ("epgm://eth0;239.192.1.1:5555", True),
        ("ws://127.0.0.1:5555", True),
        ("wss://0.0.0.0:5555", True),
        ("TCP://127.0.0.1:5555", True),
    ],
)
def test_exposed_endpoints(endpoint: str, exposed: bool) -> None:
    assert is_exposed_endpoint(endpoint) is exposed


def test_exposed_endpoint_without_curve_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        config.loads("[circus]\npubsub_endpoint = tcp://0.0.0.0:5556\n", "/etc/c.ini")
    (issue,) = info.value.issues
    assert (issue.section, issue.key, issue.line) == ("circus", "pubsub_endpoint", 2)


def test_insecure_true_turns_the_error_into_a_warning_and_curve_keys_parse() -> None:
    cfg = config.loads("[circus]\nendpoint = tcp://0.0.0.0:5555\ninsecure = yes\n", "/c.ini")
    assert cfg.circus.insecure and any("WITHOUT authentication" in w for w in cfg.warnings)
    cfg = config.loads(
        "[circus]\nendpoint = tcp://0.0.0.0:5555\ncurve_secret_key = /k/s.key_secret\n"
        "curve_authorized_keys = /k/auth\nallow_spawn_changes = off\ndisabled_commands = quit, rm\n",
        "/c.ini",
    )
    c = cfg.circus
    assert (c.curve_secret_key, c.curve_authorized_keys) == ("/k/s.key_secret", "/k/auth")
    assert (c.allow_spawn_changes, c.disabled_commands) == (False, ("quit", "rm"))
    with pytest.raises(ConfigError, match="curve_authorized_keys"):
        config.loads("[circus]\ncurve_secret_key = /k/s.key_secret\n", "/c.ini")


def test_command_policy() -> None:
    open_policy = CommandPolicy()
    assert open_policy.refuse("add", {"name": "x", "cmd": "y"}) is None
    strict = CommandPolicy(frozenset({"quit"}), allow_spawn_changes=False)
    assert "disabled_commands" in (strict.refuse("quit", {}) or "")
    assert "allow_spawn_changes" in (strict.refuse("add", {"name": "x", "cmd": "y"}) or "")
    assert strict.refuse("set", {"name": "w", "options": {"numprocesses": 3, "graceful_timeout": 1}}) is None
    reason = strict.refuse("set", {"name": "w", "options": {"numprocesses": 3, "env": {}, "cmd": "sh"}})
    assert reason is not None and "cmd, env" in reason
    assert strict.refuse("list", {}) is None


def test_zap_answers_only_known_curve_keys(tmp_path: Path) -> None:
    pub, _sec = generate(tmp_path / "c", "alice")
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "alice.key").write_text(pub.read_text())
    ring = KeyRing(str(tmp_path / "auth"))
    handler = ZapHandler(zmq.Context.instance(), ring)
    alice = z85.decode(zmq.auth.load_certificate(str(pub))[0])
    stranger = bytes(32)

    def ask(mechanism: bytes, domain: bytes, *creds: bytes) -> list[bytes]:
        return handler.answer([b"1.0", b"7", domain, b"10.0.0.9", b"", mechanism, *creds])

    ok = ask(b"CURVE", b"circus", alice)
    assert ok[:3] == [b"1.0", b"7", b"200"] and ok[4] == zmq.auth.load_certificate(str(pub))[0]
    assert ask(b"CURVE", b"circus", stranger)[2] == b"400"
    assert ask(b"NULL", b"circus")[2] == b"400"
    assert ask(b"CURVE", b"other", alice)[2] == b"400"
    assert handler.answer([b"1.0"])[2] == b"500"
    (tmp_path / "auth" / "alice.key").unlink()
    assert ring.reload() == ([], ["alice.key"])
    assert ask(b"CURVE", b"circus", alice)[2] == b"400"


def test_hosts_file(tmp_path: Path) -> None:
    server_pub, _ = generate(tmp_path, "server")
    _, client_sec = generate(tmp_path, "me")
    hosts = parse_hosts(
        f"# fleet\nweb1 tcp://10.0.0.1:5555 {server_pub}\nlocal ipc:///run/circus/circus.sock  # here\n",
        str(client_sec),
    )
    assert [(h.name, h.endpoint, h.keys is not None) for h in hosts] == [
        ("web1", "tcp://10.0.0.1:5555", True),
        ("local", "ipc:///run/circus/circus.sock", False),
    ]
    with pytest.raises(HostsFileError, match="hosts:1"):
        parse_hosts("web1\n")
    with pytest.raises(HostsFileError, match="client-key"):
        parse_hosts(f"web1 tcp://10.0.0.1:5555 {server_pub}\n")
    with pytest.raises(HostsFileError, match="twice"):
        parse_hosts("a tcp://h:1\na tcp://h:2\n")
    assert [h.name for h in hosts_from_endpoints(["tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"])] == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    host = Host("web1", "tcp://10.0.0.1:5555")
    assert reachable_pubsub(host, "tcp://0.0.0.0:5556") == "tcp://10.0.0.1:5556"
    assert reachable_pubsub(host, "tcp://10.0.0.1:5556") == "tcp://10.0.0.1:5556"


def test_httpd_exposed_non_loopback_httpd_host_is_a_config_error_naming_the_key() -> None:
    """Regression (security review #1): a non-loopback httpd_host needs `insecure = true`."""
    for host in ("0.0.0.0", "::", "10.77.0.1", "box.example"):
        with pytest.raises(ConfigError) as info:
            config.loads(f"[circus]\nhttpd = true\nhttpd_host = {host}\n", "/etc/c.ini")
        (issue,) = info.value.issues
        assert (issue.file, issue.section, issue.key, issue.line) == ("/etc/c.ini", "circus", "httpd_host", 3)
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "::1"):
        config.loads(f"[circus]\nhttpd = true\nhttpd_host = {host}\n", "/c.ini")
    config.loads("[circus]\nhttpd = false\nhttpd_host = 0.0.0.0\n", "/c.ini")  # no dashboard, no rule
    cfg = config.loads("[circus]\nhttpd = true\nhttpd_host = 0.0.0.0\ninsecure = true\n", "/c.ini")
    assert any("httpd_host" in w and "insecure = true" in w for w in cfg.warnings)


def test_httpd_exposed_host_guard_off_loopback_takes_own_names_and_addresses_only() -> None:
    from circus_linux.web.app import Dashboard
    from circus_linux.web.http import Request

    async def dispatch(body: bytes) -> Any:
        raise AssertionError("never dispatched")

    def ok(d: Dashboard, host: str) -> bool:
        return d._host_ok(Request("GET", "/", {}, {"host": host}))

    off = Dashboard(None, dispatch, {"box.example"}, lambda t: False, ip_literals=True)  # type: ignore[arg-type]
    assert ok(off, "box.example:8080") and ok(off, "10.77.0.1:8080") and ok(off, "[fe80::1]:8080")
    assert not ok(off, "evil.example:8080") and not ok(off, "")
    on = Dashboard(None, dispatch, {"localhost", "127.0.0.1"}, lambda t: False)  # type: ignore[arg-type]
    assert ok(on, "127.0.0.1:1") and not ok(on, "10.77.0.1:8080")


def test_abstract_ipc_endpoint_needs_insecure_even_with_curve() -> None:
    """Regression (security review #5): `ipc://@name` has no file, so endpoint_mode/owner/group are
    meaningless and every local process could connect; it was accepted silently."""
    with pytest.raises(ConfigError) as info:
        config.loads("[circus]\nendpoint = ipc://@circus-x\nendpoint_mode = 0600\n", "/etc/c.ini")
    (issue,) = info.value.issues
    assert (issue.file, issue.section, issue.key, issue.line) == ("/etc/c.ini", "circus", "endpoint", 2)
    assert "abstract" in issue.message
    with pytest.raises(ConfigError):
        config.loads(
            "[circus]\nendpoint = ipc://@circus-x\ncurve_secret_key = /k/s.key_secret\n"
            "curve_authorized_keys = /k/auth\n",
            "/c.ini",
        )
    cfg = config.loads("[circus]\nstats_endpoint = ipc://@circus-x\ninsecure = true\n", "/c.ini")
    assert any("abstract" in w for w in cfg.warnings)


@pytest.mark.parametrize("endpoint", ["tipc://{15560,0,0}", "vmci://1:5555", "udp://127.0.0.1:5555",
                                      "epgm://eth0;239.192.1.1:5555", "ws://127.0.0.1:5555"])  # fmt: skip
def test_tipc_not_exposed_other_transports_need_curve_or_insecure(endpoint: str) -> None:
    """Regression (security review #8): only tcp:// was ever checked; tipc:// (a cluster transport) and
    the other libzmq transports passed as local."""
    with pytest.raises(ConfigError) as info:
        config.loads(f"[circus]\nendpoint = {endpoint}\n", "/etc/c.ini")
    (issue,) = info.value.issues
    assert (issue.section, issue.key) == ("circus", "endpoint")
    config.loads(f"[circus]\nendpoint = {endpoint}\ninsecure = true\n", "/c.ini")
    config.loads(
        f"[circus]\nendpoint = {endpoint}\ncurve_secret_key = /k/s.key_secret\n"
        "curve_authorized_keys = /k/a\n",
        "/c.ini",
    )
