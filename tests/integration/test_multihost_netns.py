"""Two hosts for real: a circusd in each of two network namespaces, CURVE on tcp, and circusctl in a
third namespace linked to both, aggregating `list`/`status`/`stats`, targeting one host, merging events.

Topology (every address lives inside a namespace; the root namespace gets no address or route):
    cli: 10.77.1.2/24 <-veth-> a: 10.77.1.1/24        cli: 10.77.2.2/24 <-veth-> b: 10.77.2.1/24
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from circus_linux.control.keys import generate


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@dataclass
class Net:
    cli: str
    a: str
    b: str


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    tag = uuid.uuid4().hex[:6]
    names = Net(f"circus-test-cli-{tag}", f"circus-test-a-{tag}", f"circus-test-b-{tag}")
    made: list[str] = []
    try:
        for ns in (names.cli, names.a, names.b):
            res = _ip("netns", "add", ns)
            if res.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {res.stderr.strip()}")
            made.append(ns)
        for i, host in ((1, names.a), (2, names.b)):
            near, far = f"ct{tag}c{i}", f"ct{tag}h{i}"
            steps = [
                ("link", "add", near, "netns", names.cli, "type", "veth", "peer", "name", far, "netns", host),
                ("-n", names.cli, "addr", "add", f"10.77.{i}.2/24", "dev", near),
                ("-n", host, "addr", "add", f"10.77.{i}.1/24", "dev", far),
                ("-n", names.cli, "link", "set", near, "up"),
                ("-n", host, "link", "set", far, "up"),
                ("-n", host, "link", "set", "lo", "up"),
            ]
            for step in steps:
                res = _ip(*step)
                if res.returncode != 0:
                    pytest.skip(f"cannot build the veth link (ip {' '.join(step)}): {res.stderr.strip()}")
        _ip("-n", names.cli, "link", "set", "lo", "up")
        yield names
    finally:
        for ns in made:  # deleting a namespace deletes its veth ends (and their peers)
            _ip("netns", "del", ns)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path


def _python_in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-P", *args]


@pytest.mark.slow  # ~11 s: two daemons and a dozen circusctl processes started inside namespaces
def test_circusctl_aggregates_two_curve_hosts_in_network_namespaces(net: Net, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    client_pub, client_sec = generate(keys / "client", "ops")
    hosts_file = tmp_path / "hosts"
    daemons: list[Daemon] = []
    lines = []
    try:
        for i, (name, ns) in enumerate((("a", net.a), ("b", net.b)), 1):
            server_pub, server_sec = generate(keys / name, "server")
            authorized = keys / name / "authorized"
            authorized.mkdir()
            shutil.copy(client_pub, authorized / "ops.key")
            ip = f"10.77.{i}.1"
            ini = tmp_path / f"{name}.ini"
            ini.write_text(
                "[circus]\n"
                f"endpoint = tcp://{ip}:5555\npubsub_endpoint = tcp://{ip}:5556\n"
                f"stats_endpoint = ipc://{tmp_path}/{name}-stats.sock\n"
                f"curve_secret_key = {server_sec}\ncurve_authorized_keys = {authorized}\n"
                "cgroup_root = no\n\n"  # `ip netns exec` remounts /sys: no cgroupfs in there
                f"[watcher:web{name}]\ncmd = sleep 600\nnumprocesses = {i}\n"
                "[watcher:common]\ncmd = sleep 600\n"
            )
            log = tmp_path / f"{name}.log"
            proc = subprocess.Popen(
                _python_in(ns, "-m", "circus_linux", str(ini)),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            daemons.append(Daemon(proc, log))
            lines.append(f"{name} tcp://{ip}:5555 {server_pub}")
        hosts_file.write_text("# test hosts\n" + "\n".join(lines) + "\n")

        def ctl(*args: str, timeout: float = 3) -> subprocess.CompletedProcess[str]:
            argv = _python_in(net.cli, "-m", "circus_linux.cli.circusctl", "--hosts", str(hosts_file))
            argv += ["--client-key", str(client_sec), "--timeout", str(timeout), *args]
            return subprocess.run(argv, capture_output=True, text=True, timeout=30)

        deadline = time.monotonic() + 30
        while True:
            res = ctl("status", timeout=0.5)
            if res.returncode == 0:
                break
            for d in daemons:
                if d.proc.poll() is not None:
                    pytest.fail(f"circusd exited {d.proc.returncode}:\n{d.log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"hosts never all answered: {res.stdout}{res.stderr}")
            time.sleep(0.05)

        res = ctl("list")
        assert res.returncode == 0, res.stderr
        rows = [line.split() for line in res.stdout.splitlines()]
        assert rows[0] == ["HOST", "WATCHER"]
        assert sorted(map(tuple, rows[1:])) == [
            ("a", "common"),
            ("a", "weba"),
            ("b", "common"),
            ("b", "webb"),
        ]

        res = ctl("stats")
        assert res.returncode == 0, res.stderr
        stat_rows = [line.split() for line in res.stdout.splitlines()[1:]]
        assert sorted((r[0], r[1]) for r in stat_rows) == [
            ("a", "common"), ("a", "weba"), ("b", "common"), ("b", "webb"), ("b", "webb"),
        ]  # fmt: skip

        # one host only: the other is untouched
        assert ctl("--host", "a", "incr", "common", "--waiting").returncode == 0
        res = ctl("numprocesses", "common")
        assert sorted(res.stdout.split("\n")[:2]) == ["a: 2", "b: 1"], res.stdout

        # merged event streams: both hosts' events, tagged with their host
        listen = subprocess.Popen(
            _python_in(net.cli, "-m", "circus_linux.cli.circusctl", "--hosts", str(hosts_file),
                       "--client-key", str(client_sec), "listen", "watcher."),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines_q: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines_q.put(x) for x in listen.stdout or []], daemon=True)
        reader.start()
        seen: set[str] = set()
        try:
            deadline = time.monotonic() + 20
            while seen != {"a", "b"} and time.monotonic() < deadline:
                for host in {"a", "b"} - seen:
                    ctl("--host", host, "incr", "common", "--waiting")
                try:
                    while True:
                        line = lines_q.get(timeout=0.3)
                        host, topic = line.split(" ", 2)[:2]
                        if topic.startswith("watcher.common."):
                            seen.add(host)
                except queue.Empty:
                    pass
        finally:
            listen.terminate()
            listen.wait(10)
        assert seen == {"a", "b"}

        # a client without the right key gets nothing from either host: error per host, exit 1
        res = subprocess.run(
            _python_in(net.cli, "-m", "circus_linux.cli.circusctl", "--endpoint", "tcp://10.77.1.1:5555",
                       "--endpoint", "tcp://10.77.2.1:5555", "--timeout", "0.5", "list"),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert res.returncode == 1 and res.stderr.count("Timed out") == 2, res.stderr
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.terminate()
            try:
                d.proc.wait(20)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
