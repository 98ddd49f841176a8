"""The dashboard's action token: made at start, written where only control-socket users can read it.

The dashboard's buttons run commands as circusd's user, so they must not widen who may do that: the
token is written beside the control ipc socket with the socket's own owner, group and mode
([circus] endpoint_owner/group/mode), so exactly the users who may connect to the control socket may
read it, and so act. The file holds the dashboard's URL with the token (`circusctl dashboard-url`
prints it); opening it sets an HttpOnly, SameSite=Strict cookie (circus_linux/web/app.py). No
command logic, no HTTP here.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping

from circus_linux.control.auth import IpcPermissions, ipc_path

TOKEN_BYTES = 32
SUFFIX = ".dashboard"
ROOT_DIR = "/run/circus-linux"  # a root circusd whose control endpoint is not an ipc:// path


def token_path(
    endpoint: str, euid: int | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Where the dashboard URL file of the circusd at control `endpoint` lives; None when there is no
    place only its users could read (a non-root circusd on tcp:// without XDG_RUNTIME_DIR).

    circusd and circusctl compute it the same way from the endpoint alone: beside the socket for an
    ipc:// path (`/run/circus/circus.sock.dashboard`); otherwise root's /run/circus-linux, or the
    user's $XDG_RUNTIME_DIR, under a name made from the endpoint.
    """
    path = ipc_path(endpoint)
    if path is not None:
        return os.path.abspath(path) + SUFFIX
    env = os.environ if environ is None else environ
    uid = os.geteuid() if euid is None else euid
    directory = ROOT_DIR if uid == 0 else env.get("XDG_RUNTIME_DIR")
    if not directory:
        return None
    return os.path.join(directory, "circusd-" + re.sub(r"[^A-Za-z0-9.-]+", "_", endpoint) + SUFFIX)


class DashboardToken:
    """One random token per circusd run; `check` compares in constant time."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(TOKEN_BYTES)
        self.path: str | None = None

    def check(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(str(candidate).encode(), self.token.encode())

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/?token={self.token}"

    def publish(self, path: str, base_url: str, perms: IpcPermissions) -> None:
        """Write `base_url?token=...` to `path`: created 0600 under a fresh name, given the control
        socket's owner, group and mode through its fd, then renamed into place, so the file is never
        readable by others for an instant and a symlink at `path` is replaced, not followed."""
        directory = os.path.dirname(path)
        if path.startswith(ROOT_DIR + "/"):
            os.makedirs(directory, mode=0o755, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                if perms.owner is not None or perms.group is not None:
                    os.fchown(fd, -1 if perms.owner is None else perms.owner,
                              -1 if perms.group is None else perms.group)  # fmt: skip
                os.fchmod(fd, (0o600 if perms.mode is None else perms.mode) & 0o666)
                os.write(fd, (self.url(base_url) + "\n").encode())
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.path = path

    def remove(self) -> None:
        """Remove the file at exit, if it is still ours (a newer circusd may have replaced it)."""
        if self.path is None:
            return
        with contextlib.suppress(OSError), open(self.path, "rb") as f:
            if self.token.encode() in f.read():
                os.unlink(self.path)
        self.path = None


def read_url(path: str) -> str:
    """The URL a circusd wrote (OSError when it is missing or not readable by this user)."""
    with open(path, encoding="utf-8") as f:
        return f.read().strip()
