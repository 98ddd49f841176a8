"""circusctl's remote side: several hosts (aggregated tables with a HOST column), ssh tunnels, keygen.

Renders and spawns `ssh`; decides nothing about circusd. The multi-host client itself is
circus_linux.control.multi (shared with circus-top).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import zmq.asyncio

from circus_linux.control import keys as keysmod
from circus_linux.control.multi import Host, HostReply, MultiClient

# ----------------------------------------------------------------------------- keygen


def keygen(directory: str, name: str, out: TextIO, err: TextIO) -> int:
    """`circusctl keygen DIR [NAME]`: write NAME.key + NAME.key_secret and say where each belongs."""
    try:
        public, secret = keysmod.generate(directory, name)
    except (keysmod.KeyError_, OSError) as exc:
        print(f"error: {exc}", file=err)
        return 1
    print(f"public key: {public}\nsecret key: {secret} (mode 0600)", file=out)
    print(
        "server pair: set [circus] curve_secret_key = <the .key_secret>, give clients the .key "
        "(circusctl --server-key);\nclient pair: copy the .key into the server's curve_authorized_keys "
        "directory, use the .key_secret with circusctl --client-key",
        file=out,
    )
    return 0


# ----------------------------------------------------------------------------- ssh tunnels


class SshTunnel:
    """`ssh -N -L` tunnels through `user@host[:port]`, one per remote endpoint; closed on exit.

    The local end is a unix socket in a private 0700 directory (`ssh -L /dir/tN.sock:HOST:PORT`, or
    `-L /dir/tN.sock:/remote/path` for an ipc:// endpoint), reached with ipc://: only this user can
    connect to it, unlike a 127.0.0.1 port every local user could use while the tunnel is up, and no
    other program can take the address first. Uses the system OpenSSH client (BatchMode: no password
    prompt, keys or an agent only).
    """

    def __init__(self, server: str, keyfile: str | None = None, timeout: float = 10.0) -> None:
        self.server = server
        self.keyfile = keyfile
        self.timeout = timeout
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir: str | None = None

    def __enter__(self) -> SshTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _target(self, endpoint: str) -> str:
        """What follows the local socket in -L: HOST:PORT, or the remote socket's path."""
        if endpoint.startswith("tcp://"):
            rhost, _, rport = endpoint[len("tcp://") :].rpartition(":")
            if rhost in ("*", "0.0.0.0"):
                rhost = "127.0.0.1"
            return f"{rhost}:{rport}"
        if endpoint.startswith("ipc://") and endpoint[len("ipc://") :].startswith("/"):
            return endpoint[len("ipc://") :]
        raise ValueError(f"--ssh tunnels tcp:// and ipc:///path endpoints only, not {endpoint}")

    def forward(self, endpoint: str) -> str:
        """A local ipc:// endpoint reaching `endpoint` (tcp://HOST:PORT or ipc:///path, as seen from the
        server)."""
        target = self._target(endpoint)
        ssh = shutil.which("ssh")
        if ssh is None:
            raise ValueError("--ssh needs the OpenSSH client (apt install openssh-client)")
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="circusctl-ssh-")  # 0700, ours: nobody else binds there
        local = os.path.join(self._dir, f"t{len(self._procs)}.sock")
        host, _, sshport = self.server.partition(":")
        argv = [ssh, "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                "-o", "StreamLocalBindMask=0177", "-L", f"{local}:{target}"]  # fmt: skip
        if sshport:
            argv += ["-p", sshport]
        if self.keyfile:
            argv += ["-i", self.keyfile]
        argv.append(host)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._procs.append(proc)
        deadline = time.monotonic() + self.timeout
        while True:  # ready when the local end accepts connections
            if proc.poll() is not None:
                msg = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise ValueError(f"ssh {self.server} failed ({proc.returncode}): {msg}")
            with socket.socket(socket.AF_UNIX) as s:
                if s.connect_ex(local) == 0:
                    return f"ipc://{local}"
            if time.monotonic() > deadline:
                raise ValueError(f"ssh tunnel to {self.server} not up within {self.timeout}s")
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        self._procs.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ----------------------------------------------------------------------------- several hosts


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def render_hosts(
    command: str,
    answers: Sequence[HostReply],
    render_one: Callable[[str, dict[str, Any]], str],
    stats_rows: Callable[[str, dict[str, Any]], list[list[Any]]],
    stats_header: Sequence[str],
) -> str:
    """One view over every host that answered: tables with a HOST column for list/status/stats,
    `host: text` lines for the rest. Hosts that failed are left to the caller (they go to stderr)."""
    good = [a for a in answers if a.ok and a.reply is not None]
    if command == "list":
        rows: list[list[Any]] = []
        for a in good:
            assert a.reply is not None
            if "watchers" in a.reply:
                rows += [[a.host.name, w] for w in a.reply["watchers"]]
            else:
                rows.append([a.host.name, ",".join(str(p) for p in a.reply.get("pids", []))])
        header = ("HOST", "WATCHER") if any("watchers" in (a.reply or {}) for a in good) else ("HOST", "PIDS")
        return _table(rows, header)
    if command == "status":
        rows = []
        for a in good:
            assert a.reply is not None
            if "statuses" in a.reply:
                rows += [[a.host.name, n, st] for n, st in sorted(a.reply["statuses"].items())]
            else:
                rows.append([a.host.name, "", a.reply.get("status")])
        return _table(rows, ("HOST", "WATCHER", "STATUS"))
    if command == "stats":
        rows = []
        for a in good:
            assert a.reply is not None
            infos = a.reply.get("infos")
            if isinstance(infos, dict):
                for name in sorted(infos):
                    rows += [[a.host.name, *r] for r in stats_rows(name, infos[name])]
            else:
                rows += [
                    [a.host.name, *r] for r in stats_rows(a.reply.get("name", ""), a.reply.get("info") or {})
                ]
        return _table(rows, ("HOST", *stats_header))
    lines = []
    for a in good:
        assert a.reply is not None
        text = render_one(command, a.reply)
        lines += [f"{a.host.name}: {line}" for line in text.splitlines() or [""]]
    return "\n".join(lines)


def run_hosts(
    hosts: Sequence[Host],
    command: str,
    properties: dict[str, Any],
    timeout: float,
    as_json: bool,
    prettify: bool,
    out: TextIO,
    err: TextIO,
    render_one: Callable[[str, dict[str, Any]], str],
    stats_rows: Callable[[str, dict[str, Any]], list[list[Any]]],
    stats_header: Sequence[str],
) -> int:
    """Run one command on every host; exit 0 only when every host answered ok, else 1 when a host did not
    answer at all (connection failure, timeout), else 3 (a host answered with an error)."""
    # imported here: circus-top imports this module without circusctl
    from circus_linux.cli.circusctl import EXIT_ERROR_REPLY, EXIT_OK, EXIT_UNREACHED

    async def go() -> list[HostReply]:
        ctx = zmq.asyncio.Context()
        try:
            async with MultiClient(hosts, timeout, ctx) as multi:
                return await multi.request(command, **properties)
        finally:
            ctx.destroy(linger=0)

    answers = asyncio.run(go())
    if as_json or prettify:
        doc = {a.host.name: a.reply if a.reply is not None else {"status": "error", "reason": a.error}
               for a in answers}  # fmt: skip
        print(json.dumps(doc, indent=2 if prettify else None, sort_keys=prettify), file=out)
    else:
        text = render_hosts(command, answers, render_one, stats_rows, stats_header)
        if text:
            print(text, file=out)
    for a in answers:
        if not a.ok and not (as_json or prettify):
            reason = a.error if a.reply is None else a.reply.get("reason", "unknown error")
            print(f"{a.host.name}: error: {reason}", file=err)
    if any(a.reply is None for a in answers):
        return EXIT_UNREACHED
    return EXIT_OK if all(a.ok for a in answers) else EXIT_ERROR_REPLY


def listen_hosts(
    hosts: Sequence[Host],
    topics: Sequence[str],
    count: int | None,
    timeout: float,
    prettify: bool,
    out: TextIO,
) -> int:
    """Print the merged event streams of every host: `HOST TOPIC: JSON`, until Ctrl-C or COUNT events."""

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        try:
            async with MultiClient(hosts, timeout, ctx) as multi:
                endpoints = await multi.pubsub_endpoints()
                for h in hosts:
                    if h.name not in endpoints:
                        print(f"{h.name}: no event stream (host did not answer)", file=out, flush=True)
                async for host, topic, payload in multi.events(topics, endpoints, count):
                    body = json.dumps(payload, indent=2 if prettify else None, sort_keys=prettify)
                    print(f"{host} {topic}: {body}", file=out, flush=True)
        finally:
            ctx.destroy(linger=0)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0


def add_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The remote/multi-host global options of circusctl (also accepted after the command).

    Defined in circusctl, which needs them without importing this module (asyncio, zmq.asyncio).
    """
    from circus_linux.cli.circusctl import add_remote_options

    add_remote_options(parser, suppress)


def env_default(name: str) -> str | None:
    return os.environ.get(name) or None
