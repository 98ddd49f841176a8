"""[env] rules: scope, precedence ([env] first, then matching [env:...] sections in file order), expansion."""

import textwrap

from circus_linux.config import loads


def ld(text, environ=None):
    return loads(textwrap.dedent(text), "env.ini", environ=environ or {})


def test_global_env_applies_to_every_watcher_and_keys_keep_case():
    cfg = ld("""
        [env]
        MyVar = 1
        [watcher:a]
        cmd = x
        [watcher:b]
        cmd = y
    """)
    assert cfg.env == {"MyVar": "1"}
    assert all(w.env == {"MyVar": "1"} for w in cfg.watchers)


def test_env_sections_for_lists_and_globs():
    cfg = ld("""
        [watcher:web1]
        cmd = x
        [watcher:web2]
        cmd = x
        [watcher:worker]
        cmd = x
        [env:web*]
        ROLE = web
        [env:web2,worker]
        EXTRA = yes
    """)
    assert cfg.watcher("web1").env == {"ROLE": "web"}
    assert cfg.watcher("web2").env == {"ROLE": "web", "EXTRA": "yes"}
    assert cfg.watcher("worker").env == {"EXTRA": "yes"}
    assert cfg.env == {}


def test_env_exact_name_beats_later_glob_no_more():
    # Circus: [env] is the base, then each matching [env:...] updates it in file order (later wins),
    # an exact name no stronger than a glob
    cfg = ld("""
        [watcher:web]
        cmd = x
        [env:web]
        LEVEL = exact
        EXACT = e
        [env:w*]
        LEVEL = pattern
        PAT = p
        [env]
        LEVEL = global
        G = g
    """)
    assert cfg.watcher("web").env == {"LEVEL": "pattern", "EXACT": "e", "PAT": "p", "G": "g"}
    cfg = ld("[watcher:web]\ncmd = x\n[env:w*]\nX = glob-first\n[env:web]\nX = exact-later\n")
    assert cfg.watcher("web").env == {"X": "exact-later"}


def test_later_section_of_same_rank_wins():
    cfg = ld("""
        [watcher:web]
        cmd = x
        [env:w*]
        V = first
        [env:*b]
        V = second
    """)
    assert cfg.watcher("web").env["V"] == "second"


def test_matching_is_case_insensitive():
    cfg = ld("[watcher:Web]\ncmd = x\n[env:web]\nA = 1\n")
    assert cfg.watcher("Web").env == {"A": "1"}


def test_dollar_var_expansion_from_environ_and_earlier_keys():
    cfg = ld("""
        [env]
        BASE = /opt/app
        PATH = $BASE/bin:${PATH}
        KEEP = $UNKNOWN_VAR and ${ALSO_UNKNOWN}
        FROM_CIRCUS = $(circus.env.BASE)-$(circus.env.USER)
        [env:a]
        LIB = ${BASE}/lib
        [watcher:a]
        cmd = x
    """, environ={"PATH": "/usr/bin", "BASE": "ignored: earlier key wins", "USER": "me"})
    env = cfg.watcher("a").env
    assert env["PATH"] == "/opt/app/bin:/usr/bin"
    assert env["KEEP"] == "$UNKNOWN_VAR and ${ALSO_UNKNOWN}"
    assert env["LIB"] == "/opt/app/lib"
    assert env["FROM_CIRCUS"] == "/opt/app-me"


def test_circus_env_substitution_in_every_section():
    cfg = ld("""
        [env]
        PORT = 8000
        APP = demo
        [env:w]
        APP = special
        [circus]
        pidfile = /run/$(circus.env.APP).pid
        [socket:s]
        port = $(circus.env.PORT)
        [watcher:w]
        cmd = run $(circus.env.APP) ((circus.env.port)) $(circus.env.HOME) $(circus.env.NOPE) $(circus.wid)
        [plugin:p]
        use = a.b
        tag = $(circus.env.APP)
    """, environ={"HOME": "/root"})
    assert cfg.circus.pidfile == "/run/demo.pid"
    assert cfg.sockets[0].port == 8000
    # a watcher sees its own merged env; unknown keys stay for the spawn-time render
    assert cfg.watchers[0].cmd == "run special 8000 /root $(circus.env.NOPE) $(circus.wid)"
    assert cfg.watchers[0].raw["cmd"] == cfg.watchers[0].cmd
    assert cfg.plugins[0].options["tag"] == "demo"


def test_env_section_matching_nothing_warns():
    cfg = ld("[watcher:a]\ncmd = x\n[env:ghost]\nA = 1\n")
    (warning,) = cfg.warnings
    assert "[env:ghost]" in warning and "matches no watcher" in warning


def test_environ_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("CIRCUS_TEST_MARKER", "here")
    cfg = loads("[env]\nX = $CIRCUS_TEST_MARKER\n[watcher:a]\ncmd = x\n")
    assert cfg.env["X"] == "here"
