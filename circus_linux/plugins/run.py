"""`python -m circus_linux.plugins.run dotted.Class`: build one plugin from the environment and run it.

circusd starts each `[plugin:NAME]` section as a singleton watcher running this module; the options come
as JSON in CIRCUS_PLUGIN_OPTIONS (values as written in the ini file), the endpoints in CIRCUS_ENDPOINT,
CIRCUS_PUBSUB_ENDPOINT and CIRCUS_STATS_ENDPOINT. Exit codes: 0 stopped, 2 bad class or options.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from typing import Any

from circus_linux.plugins.base import (
    DEFAULT_ENDPOINT,
    DEFAULT_PUBSUB,
    DEFAULT_STATS,
    ENV_CHECK_DELAY,
    ENV_ENDPOINT,
    ENV_NAME,
    ENV_OPTIONS,
    ENV_PUBSUB,
    ENV_STATS,
    CircusPlugin,
)

EXIT_BAD_PLUGIN = 2
# Keys a plugin receives as constructor arguments from the environment, never from its options.
_RESERVED = ("endpoint", "pubsub_endpoint", "stats_endpoint", "check_delay", "ssh_server")


def resolve(dotted: str) -> type[CircusPlugin]:
    """Import `package.module.Class`; `circus.plugins.X.Y` is Circus's name for circus_linux.plugins.X.Y."""
    if dotted.startswith("circus.plugins."):
        dotted = "circus_linux.plugins." + dotted[len("circus.plugins.") :]
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"{dotted!r}: expected package.module.Class")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not isinstance(cls, type):
        raise ValueError(f"{dotted!r}: {module_name} has no class {attr}")
    return cls


def options_from_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    text = environ.get(ENV_OPTIONS, "") or "{}"
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{ENV_OPTIONS} must be a JSON object, got {type(value).__name__}")
    return {str(k): v for k, v in value.items() if k not in _RESERVED and k != "use"}


def build(dotted: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> CircusPlugin:
    cls = resolve(dotted)
    options = options_from_env(environ)
    # Keywords, ssh_server included: Circus's bundled plugins (and the third-party ones written after
    # them) declare `__init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server, **config)` with
    # ssh_server required, and Circus's runner always passes it. Plugins run next to circusd: no tunnel.
    plugin = cls(
        endpoint=environ.get(ENV_ENDPOINT, DEFAULT_ENDPOINT),
        pubsub_endpoint=environ.get(ENV_PUBSUB, DEFAULT_PUBSUB),
        check_delay=float(environ.get(ENV_CHECK_DELAY, "5") or 5),
        ssh_server=None,
        stats_endpoint=environ.get(ENV_STATS, DEFAULT_STATS),
        **options,
    )
    if not isinstance(plugin, CircusPlugin):
        raise ValueError(f"{dotted!r} is not a CircusPlugin subclass")
    return plugin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="circus_linux.plugins.run", description=__doc__)
    parser.add_argument("plugin", help="dotted path of the CircusPlugin subclass")
    parser.add_argument("--log-level", default=os.environ.get("CIRCUS_PLUGIN_LOGLEVEL", "info"))
    args = parser.parse_args(argv)
    name = os.environ.get(ENV_NAME, args.plugin)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format=f"%(asctime)s plugin:{name}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Until start() installs its own handlers: a SIGTERM while the plugin's module is imported and its
    # class built is a clean stop too (exit 0, as the contract says), not a death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, _stop_now)
    try:
        plugin = build(args.plugin)
    except (ImportError, ValueError, TypeError) as exc:
        # TypeError: the class refused the options (missing or unexpected keyword).
        logging.getLogger("circus_linux.plugins").error("plugin %s: cannot start: %s", name, exc)
        return EXIT_BAD_PLUGIN
    plugin.start()
    return 0


def _stop_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
