"""diff(old, new): added/removed/scaled/changed watchers, [circus] changes, sockets and plugins."""

import textwrap

from circus_linux.config import diff, loads

BASE = """
[circus]
check_delay = 5
[socket:web]
port = 8000
[socket:old]
port = 8001
[watcher:web]
cmd = srv
numprocesses = 2
[watcher:worker]
cmd = work
[watcher:gone]
cmd = x
[plugin:flapping]
use = circus.plugins.flapping.Flapping
"""


def ld(text):
    return loads(textwrap.dedent(text), "d.ini", environ={})


def test_identical_configs_have_an_empty_diff():
    d = diff(ld(BASE), ld(BASE))
    assert d.empty and d.scaled == {} and d.changed == ()


def test_full_diff():
    new = """
    [circus]
    check_delay = 1
    endpoint = ipc:///run/circus.sock
    [socket:web]
    port = 9000
    [socket:fresh]
    port = 8002
    [watcher:web]
    cmd = srv
    numprocesses = 6
    [watcher:worker]
    cmd = work --fast
    [watcher:new]
    cmd = y
    [plugin:flapping]
    use = circus.plugins.flapping.Flapping
    retry_in = 2
    [plugin:stats]
    use = circus.plugins.statsd.FullStats
    """
    d = diff(ld(BASE), ld(new))
    assert d.added == ("new",) and d.removed == ("gone",)
    assert d.scaled == {"web": (2, 6)}
    assert d.changed == ("worker",)
    assert set(d.circus_changed) == {"check_delay", "endpoint"}
    assert (d.sockets_added, d.sockets_removed, d.sockets_changed) == (("fresh",), ("old",), ("web",))
    assert (d.plugins_added, d.plugins_removed, d.plugins_changed) == (("stats",), (), ("flapping",))
    assert not d.empty


def test_scale_plus_other_change_is_a_change():
    old = ld("[watcher:a]\ncmd = x\nnumprocesses = 1\n")
    new = ld("[watcher:a]\ncmd = x\nnumprocesses = 3\ngraceful_timeout = 1\n")
    d = diff(old, new)
    assert d.changed == ("a",) and d.scaled == {}


def test_env_change_changes_the_watcher():
    old = ld("[watcher:a]\ncmd = x\n[env:a]\nK = 1\n")
    new = ld("[watcher:a]\ncmd = x\n[env:a]\nK = 2\n")
    assert diff(old, new).changed == ("a",)


def test_reordering_and_respelling_is_no_change():
    old = ld("[watcher:a]\ncmd = x\nnumprocesses = 2\nstop_signal = TERM\n[watcher:b]\ncmd = y\n"
             "[socket:s]\nport = 80\nbacklog = 10\n")
    new = ld("[watcher:b]\ncmd = y\n[watcher:a]\nnumprocesses = 02\ncmd = x\nstop_signal = 15\n"
             "[socket:s]\nbacklog = 010\nport = 80\n")
    assert diff(old, new).empty
