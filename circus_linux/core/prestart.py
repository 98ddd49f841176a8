"""Which watchers circusd spawns before its event loop exists (runtime/prestart.py does it); pure.

A watcher qualifies when its start needs nothing the event loop, the control channel or the arbiter
provides: no hooks (they run before and after spawns), no sockets (bound by the arbiter), no readiness
protocol (the notify server), no captured output (the stream hub's pipes and sinks), no warmup delay
between spawns. Watchers start one after the other in priority order (ties by name, core/order.py), each
once the previous one is up, so only the leading run of qualifying watchers in that order is prestarted:
the first autostart watcher that does not qualify ends it (a watcher that does not autostart is skipped,
as the start skips it). With a `[circus] warmup_delay`, the arbiter pauses between two watchers' starts,
so the run is the first autostart watcher at most.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circus_linux.config.model import PLUGIN_WATCHER_PREFIX
from circus_linux.core.order import start_key

# `CIRCUS_LINUX_PRESTART=0` in circusd's environment turns prestarting off.
ENV_SWITCH = "CIRCUS_LINUX_PRESTART"
# Set by an in-place upgrade (runtime/upgrade.py STATE_ENV): the workers are adopted, never spawned anew.
UPGRADE_ENV = "CIRCUS_LINUX_UPGRADE_FD"


def control_first(cfg: Any) -> bool:
    """Whether the control channel must be up before any watcher starts: plugins subscribe to it before
    the other watchers start, the dashboard's metrics count every spawn from the first one, and a CURVE
    key or a disabled_commands list is checked (circusd exits 2 on a bad one) before anything is spawned."""
    circus = cfg.circus
    if any(getattr(circus, key, None) for key in ("curve_secret_key", "disabled_commands", "httpd")):
        return True
    if getattr(cfg, "plugins", ()):
        return True
    return any(w.name.startswith(PLUGIN_WATCHER_PREFIX) for w in cfg.watchers)


def why_not(w: Any) -> str | None:
    """Why watcher config `w` cannot be prestarted, or None when it can."""
    if getattr(w, "hooks", None):
        return "it has hooks"
    if w.sockets or w.use_sockets or w.stdin_socket:
        return "it uses sockets"
    if w.notify:
        return "its workers report readiness (notify)"
    if w.on_demand:
        return "it starts on demand"
    if w.warmup_delay:
        return "it has a warmup_delay"
    for kind in ("stdout", "stderr"):
        if getattr(w, f"{kind}_stream", None) is not None and not getattr(w, f"close_child_{kind}", False):
            return f"its {kind} is captured"
    return None


def plan(cfg: Any, environ: Mapping[str, str]) -> tuple[list[Any], str]:
    """(watcher configs to prestart in start order, why the run ends there); the list may be empty."""
    if environ.get(ENV_SWITCH, "").strip().lower() in ("0", "no", "false", "off"):
        return [], f"{ENV_SWITCH}={environ[ENV_SWITCH]}"
    if UPGRADE_ENV in environ:
        return [], "in-place upgrade: the workers are adopted"
    if control_first(cfg):
        return [], "the control channel comes first (plugins, httpd, CURVE or disabled_commands)"
    # The arbiter's start order: the bigger priority first, ties by name.
    ordered = sorted(cfg.watchers, key=start_key)
    out: list[Any] = []
    for w in ordered:
        if not w.autostart:
            continue
        reason = why_not(w)
        if reason is not None:
            return out, f"watcher {w.name}: {reason}"
        if w.numprocesses > 0:
            out.append(w)
        if getattr(cfg.circus, "warmup_delay", 0):
            # The arbiter waits [circus] warmup_delay between two watchers' starts: only the first starts
            # at once, so only the first may be prestarted.
            return out, f"[circus] warmup_delay = {cfg.circus.warmup_delay:g}: watcher {w.name} starts first"
    return out, "every autostart watcher"
