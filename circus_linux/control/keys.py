"""CURVE key files: generate pairs, read public/secret keys, arm a client socket; no policy, no server side.

Key files use pyzmq's `zmq.auth.create_certificates` format (ZPL text with `public-key` and, in the
`.key_secret` file only, `secret-key`), so keys made with pyzmq's own tools or with `circusctl keygen`
are interchangeable. A key may also be given inline as its 40-character Z85 text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from circus_linux.errors import CircusError

Z85_KEY_LEN = 40  # a 32-byte Curve25519 key in Z85


class KeyError_(CircusError):
    """A key file is missing, unreadable or malformed; the message names the file."""


def _is_z85_key(text: str) -> bool:
    # Z85's alphabet includes '/' and '.', so "is it a path" is asked of the file system.
    return len(text) == Z85_KEY_LEN and text.isascii() and not os.path.exists(text)


def load_public(spec: str) -> bytes:
    """The Z85 public key in file `spec` (either file of a pair), or `spec` itself when it is a Z85 key."""
    if _is_z85_key(spec):
        return spec.encode("ascii")
    try:
        public, _secret = zmq.auth.load_certificate(spec)
    except (OSError, ValueError) as exc:
        raise KeyError_(f"cannot read CURVE key {spec}: {exc}") from None
    if not public:
        raise KeyError_(f"{spec}: no public-key in this file")
    return bytes(public)


def load_pair(path: str) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a `.key_secret` file; refuses a file its group or others can read or
    write (`circusctl keygen` writes 0600)."""
    try:
        st = os.stat(path)
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyError_(f"cannot read CURVE secret key {path}: {exc}") from None
    if not secret:
        raise KeyError_(f"{path}: no secret-key in this file (give the .key_secret file, not the .key)")
    if st.st_mode & 0o077:
        # A secret others can read lets them be us; one others can write lets them choose it. `keygen`
        # writes 0600: refuse anything wider rather than warn.
        who = "world" if st.st_mode & 0o007 else "group"
        raise KeyError_(
            f"{path}: secret key is {who}-accessible (mode {st.st_mode & 0o777:04o}; chmod 600 {path})"
        )
    return bytes(public), bytes(secret)


def generate(directory: str | os.PathLike[str], name: str = "client") -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (mode 0600) into `directory`; returns both paths.

    Refuses to overwrite an existing pair: replacing a key silently would lock its users out.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for p in (public, secret):
        if p.exists():
            raise KeyError_(f"{p} already exists: remove it first or choose another name")
    old = os.umask(0o077)  # the secret file is never readable by others, not even for an instant
    try:
        pub, sec = zmq.auth.create_certificates(str(d), name)
    finally:
        os.umask(old)
    os.chmod(pub, 0o644)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs to talk CURVE: the server's public key and its own pair (all Z85)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: str, client_key: str) -> ClientKeys:
        public, secret = load_pair(client_key)
        return cls(load_public(server_key), public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        """Arm `sock` (before connect): the handshake fails, silently, unless the server knows our key."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def client_keys_from(
    server_key: str | None, client_key: str | None, env: dict[str, str] | None = None
) -> ClientKeys | None:
    """Keys from explicit values or CIRCUSCTL_SERVER_KEY / CIRCUSCTL_CLIENT_KEY; None when neither is set."""
    environ = os.environ if env is None else env
    server_key = server_key or environ.get("CIRCUSCTL_SERVER_KEY") or None
    client_key = client_key or environ.get("CIRCUSCTL_CLIENT_KEY") or None
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise KeyError_(
            "CURVE needs both --server-key (the server's public key) and --client-key (our .key_secret)"
        )
    return ClientKeys.from_files(server_key, client_key)
