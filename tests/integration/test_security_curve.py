"""CURVE on a real circusd: right key works, no key / wrong key / revoked key get nothing, fuzz never
reaches the command layer; exposure rules, socket directory checks, command policy, privilege drop."""

from __future__ import annotations

import contextlib
import errno
import grp
import io
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import circusd_argv, wait_for
from zmq.utils.monitor import recv_monitor_message

from circus_linux.cli import circusctl
from circus_linux.control.client import CallError, Client
from circus_linux.control.keys import ClientKeys, generate

SLEEPER = "[watcher:w]\ncmd = sleep 600\nnumprocesses = 1\n"


class Keys:
    """A server pair, clients alice (authorized), bob (authorized), mallory (never authorized)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.authorized = root / "authorized"
        self.authorized.mkdir(parents=True)
        self.server_public, self.server_secret = generate(root / "server", "server")
        self.pairs = {n: generate(root / "clients", n) for n in ("alice", "bob", "mallory")}
        for name in ("alice", "bob"):
            shutil.copy(self.pairs[name][0], self.authorized / f"{name}.key")

    def client(self, name: str) -> ClientKeys:
        return ClientKeys.from_files(str(self.server_public), str(self.pairs[name][1]))

    def circus_options(self) -> dict[str, str]:
        return {"curve_secret_key": str(self.server_secret), "curve_authorized_keys": str(self.authorized)}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


def _answers(
    endpoint: str, keys: ClientKeys | None, timeout: float = 0.5, command: str = "numwatchers"
) -> Any:
    with Client(endpoint, timeout, keys=keys) as c:
        try:
            return c.call(command)
        except CallError:
            return None


def start_curve(circusd: Any, keys: Keys, sections: str = SLEEPER, **opts: Any) -> Any:
    daemon = circusd(sections, wait=False, **keys.circus_options(), **opts)
    alice = keys.client("alice")

    def up() -> bool:
        if daemon.proc.poll() is not None:
            pytest.fail(f"circusd exited {daemon.proc.returncode}:\n{daemon.log_text()}")
        return _answers(daemon.endpoint, alice) is not None

    wait_for(up, 30, what="circusd answering alice over CURVE")
    return daemon


def _sub(ctx: zmq.Context[Any], endpoint: str, keys: ClientKeys | None) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply(sock)
    sock.setsockopt(zmq.SUBSCRIBE, b"watcher.")
    sock.connect(endpoint)
    return sock


def test_right_key_controls_and_receives_events_wrong_or_no_key_gets_nothing(
    circusd: Any, keys: Keys
) -> None:
    daemon = start_curve(circusd, keys)
    alice, mallory = keys.client("alice"), keys.client("mallory")
    assert _answers(daemon.endpoint, alice, command="list")["watchers"] == ["w"]
    # no key at all, and a well-formed key the server does not know: no reply, the client times out
    assert _answers(daemon.endpoint, None) is None
    assert _answers(daemon.endpoint, mallory) is None

    ctx: zmq.Context[Any] = zmq.Context()
    try:
        good = _sub(ctx, daemon.pubsub_endpoint, alice)
        bad = _sub(ctx, daemon.pubsub_endpoint, mallory)
        anon = _sub(ctx, daemon.pubsub_endpoint, None)
        with Client(daemon.endpoint, 5, keys=alice) as c:
            # PUB/SUB joins late: change the watcher until alice's subscription sees an event
            deadline = time.monotonic() + 10
            got = None
            while got is None and time.monotonic() < deadline:
                c.call("incr", name="w", waiting=True)
                if good.poll(200):
                    got = good.recv_multipart()
            assert got is not None and got[0].startswith(b"watcher.w."), "alice received no event"
            c.call("decr", name="w", waiting=True)
            assert good.poll(2000)
        # by now mallory and the anonymous subscriber have had every chance to join; they got nothing
        assert not bad.poll(300)
        assert not anon.poll(0)
    finally:
        ctx.destroy(linger=0)


def test_revoked_key_stops_working_on_reloadconfig_and_sighup(circusd: Any, keys: Keys) -> None:
    daemon = start_curve(circusd, keys)
    alice, bob = keys.client("alice"), keys.client("bob")
    with Client(daemon.endpoint, 0.5, keys=alice) as open_conn:
        assert open_conn.call("numwatchers")["numwatchers"] == 1
        (keys.authorized / "alice.key").unlink()
        assert _answers(daemon.endpoint, bob, command="reloadconfig") is not None
        # new connections with the revoked key get nothing...
        wait_for(lambda: _answers(daemon.endpoint, alice, timeout=0.3) is None, 10, what="alice refused")
        # ...and so does the connection opened before the revocation (frames re-checked per key)
        with pytest.raises(CallError, match="Timed out"):
            open_conn.call("numwatchers")
    assert _answers(daemon.endpoint, bob) is not None
    # SIGHUP re-reads the directory too: put alice back, revoke bob
    shutil.copy(keys.pairs["alice"][0], keys.authorized / "alice.key")
    (keys.authorized / "bob.key").unlink()
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _answers(daemon.endpoint, alice, timeout=0.3) is not None, 10, what="alice back")
    assert _answers(daemon.endpoint, bob, timeout=0.3) is None
    dstats = _answers(daemon.endpoint, alice, command="dstats")["info"]
    assert dstats["revoked_dropped"] >= 1


def test_revocation_delayed_removed_key_is_refused_before_the_reload_has_finished(
    circusd: Any, keys: Keys
) -> None:
    """Regression (security review #4a): the keys were re-read only at the end of reload_config, after
    a graceful reload that can take graceful_timeout: the removed key kept working meanwhile."""
    stubborn = (
        "[watcher:stubborn]\ncmd = sh -c 'trap \"\" TERM; while :; do sleep 1; done'\ngraceful_timeout = 8\n"
    )
    daemon = start_curve(circusd, keys, SLEEPER + stubborn)
    alice, bob = keys.client("alice"), keys.client("bob")
    wait_for(lambda: len(_answers(daemon.endpoint, bob, command="list").get("watchers", [])) == 2, 10)
    (keys.authorized / "alice.key").unlink()
    with daemon.path.open("a") as f:
        f.write("\n[env:stubborn]\nVERSION = 2\n")  # the reload now waits out the stubborn worker
    t0 = time.monotonic()
    assert _answers(daemon.endpoint, bob, command="reloadconfig")["status"] == "ok"
    wait_for(lambda: _answers(daemon.endpoint, alice, timeout=0.3) is None, 5, what="alice refused")
    assert time.monotonic() - t0 < 8, "refused before the graceful reload could have ended"
    assert _answers(daemon.endpoint, bob) is not None


def test_revocation_failed_reload_still_revokes_the_removed_key(circusd: Any, keys: Keys) -> None:
    """Regression (security review #4b): a reload refused for a mistake in the file (SIGHUP or
    reloadconfig) left a removed key authorized until some later reload succeeded."""
    daemon = start_curve(circusd, keys)
    alice, bob = keys.client("alice"), keys.client("bob")
    (keys.authorized / "alice.key").unlink()
    with daemon.path.open("a") as f:
        f.write("numprocesses = two\n")  # an unrelated typo in the same edit
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _answers(daemon.endpoint, alice, timeout=0.3) is None, 10, what="alice refused")
    wait_for(lambda: "reload refused" in daemon.log_text(), 10, what="the refused reload logged")
    # the same through reloadconfig: the reply is the file's error, bob's key is refused all the same
    # (his own request was let in: it is the one that re-reads the keys) and alice's is back
    shutil.copy(keys.pairs["alice"][0], keys.authorized / "alice.key")
    (keys.authorized / "bob.key").unlink()
    with Client(daemon.endpoint, 10, keys=bob) as c, pytest.raises(CallError, match="numprocesses"):
        c.call("reloadconfig", waiting=True)
    assert _answers(daemon.endpoint, bob, timeout=0.3) is None
    assert _answers(daemon.endpoint, alice) is not None


def test_keydir_perms_unsafe_key_directory_or_secret_refuses_to_start(tmp_path: Path, keys: Keys) -> None:
    """Regression (security review #3): a world-writable curve_authorized_keys directory and a
    group-readable server secret were accepted silently; any local user could authorize itself."""
    base = (
        f"[circus]\nendpoint = ipc://{tmp_path}/c.sock\npubsub_endpoint = ipc://{tmp_path}/p.sock\n"
        f"stats_endpoint = ipc://{tmp_path}/s.sock\ncurve_secret_key = {keys.server_secret}\n"
        f"curve_authorized_keys = {keys.authorized}\n{SLEEPER}"
    )
    nobody = pwd.getpwnam("nobody").pw_uid
    for mode, uid, where in (
        (0o777, 0, "writable by its group or others"),
        (0o775, 0, "writable by its group or others"),
        (0o755, nobody, f"owned by uid {nobody}"),
    ):
        os.chmod(keys.authorized, mode)
        os.chown(keys.authorized, uid, -1)
        done = _run_circusd(tmp_path, base)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "curve_authorized_keys" in done.stderr and where in done.stderr, done.stderr
    os.chmod(keys.authorized, 0o755)
    os.chown(keys.authorized, 0, -1)
    # a key file others may rewrite is refused as well
    os.chmod(keys.authorized / "bob.key", 0o666)
    done = _run_circusd(tmp_path, base)
    assert done.returncode == 2 and "bob.key" in done.stderr, done.stderr
    os.chmod(keys.authorized / "bob.key", 0o644)
    # the server secret: readable by its group (what circusctl keygen never writes), or owned by nobody
    os.chmod(keys.server_secret, 0o640)
    done = _run_circusd(tmp_path, base)
    assert done.returncode == 2 and "curve_secret_key" in done.stderr and "0640" in done.stderr, done.stderr
    os.chmod(keys.server_secret, 0o600)
    os.chown(keys.server_secret, nobody, -1)
    done = _run_circusd(tmp_path, base)
    assert done.returncode == 2 and f"owned by uid {nobody}" in done.stderr, done.stderr


def test_keydir_perms_reload_into_an_unsafe_directory_keeps_the_previous_keys(
    circusd: Any, keys: Keys, tmp_path: Path
) -> None:
    """Regression (security review #3): a key dropped into a directory made writable by others was
    authorized at the next reloadconfig; now the reload refuses to read it and keeps the keys it had."""
    daemon = start_curve(circusd, keys)
    alice, mallory = keys.client("alice"), keys.client("mallory")
    os.chmod(keys.authorized, 0o777)
    shutil.copy(keys.pairs["mallory"][0], keys.authorized / "mallory.key")
    assert _answers(daemon.endpoint, alice, command="reloadconfig") is not None
    wait_for(lambda: "authorized keys NOT re-read" in daemon.log_text(), 10, what="the refusal logged")
    assert _answers(daemon.endpoint, mallory, timeout=0.3) is None
    assert _answers(daemon.endpoint, alice) is not None
    os.chmod(keys.authorized, 0o755)
    os.chown(keys.authorized / "mallory.key", pwd.getpwnam("nobody").pw_uid, -1)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.log_text().count("authorized keys NOT re-read") >= 2, 10, what="refused again")
    assert _answers(daemon.endpoint, mallory, timeout=0.3) is None
    assert _answers(daemon.endpoint, alice) is not None


class _Subscriber:
    """A CURVE SUB with a monitor on its own connection: what it received, and whether it was cut off."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, keys: ClientKeys, prefix: bytes) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        keys.apply(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(endpoint)
        self.received = 0
        self.events: list[int] = []

    def drain(self) -> int:
        """Read what has arrived (messages and connection events) without waiting; the message count."""
        got = 0
        while self.sock.poll(0):
            self.sock.recv_multipart()
            got += 1
        while self.monitor.poll(0):
            self.events.append(recv_monitor_message(self.monitor)["event"])
        self.received += got
        return got

    def forget(self) -> None:
        """Once its connection is closed: read what reached it before (nothing more can come over that
        connection; a message may still be on its way through libzmq's pipes), then forget it all."""
        while self.sock.poll(200):
            self.drain()
        self.drain()
        self.received = 0
        self.events.clear()


def test_revoked_key_cuts_its_event_and_stats_subscriptions_others_come_back(
    circusd: Any, keys: Keys
) -> None:
    # the event stream over tcp, the stats stream over ipc: both transports
    daemon = start_curve(circusd, keys, pubsub_endpoint=f"tcp://127.0.0.1:{_free_port()}")
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        subs = {
            (who, stream): _Subscriber(ctx, endpoint, keys.client(who), prefix)
            for who in ("alice", "bob")
            for stream, endpoint, prefix in (
                ("events", daemon.pubsub_endpoint, b"watcher."),
                ("stats", daemon.stats_endpoint, b"stat."),
            )
        }
        alices = [sub for (who, _), sub in subs.items() if who == "alice"]
        bobs = [sub for (who, _), sub in subs.items() if who == "bob"]
        with Client(daemon.endpoint, 5, keys=keys.client("bob")) as c:

            def all_receive(which: list[_Subscriber]) -> bool:
                c.call("incr", name="w", waiting=True)  # one event per call; stats come every second
                c.call("decr", name="w", waiting=True)
                return all([sub.drain() > 0 for sub in which])

            wait_for(lambda: all_receive(alices + bobs), 20, 0.1, "all four subscriptions receiving")
            (keys.authorized / "alice.key").unlink()
            assert c.call("reloadconfig")["status"] == "ok"

            # every connection of both streams is closed: libzmq reports it on each subscriber's side
            def disconnected(sub: _Subscriber) -> bool:
                sub.drain()
                return zmq.EVENT_DISCONNECTED in sub.events

            for sub in subs.values():
                wait_for(lambda sub=sub: disconnected(sub), 10, 0.02, "the subscriber's connection closed")
            for sub in alices:
                sub.forget()
            # bob's subscriptions come back through ZAP and receive events and stats again...
            wait_for(lambda: all_receive(bobs), 20, 0.1, "bob receiving again on both streams")
            assert all(zmq.EVENT_HANDSHAKE_SUCCEEDED in sub.events for sub in bobs)
        # ...while alice, whose subscribers kept reconnecting all along, got nothing and was never let in
        for sub in alices:
            sub.drain()
            assert sub.received == 0
            assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in sub.events
    finally:
        ctx.destroy(linger=0)
    assert "key(s) alice.key revoked: every subscriber of" in daemon.log_text()


def _zmtp_greeting(mechanism: bytes) -> bytes:
    # ZMTP 3.0 greeting: signature, version 3.0, mechanism (20 bytes), as-server, filler
    return b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\x00") + b"\x00" * 32


def test_fuzzed_and_oversized_frames_from_unauthenticated_peers_never_reach_the_command_layer(
    circusd: Any, keys: Keys, tmp_path: Path
) -> None:
    port = _free_port()
    daemon = start_curve(circusd, keys, endpoint=f"tcp://127.0.0.1:{port}")
    alice = keys.client("alice")
    before = _answers(daemon.endpoint, alice, command="dstats")["info"]
    rng = __import__("random").Random(1234)
    payloads = [
        b"",
        bytes(rng.getrandbits(8) for _ in range(4096)),
        _zmtp_greeting(b"NULL") + bytes(rng.getrandbits(8) for _ in range(512)),
        _zmtp_greeting(b"PLAIN") + b"\x04\x1a\x05HELLO" + b"\x00" * 20,
        _zmtp_greeting(b"CURVE") + b"\x04\xc8\x05HELLO" + bytes(200),
        _zmtp_greeting(b"NULL") + b"\x06" + (64 << 20).to_bytes(8, "big") + b"x" * 65536,  # "64 MiB" frame
    ]
    for data in payloads:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):  # the server may answer its greeting, then drops us
                    pass
            except (TimeoutError, ConnectionResetError, BrokenPipeError):
                pass
            except OSError as exc:  # ENOTCONN: already dropped by the server, as it should
                assert exc.errno == errno.ENOTCONN, exc
    ctx: zmq.Context[Any] = zmq.Context()
    try:  # well-formed zmq peers without CURVE, and with an unknown key, sending real commands
        for peer_keys in (None, keys.client("mallory")):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # A DEALER blocks in send while it has no pipe, which happens between a refused handshake
            # and the next reconnect: a refused peer may well be unable to send at all.
            sock.setsockopt(zmq.SNDTIMEO, 1000)
            if peer_keys is not None:
                peer_keys.apply(sock)
            sock.connect(daemon.endpoint)
            for body in (b'{"id": "1", "command": "quit", "properties": {}}', b"\x00" * (1 << 20)):
                with contextlib.suppress(zmq.Again):
                    sock.send(body)
            assert not sock.poll(300)
            sock.close()
    finally:
        ctx.destroy(linger=0)
    after = _answers(daemon.endpoint, alice, command="dstats")["info"]
    # exactly one more request reached the command layer: this dstats
    assert after["requests_received"] == before["requests_received"] + 1
    assert after["commands_handled"] == before["commands_handled"] + 1
    assert daemon.proc.poll() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_circusd(tmp_path: Path, text: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"c-{uuid.uuid4().hex[:6]}.ini"
    path.write_text(text)
    return subprocess.run(
        circusd_argv(str(path)), capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )


def test_non_loopback_tcp_without_auth_refuses_to_start(tmp_path: Path) -> None:
    port = _free_port()
    text = f"[circus]\nendpoint = tcp://0.0.0.0:{port}\ncgroup_root = no\n{SLEEPER}"
    res = _run_circusd(tmp_path, text)
    assert res.returncode == 1, res.stderr
    assert "not a loopback address" in res.stderr and "insecure = true" in res.stderr
    path = tmp_path / "exposed.ini"
    path.write_text(text)
    check = subprocess.run(circusd_argv("--check", str(path)), capture_output=True, text=True, timeout=20)
    assert check.returncode == 1 and "not a loopback address" in check.stderr


def test_insecure_true_starts_with_a_loud_warning(circusd: Any) -> None:
    port = _free_port()
    daemon = circusd(SLEEPER, endpoint=f"tcp://0.0.0.0:{port}", insecure="true")
    assert daemon.call("numwatchers")["numwatchers"] == 1
    assert "INSECURE: tcp://0.0.0.0" in daemon.log_text()


def _ipc_config(control_dir: Path, tmp_path: Path) -> str:
    return (
        f"[circus]\nendpoint = ipc://{control_dir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{tmp_path}/p.sock\ncgroup_root = no\n"
    )


def test_world_writable_socket_directory_refuses_to_start(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    text = _ipc_config(shared, tmp_path)
    res = _run_circusd(tmp_path, text + SLEEPER)
    assert res.returncode == 2, res.stderr
    assert "world-writable" in res.stderr and str(shared) in res.stderr
    assert not (shared / "ctl.sock").exists()


def test_socket_directory_owned_by_another_user_refuses_to_start(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, pwd.getpwnam("nobody").pw_uid, -1)
    text = _ipc_config(other, tmp_path)
    res = _run_circusd(tmp_path, text + SLEEPER)
    assert res.returncode == 2 and "owned by uid" in res.stderr, res.stderr


def test_groupwritable_sockdir_refused_unless_its_group_is_endpoint_group(
    circusd: Any, tmp_path: Path
) -> None:
    """Regression (security review #7): a socket directory writable by another group (0770 root:nogroup)
    was accepted, and a member of that group replaced the control socket with an impostor."""
    nogroup = grp.getgrnam("nogroup").gr_gid
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, nogroup)
    shared.chmod(0o770)
    res = _run_circusd(tmp_path, _ipc_config(shared, tmp_path) + SLEEPER)
    assert res.returncode == 2, res.stderr
    assert f"writable by group {nogroup}" in res.stderr and str(shared) in res.stderr
    assert not (shared / "ctl.sock").exists()
    # the group whose members may use the socket anyway (endpoint_group) may also write the directory
    daemon = circusd(SLEEPER, endpoint=f"ipc://{shared}/ctl.sock", endpoint_group="nogroup")
    assert daemon.call("numwatchers")["numwatchers"] == 1
    assert (shared / "ctl.sock").stat().st_gid == nogroup


def test_groupwritable_sockdir_permissions_never_follow_a_swapped_in_link(tmp_path: Path) -> None:
    """Regression (security review #7): chown/chmod by path after bind() followed a symlink swapped in
    meanwhile, so root would chown/chmod any file to the configured group and mode."""
    from circus_linux.control.auth import IpcPermissions, SecurityError

    nogroup = grp.getgrnam("nogroup").gr_gid
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    link = tmp_path / "ctl.sock"
    link.symlink_to(victim)
    perms = IpcPermissions(group=nogroup, mode=0o666)
    with pytest.raises(SecurityError, match="lrwxrwxrwx"):  # O_PATH|O_NOFOLLOW pins the link itself
        perms.apply(str(link))
    plain = tmp_path / "plain.sock"
    plain.write_text("")
    with pytest.raises(SecurityError, match="not the socket circusd just bound"):
        perms.apply(str(plain))
    st = victim.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    # a real socket gets them
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "real.sock"))
        perms.apply(str(tmp_path / "real.sock"))
        st = (tmp_path / "real.sock").lstat()
        assert stat.S_ISSOCK(st.st_mode) and (st.st_gid, stat.S_IMODE(st.st_mode)) == (nogroup, 0o666)


def test_ipc_sockets_get_owner_group_and_mode(circusd: Any, tmp_path: Path) -> None:
    group = grp.getgrnam("nogroup").gr_gid
    run = tmp_path / "run"  # missing: circusd creates it, 0750, group endpoint_group
    daemon = circusd(
        SLEEPER,
        endpoint=f"ipc://{run}/ctl.sock",
        pubsub_endpoint=f"ipc://{run}/pub.sock",
        endpoint_group="nogroup",
    )
    assert daemon.call("numwatchers")["status"] == "ok"
    for name in ("ctl.sock", "pub.sock"):
        st = os.stat(run / name)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group), name
    st = os.stat(run)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o750, group)
    private = circusd(SLEEPER)
    assert stat.S_IMODE(os.stat(private.endpoint[len("ipc://") :]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(private.pubsub_endpoint[len("ipc://") :]).st_mode) == 0o600


def test_allow_spawn_changes_false_refuses_add_and_spawn_keys(circusd: Any) -> None:
    daemon = circusd(SLEEPER, allow_spawn_changes="false", disabled_commands="quit")
    add = daemon.call("add", name="evil", cmd="sh -c 'id > /tmp/pwned'", start=True)
    assert (add["status"], add["errno"]) == ("error", 5) and "allow_spawn_changes" in add["reason"]
    for key, value in (("cmd", "sh"), ("args", "-c id"), ("uid", 0), ("hooks.before_start", "os.system")):
        reply = daemon.call("set", name="w", options={key: value})
        assert reply["status"] == "error" and key in reply["reason"], reply
    assert daemon.call("set", name="w", options={"numprocesses": 2}, waiting=True)["status"] == "ok"
    assert len(daemon.pids("w")) == 2
    quit_ = daemon.call("quit")
    assert quit_["status"] == "error" and "disabled_commands" in quit_["reason"]
    assert daemon.call("numwatchers")["numwatchers"] == 1


def test_worker_runs_as_nobody_nogroup(circusd: Any) -> None:
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    daemon = circusd("[watcher:w]\ncmd = sleep 600\nuid = nobody\ngid = nogroup\nworking_dir = /\n")
    (pid,) = wait_for(lambda: daemon.pids("w"), 10, what="worker")
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert [int(x) for x in fields["Uid"].split()] == [nobody] * 4
    assert [int(x) for x in fields["Gid"].split()] == [nogroup] * 4
    assert fields["Groups"].split() in ([], [str(nogroup)])


def test_circusctl_keygen_and_curve_options(circusd: Any, keys: Keys, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert circusctl.main(["keygen", str(tmp_path / "new"), "carol"], out, err) == 0, err.getvalue()
    public, secret = tmp_path / "new/carol.key", tmp_path / "new/carol.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and "secret-key" in secret.read_text()
    assert circusctl.main(["keygen", str(tmp_path / "new"), "carol"], io.StringIO(), io.StringIO()) == 1
    shutil.copy(public, keys.authorized / "carol.key")
    daemon = start_curve(circusd, keys)
    argv = ["--endpoint", daemon.endpoint, "--timeout", "5", "--json", "list"]
    out = io.StringIO()
    rc = circusctl.main(
        [*argv, "--server-key", str(keys.server_public), "--client-key", str(secret)], out, err
    )
    assert rc == 0 and json.loads(out.getvalue())["watchers"] == ["w"]
    # the environment variables, and an unknown key: a timeout, exit 1
    env = {
        "CIRCUSCTL_SERVER_KEY": str(keys.server_public),
        "CIRCUSCTL_CLIENT_KEY": str(keys.pairs["mallory"][1]),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        err = io.StringIO()
        argv[3] = "0.5"
        assert circusctl.main(argv, io.StringIO(), err) == 1 and "Timed out" in err.getvalue()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ssh_tunnel_failure_is_reported_not_hung() -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client")
    port = _free_port()  # nothing listens there: ssh fails at once, and circusctl says why
    err = io.StringIO()
    argv = ["--ssh", f"nobody@127.0.0.1:{port}", "--endpoint", "tcp://127.0.0.1:5555", "list"]
    assert circusctl.main(argv, io.StringIO(), err) == 2
    assert f"ssh nobody@127.0.0.1:{port} failed" in err.getvalue()


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`ssh` on PATH is tests/integration/fake_ssh.py (this machine plays the remote host); its argv log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = Path(__file__).with_name("fake_ssh.py")
    (bindir / "ssh").write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    (bindir / "ssh").chmod(0o755)
    log = tmp_path / "ssh-argv.log"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return log


def test_ssh_tunnel_open_local_end_is_a_private_unix_socket(
    circusd: Any, fake_ssh: Path, tmp_path: Path
) -> None:
    """Regression (security review #6): `circusctl --ssh` forwarded to 127.0.0.1:PORT, which every local
    user could use while the tunnel was up (and take first: probe, then bind). Now the local end is a
    unix socket in a private 0700 directory, reached with ipc://; an ipc:// remote is forwarded as such."""
    from circus_linux.cli.multihost import SshTunnel

    port = _free_port()
    daemon = circusd(SLEEPER, endpoint=f"tcp://127.0.0.1:{port}")
    with SshTunnel("ops@remote") as tunnel:
        local = tunnel.forward(daemon.endpoint)
        assert local.startswith("ipc:///")
        path = Path(local[len("ipc://") :])
        dst, sst = path.parent.stat(), path.lstat()
        assert (dst.st_uid, stat.S_IMODE(dst.st_mode)) == (os.geteuid(), 0o700)
        assert stat.S_ISSOCK(sst.st_mode) and stat.S_IMODE(sst.st_mode) & 0o077 == 0
        assert f"-L {path}:127.0.0.1:{port} ops@remote" in fake_ssh.read_text()
        assert _answers(local, None, timeout=5) is not None
        # another local user cannot reach the tunnel
        probe = (
            "import socket, sys\ntry:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('in')\n"
            "except PermissionError:\n    print('denied')\n"
        )
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", probe,
             str(path)], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.stdout.strip() == "denied", done.stderr
        # a remote ipc:// endpoint is forwarded to its path
        other = circusd(SLEEPER)
        local2 = tunnel.forward(other.endpoint)
        assert f"{local2[len('ipc://'):]}:{other.endpoint[len('ipc://'):]} ops@remote" in fake_ssh.read_text()
        assert _answers(local2, None, timeout=5) is not None
    assert not path.parent.exists(), "the private directory goes with the tunnel"
    # circusctl itself, end to end
    out, err = io.StringIO(), io.StringIO()
    argv = ["--ssh", "ops@remote", "--endpoint", daemon.endpoint, "--timeout", "5", "list"]
    assert circusctl.main(argv, out, err) == 0, err.getvalue()
    assert out.getvalue().split() == ["w"]
