#!/usr/bin/env python3
"""Stand-in for OpenSSH's `ssh -N -L LOCAL_SOCKET:HOST:PORT` / `-L LOCAL_SOCKET:REMOTE_SOCKET` (tests only).

Binds the local unix socket under StreamLocalBindMask (as ssh does), forwards each connection to the
target on this machine, and appends its argv to $FAKE_SSH_LOG. Runs until terminated.
"""

import contextlib
import os
import socket
import sys
import threading

argv = sys.argv[1:]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(" ".join(argv) + "\n")
spec = argv[argv.index("-L") + 1]
mask = 0o177
for i, word in enumerate(argv):
    if word == "-o" and argv[i + 1].startswith("StreamLocalBindMask="):
        mask = int(argv[i + 1].split("=", 1)[1], 8)
local, _, target = spec.partition(":")
if not local.startswith("/"):
    sys.exit(f"fake ssh: only a local unix socket is forwarded here, not {spec}")
old = os.umask(mask)
listener = socket.socket(socket.AF_UNIX)
listener.bind(local)
os.umask(old)
listener.listen(16)


def connect() -> socket.socket:
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(target)
        return s
    host, _, port = target.rpartition(":")
    return socket.create_connection((host, int(port)))


def pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


while True:
    client, _ = listener.accept()
    remote = connect()
    threading.Thread(target=pipe, args=(client, remote), daemon=True).start()
    threading.Thread(target=pipe, args=(remote, client), daemon=True).start()
