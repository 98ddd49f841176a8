"""core/prestart.py: which watchers circusd spawns before its event loop; no processes."""

from __future__ import annotations

import pytest

from circus_linux.config import loads
from circus_linux.core import prestart
from circus_linux.runtime import upgrade


def _plan(text: str, environ: dict[str, str] | None = None) -> tuple[list[str], str]:
    watchers, ended = prestart.plan(loads(text), environ or {})
    return [w.name for w in watchers], ended


def test_plain_watchers_are_prestarted_in_start_order() -> None:
    names, ended = _plan(
        "[watcher:low]\ncmd = /bin/sleep 1\n"
        "[watcher:high]\ncmd = /bin/sleep 1\npriority = 10\nnumprocesses = 3\n"
        "[watcher:mid]\ncmd = /bin/sleep 1\npriority = 5\n"
    )
    assert names == ["high", "mid", "low"]
    assert ended == "every autostart watcher"


def test_circus_warmup_delay_never_applied_prestarts_the_first_watcher_only() -> None:
    text = (
        "[circus]\nwarmup_delay = 2\n[watcher:b]\ncmd = /bin/sleep 1\n[watcher:a]\ncmd = /bin/sleep 1\n"
        "[watcher:c]\ncmd = /bin/sleep 1\nautostart = false\npriority = 9\n"
    )
    assert _plan(text) == (["a"], "[circus] warmup_delay = 2: watcher a starts first")
    # a first watcher that cannot be prestarted leaves none
    names, ended = _plan(text.replace("[watcher:a]\n", "[watcher:a]\nnotify = true\n"))
    assert names == [] and ended.startswith("watcher a:")
    # the delay comes after a first watcher of 0 processes too: nothing after it is prestarted
    names, _ = _plan(text.replace("[watcher:a]\n", "[watcher:a]\nnumprocesses = 0\n"))
    assert names == []


def test_priority_ties_start_in_file_order() -> None:
    # Circus sorts the watchers by name, then stable by priority: ties start in name order, in the
    # prestart as in the arbiter (whose order the prestart's leading run must follow)
    from types import SimpleNamespace

    from circus_linux.runtime.arbiter import _ordered

    text = (
        "[watcher:zeta]\ncmd = /bin/sleep 1\n[watcher:alpha]\ncmd = /bin/sleep 1\n"
        "[watcher:mid]\ncmd = /bin/sleep 1\npriority = 1\n[watcher:beta]\ncmd = /bin/sleep 1\n"
    )
    names, _ = _plan(text)
    assert names == ["mid", "alpha", "beta", "zeta"]
    ordered = _ordered([SimpleNamespace(config=w) for w in loads(text).watchers])
    assert [w.config.name for w in ordered] == names
    stopping = _ordered([SimpleNamespace(config=w) for w in loads(text).watchers], reverse=True)
    assert [w.config.name for w in stopping] == names[::-1]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("hooks.before_spawn = os.getpid\n", "it has hooks"),
        ("use_sockets = true\n", "it uses sockets"),
        ("notify = true\n", "its workers report readiness (notify)"),
        ("warmup_delay = 0.5\n", "it has a warmup_delay"),
        ("stdout_stream.class = FileStream\nstdout_stream.filename = /dev/null\n", "its stdout is captured"),
        ("stderr_stream.class = StdoutStream\n", "its stderr is captured"),
    ],
)
def test_the_first_watcher_that_does_not_qualify_ends_the_run(extra: str, reason: str) -> None:
    names, ended = _plan(
        "[watcher:a]\ncmd = /bin/sleep 1\npriority = 3\n"
        f"[watcher:b]\ncmd = /bin/sleep 1\npriority = 2\n{extra}"
        "[watcher:c]\ncmd = /bin/sleep 1\npriority = 1\n"
    )
    assert names == ["a"]  # c starts after b, so it waits for b's (normal) start too
    assert ended == f"watcher b: {reason}"


def test_a_socket_named_in_cmd_counts_as_using_sockets() -> None:
    names, ended = _plan(
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n"
        "[watcher:w]\ncmd = /bin/server --fd $(circus.sockets.web)\n"
    )
    assert names == [] and ended == "watcher w: it uses sockets"


def test_closed_streams_and_idle_watchers_do_not_end_the_run() -> None:
    names, _ = _plan(
        "[watcher:a]\ncmd = /bin/sleep 1\npriority = 3\nclose_child_stdout = true\n"
        "stdout_stream.class = FileStream\nstdout_stream.filename = /dev/null\n"
        "[watcher:manual]\ncmd = /bin/sleep 1\npriority = 2\nautostart = false\n"
        "hooks.before_start = os.getpid\n"
        "[watcher:none]\ncmd = /bin/sleep 1\npriority = 1\nnumprocesses = 0\n"
        "[watcher:z]\ncmd = /bin/sleep 1\n"
    )
    assert names == ["a", "z"]  # `manual` does not start; `none` has nothing to spawn


@pytest.mark.parametrize(
    "circus",
    [
        "httpd = true\n",
        "disabled_commands = quit\n",
        "curve_secret_key = /nonexistent.key_secret\ncurve_authorized_keys = /nonexistent\n",
    ],
)
def test_nothing_is_prestarted_when_the_control_channel_comes_first(circus: str) -> None:
    cfg = loads(f"[circus]\n{circus}[watcher:a]\ncmd = /bin/sleep 1\n")
    assert prestart.control_first(cfg)
    assert prestart.plan(cfg, {})[0] == []


def test_plugins_come_first_too() -> None:
    cfg = loads("[plugin:tap]\nuse = circus.plugins.statsd.StatsdEmitter\n[watcher:a]\ncmd = /bin/sleep 1\n")
    assert prestart.control_first(cfg)
    names, ended = _plan("[watcher:plugin:x]\ncmd = /bin/sleep 1\n")
    assert names == [] and "control channel" in ended


def test_switched_off_by_the_environment_and_never_during_an_upgrade() -> None:
    text = "[watcher:a]\ncmd = /bin/sleep 1\n"
    assert _plan(text, {prestart.ENV_SWITCH: "0"}) == ([], f"{prestart.ENV_SWITCH}=0")
    assert _plan(text, {prestart.ENV_SWITCH: "1"})[0] == ["a"]
    assert _plan(text, {prestart.UPGRADE_ENV: "7"})[0] == []
    # The name prestart checks is the one runtime/upgrade.py sets (core must not import the runtime).
    assert prestart.UPGRADE_ENV == upgrade.STATE_ENV
