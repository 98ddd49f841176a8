"""Imports asyncio for circusd without its TLS half; nothing else.

asyncio imports `ssl` at start-up for TLS transports, and with it OpenSSL's libssl and libcrypto: about
4.5 MiB of RSS and 7 ms of cold start in a process that never opens a TLS transport (the control channel
is ZeroMQ, whose CURVE lives in libzmq; the dashboard is plain HTTP on loopback). asyncio treats a
missing `ssl` as "no TLS support" (`try: import ssl except ImportError: ssl = None` in each of its
modules), so it is hidden for the duration of that one import and put back after: a hook or a library
that imports `ssl` later gets the real module. What is lost is only TLS through *circusd's own asyncio*
(``loop.create_connection(ssl=...)``, ``asyncio.open_connection(ssl=...)``), which nothing in circusd
uses; a hook that needs it runs with ``CIRCUS_ASYNCIO_TLS=1`` in circusd's environment.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType


def import_asyncio(environ: dict[str, str] | None = None) -> ModuleType:
    """asyncio, imported without `ssl` unless it is already loaded or CIRCUS_ASYNCIO_TLS=1 asks for it."""
    env = os.environ if environ is None else environ
    if "asyncio" in sys.modules or "ssl" in sys.modules or env.get("CIRCUS_ASYNCIO_TLS") == "1":
        import asyncio

        return asyncio
    sys.modules["ssl"] = None  # type: ignore[assignment]  # the import system's "known missing" mark
    try:
        import asyncio
    finally:
        del sys.modules["ssl"]
    return asyncio
