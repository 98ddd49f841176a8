"""loads(): sections to dataclasses, defaults, every validation rule, all errors at once."""

import resource
import signal
import socket
import textwrap

import pytest

from circus_linux.config import MAX, SystemdMode, default_config_path, load, loads
from circus_linux.core.policy import BackoffPolicy, RestartBook
from circus_linux.errors import ConfigError


def ld(text, **kw):
    return loads(textwrap.dedent(text), "test.ini", environ=kw.pop("environ", {}), **kw)


def errors_of(text, environ=None):
    with pytest.raises(ConfigError) as exc:
        loads(textwrap.dedent(text), "test.ini", environ=environ or {})
    return exc.value.issues


def one_error(text):
    issues = errors_of(text)
    assert len(issues) == 1, issues
    return issues[0]


# ------------------------------------------------------------------ talk configs (seed 000)

TALK_FLAPPING = """
[watcher:dummy]
cmd = /chemin/vers/votre/executable $(circus.wid)
numprocesses = 5

[plugin:flapping]
use = circus.plugins.flapping.Flapping
retry_in = 3
max_retry = 2
"""

TALK_SOCKETS = """
[circus]
endpoint = tcp://127.0.0.1:5555
pubsub_endpoint = tcp://127.0.0.1:5556
stats_endpoint = tcp://127.0.0.1:5557

[watcher:web]
cmd = chaussette --fd ${socket:web} server.app
use_sockets = True
numprocesses = 5

[socket:web]
host = 0.0.0.0
port = 8000
"""


def test_talk_flapping_config_loads():
    cfg = ld(TALK_FLAPPING)
    (w,) = cfg.watchers
    assert (w.name, w.numprocesses) == ("dummy", 5)
    assert w.cmd == "/chemin/vers/votre/executable $(circus.wid)"  # wid is rendered at spawn
    (p,) = cfg.plugins
    assert p.name == "flapping"
    assert p.use == "circus_linux.plugins.flapping.Flapping"
    assert p.options == {"retry_in": "3", "max_retry": "2"}
    assert cfg.warnings == ()


def test_talk_sockets_config_loads():
    cfg = ld(TALK_SOCKETS)
    (w,) = cfg.watchers
    assert w.use_sockets is True and w.numprocesses == 5
    assert w.sockets == ("web",)  # referenced as ${socket:web}
    (s,) = cfg.sockets
    assert (s.name, s.host, s.port, s.family, s.type, s.backlog) == (
        "web", "0.0.0.0", 8000, socket.AF_INET, socket.SOCK_STREAM, 2048)
    assert cfg.circus.endpoint == "tcp://127.0.0.1:5555"


def test_default_ini_loads_and_needs_nothing_external():
    cfg = load(default_config_path(), environ={})
    (w,) = cfg.watchers
    assert w.name == "ticker" and w.numprocesses == 3
    assert w.cmd.startswith("/bin/sh -c ")
    assert cfg.sockets == () and cfg.plugins == ()
    assert cfg.warnings == ()


def test_default_ini_max_retry_comment_says_what_the_code_does():
    # the comment said "max_retry attempts before giving up": it is the first start plus max_retry retries
    text = default_config_path().read_text()
    assert "first\n# start and max_retry retries" in text and "6th consecutive failed start" in text, text
    (w,) = load(default_config_path(), environ={}).watchers
    assert w.max_retry == 5
    book = RestartBook(BackoffPolicy(max_retry=w.max_retry))
    verdicts = [book.on_exit(1, lifetime=0.0, now=float(n)) for n in range(1, 7)]
    assert [v.give_up for v in verdicts] == [False] * 5 + [True]  # 5 retries, the 6th failure gives up


# ------------------------------------------------------------------ [circus]

def test_circus_defaults():
    c = ld("[watcher:a]\ncmd = x\n").circus
    assert c.endpoint == "tcp://127.0.0.1:5555"
    assert c.pubsub_endpoint == "tcp://127.0.0.1:5556"
    assert c.stats_endpoint == "tcp://127.0.0.1:5557"
    assert (c.check_delay, c.warmup_delay, c.debug, c.statsd, c.umask) == (5.0, 0.0, False, False, None)


def test_circus_keys_parsed():
    c = ld("""
        [circus]
        check_delay = 2.5
        umask = 027
        loglevel = WARN
        debug = yes
        endpoint_owner = root
        cgroup_root = circus.slice
        httpd = on
        httpd_port = 8081
        pidfile = /run/circusd.pid
        statsd = 1
    """).circus
    assert c.check_delay == 2.5 and c.umask == 0o27 and c.loglevel == "warning" and c.debug
    assert c.endpoint_owner == 0 and c.cgroup_root == "circus.slice" and c.httpd and c.httpd_port == 8081
    assert c.pidfile == "/run/circusd.pid" and c.statsd


def test_unused_and_unknown_circus_keys_warn_not_fail():
    cfg = ld("""
        [circus]
        multicast_endpoint = udp://237.219.251.97:12027
        papa_endpoint = ipc:///tmp/papa
        use_papa = true
        stream_backend = gevent
        statsd_close_outputs = true
        frobnicate = 1
    """)
    assert len(cfg.warnings) == 6
    assert any("multicast_endpoint: accepted but ignored" in w for w in cfg.warnings)
    assert any("frobnicate: unknown [circus] option" in w for w in cfg.warnings)
    assert all(w.startswith("test.ini:") for w in cfg.warnings)


# ------------------------------------------------------------------ [watcher:NAME]

def test_watcher_defaults_are_circus_defaults():
    w = ld("[watcher:a]\ncmd = sleep 10\n").watchers[0]
    assert w.numprocesses == 1 and w.max_retry == 5 and w.graceful_timeout == 30.0
    assert w.max_age == 0 and w.max_age_variance == 30 and w.priority == 0
    assert w.close_child_stdin and not w.close_child_stdout and not w.close_child_stderr
    assert w.respawn and w.autostart and not w.on_demand and not w.singleton
    assert w.stop_signal == signal.SIGTERM and not w.copy_env and not w.shell
    assert not w.notify and w.ready_timeout == 30.0
    assert w.stdout_stream is None and w.hooks == {} and w.rlimits == {} and not w.cgroup.any


def test_watcher_keys_parsed(tmp_path):
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    w = ld(f"""
        [watcher:web]
        cmd = python -m app
        args = --port 80
        numprocesses = 3
        warmup_delay = 0.5
        working_dir = /srv
        shell = true
        uid = root
        gid = 0
        copy_env = true
        copy_path = on
        priority = -2
        max_retry = -1
        graceful_timeout = 2.5
        stop_signal = QUIT
        stop_children = yes
        send_hup = 1
        max_age = 3600
        max_age_variance = 10
        respawn = false
        autostart = no
        on_demand = true
        close_child_stdin = false
        close_child_stderr = true
        virtualenv = {venv}
        virtualenv_py_ver = 3.9
        notify = true
        ready_timeout = 5
        umask = 002
    """).watchers[0]
    assert w.args == "--port 80" and w.numprocesses == 3 and w.warmup_delay == 0.5
    assert w.working_dir == "/srv" and w.shell and w.uid == 0 and w.gid == 0
    assert w.copy_env and w.copy_path and w.priority == -2 and w.max_retry == -1
    assert w.graceful_timeout == 2.5 and w.stop_signal == signal.SIGQUIT
    assert w.stop_children and w.send_hup and w.max_age == 3600 and w.max_age_variance == 10
    assert not w.respawn and not w.autostart and w.on_demand
    assert not w.close_child_stdin and w.close_child_stderr and w.virtualenv == str(venv)
    assert w.notify and w.ready_timeout == 5.0 and w.umask == 0o2
    assert w.raw["stop_signal"] == "QUIT"


def test_watcher_keys_case_insensitive():
    w = ld("[watcher:a]\nCMD = x\nNumProcesses = 4\n").watchers[0]
    assert w.cmd == "x" and w.numprocesses == 4


def test_rlimits_streams_hooks():
    w = ld("""
        [watcher:a]
        cmd = x
        rlimit_nofile = 4096
        rlimit_core = unlimited
        stdout_stream.class = FileStream
        stdout_stream.filename = /var/log/a.log
        stdout_stream.max_bytes = 1024
        stdout_stream.backup_count = 3
        stderr_stream.class = circus.stream.TimedRotatingFileStream
        stderr_stream.filename = /var/log/a.err
        stderr_stream.rotate_when = midnight
        stderr_stream.utc = true
        hooks.before_start = mypkg.hooks.check
        hooks.after_stop = mypkg.hooks.cleanup, true
    """).watchers[0]
    assert w.rlimits == {"nofile": 4096, "core": resource.RLIM_INFINITY}
    assert w.rlimit_resources[resource.RLIMIT_NOFILE] == (4096, 4096)
    assert w.stdout_stream.cls == "FileStream"
    assert w.stdout_stream.options == {"filename": "/var/log/a.log", "max_bytes": 1024, "backup_count": 3}
    assert w.stderr_stream.cls == "TimedRotatingFileStream"
    assert w.stderr_stream.options["utc"] is True
    assert w.hooks["before_start"].target == "mypkg.hooks.check"
    assert not w.hooks["before_start"].ignore_error
    assert w.hooks["after_stop"].ignore_error
    assert w.extra == {}


def test_stream_class_defaults_and_custom_class():
    w = ld("""
        [watcher:a]
        cmd = x
        stdout_stream.filename = /tmp/x.log
        stderr_stream.class = mypkg.streams.Mine
        stderr_stream.color = red
    """).watchers[0]
    assert w.stdout_stream.cls == "FileStream"
    assert w.stderr_stream.cls == "mypkg.streams.Mine" and w.stderr_stream.options == {"color": "red"}


def test_cgroup_limits():
    w = ld("""
        [watcher:a]
        cmd = x
        memory_max = 256M
        memory_high = max
        memory_swap_max = 0
        cpu_max = 50%
        cpu_weight = 200
        io_weight = 10000
        pids_max = max
    """).watchers[0]
    cg = w.cgroup
    assert cg.memory_max == 256 << 20 and cg.memory_high == MAX and cg.memory_swap_max == 0
    assert cg.cpu_max == (50_000, 100_000) and cg.cpu_weight == 200 and cg.io_weight == 10000
    assert cg.pids_max == "max" and cg.any


def test_cpu_max_unbounded_is_a_config_error():
    # review cgroups #8: a quota above the kernel's 2^44-1 us passed --check, then circusd died on EINVAL
    # naming a cgroup file; now the loader names the file, line, section and key
    top = (1 << 44) - 1
    assert ld(f"[watcher:a]\ncmd = x\ncpu_max = {top} 1000\n").watchers[0].cgroup.cpu_max == (top, 1000)
    for value in ("100000000000000000 100000", f"{top + 1} 1000000", "1000000000000%", "9" * 400 + "%",
                  "50000 1000001", "50000 999"):
        issue = one_error(f"[watcher:a]\ncmd = x\ncpu_max = {value}\n")
        assert (issue.file, issue.line, issue.section, issue.key) == ("test.ini", 3, "watcher:a", "cpu_max")
        assert "between" in issue.message, issue.message


def test_bad_stats_endpoint_is_a_config_error():
    # review cgroups #9: `stats_endpoint = tcp://127.0.0.1:notaport` passed --check, and circusd then ran
    # without a stats stream, a log line naming neither file nor key; every endpoint is now checked
    for key in ("endpoint", "pubsub_endpoint", "stats_endpoint"):
        for value in ("tcp://127.0.0.1:notaport", "tcp://127.0.0.1", "tcp://:5555", "tcp://127.0.0.1:0",
                      "tcp://127.0.0.1:65536", "127.0.0.1:5555", "ipc://", "htp://127.0.0.1:5555"):
            issue = one_error(f"[circus]\n{key} = {value}\n")
            assert (issue.file, issue.line, issue.section, issue.key) == ("test.ini", 2, "circus", key), issue
            assert "expected" in issue.message and repr(value) in issue.message, issue.message
    cfg = ld("[circus]\nendpoint = tcp://127.0.0.1:*\npubsub_endpoint = tcp://10.0.0.1;127.0.0.1:5556\n"
             "stats_endpoint =\n")
    assert cfg.circus.endpoint == "tcp://127.0.0.1:*"
    assert cfg.circus.pubsub_endpoint == "tcp://10.0.0.1;127.0.0.1:5556"
    assert cfg.circus.stats_endpoint == "tcp://127.0.0.1:5557"  # empty: Circus's default


def test_unknown_watcher_keys_kept_in_extra():
    cfg = ld("[watcher:a]\ncmd = x\nflapping.max_retry = 4\nnumproceses = 3\n")
    w = cfg.watchers[0]
    assert w.extra == {"flapping.max_retry": "4", "numproceses": "3"}
    assert w.raw["flapping.max_retry"] == "4"
    # the dotted one is a plugin option; the bare one is likely a typo and gets a warning
    assert len(cfg.warnings) == 1 and "numproceses" in cfg.warnings[0]


def test_singleton():
    assert ld("[watcher:a]\ncmd = x\nsingleton = true\n").watchers[0].numprocesses == 1
    issue = one_error("[watcher:a]\ncmd = x\nsingleton = true\nnumprocesses = 3\n")
    assert issue.key == "numprocesses" and "singleton" in issue.message and issue.line == 4


def test_sockets_key_and_references_in_order_without_duplicates():
    cfg = ld("""
        [socket:a]
        port = 1
        [socket:B]
        path = /run/b.sock
        [socket:c]
        port = 3
        [watcher:w]
        cmd = srv --fd $(circus.sockets.c) --fd ((circus.sockets.b))
        args = --again ${socket:a}
        sockets = a, c
        stdin_socket = c
    """)
    w = cfg.watchers[0]
    assert w.sockets == ("a", "c", "B")
    assert w.stdin_socket == "c"
    assert cfg.socket("B").family == socket.AF_UNIX


def test_use_sockets_without_named_socket_warns():
    cfg = ld("[socket:s]\nport = 1\n[watcher:w]\ncmd = x\nuse_sockets = true\n")
    (warning,) = cfg.warnings
    assert "use_sockets" in warning and "gets none" in warning
    assert cfg.watchers[0].sockets == ()


def test_unknown_socket_reference_is_an_error():
    issues = errors_of("""
        [watcher:w]
        cmd = srv --fd $(circus.sockets.nope)
        sockets = other
        stdin_socket = third
    """)
    assert {i.key for i in issues} == {"cmd", "sockets", "stdin_socket"}
    assert all("socket" in i.message for i in issues)


# ------------------------------------------------------------------ [socket:NAME]

def test_socket_options():
    cfg = ld("""
        [socket:u]
        path = /run/x.sock
        umask = 0117
        owner = root
        group = root
        backlog = 10
        replace = true
        blocking = yes
        systemd = only
        [socket:t]
        host = ::1
        port = 0
        family = AF_INET6
        type = SOCK_DGRAM
        proto = udp
        so_reuseport = true
        interface = lo
        systemd = true
    """)
    u, t = cfg.sockets
    assert u.family == socket.AF_UNIX and u.umask == 0o117  # octal, unlike Circus's decimal
    assert u.owner == 0 and u.group == 0 and u.backlog == 10 and u.replace and u.blocking
    assert u.systemd is SystemdMode.ONLY
    assert t.family == socket.AF_INET6 and t.type == socket.SOCK_DGRAM and t.proto == socket.IPPROTO_UDP
    assert t.so_reuseport and t.interface == "lo" and t.systemd is SystemdMode.AUTO and t.port == 0
    assert ld("[socket:s]\nport=1\n").sockets[0].systemd is SystemdMode.NO


def test_socket_validation():
    issues = errors_of("""
        [socket:nopath]
        family = AF_UNIX
        [socket:noport]
        host = 127.0.0.1
        [socket:both]
        path = /run/x
        port = 80
        [socket:badumask]
        port = 1
        umask = 999
        [socket:systemd]
        port = 1
        systemd = sometimes
    """)
    by_section = {i.section: i for i in issues}
    assert "unix socket without path" in by_section["socket:nopath"].message
    assert "without port" in by_section["socket:noport"].message
    assert by_section["socket:both"].key == "port"
    assert "octal" in by_section["socket:badumask"].message
    assert "'only'" in by_section["socket:systemd"].message
    assert len(issues) == 5


# ------------------------------------------------------------------ [plugin:NAME]

def test_plugin_needs_use():
    issue = one_error("[plugin:p]\nretry_in = 3\n")
    assert (issue.section, issue.key) == ("plugin:p", "use") and "plugin without use" in issue.message


def test_plugin_custom_class_and_options_keep_priority_like_keys():
    p = ld("[plugin:p]\nuse = my.plugins.Thing\npriority = 3\nautostart = false\n").plugins[0]
    assert p.use == "my.plugins.Thing" and p.options == {"priority": "3", "autostart": "false"}


def test_plugin_use_must_be_dotted():
    assert "dotted Python name" in one_error("[plugin:p]\nuse = not a class\n").message


def test_plugin_name_collision_is_a_config_error():
    # review plugins #13: [watcher:plugin:X] and [plugin:X] both made the watcher plugin:X; one vanished
    issue = one_error("""
        [watcher:plugin:Flap]
        cmd = sleep 1000
        [plugin:flap]
        use = circus.plugins.flapping.Flapping
    """)
    assert (issue.file, issue.line, issue.section, issue.key) == ("test.ini", 4, "plugin:flap", None)
    assert "[watcher:plugin:Flap] (test.ini:2)" in issue.message and "duplicate watcher name" in issue.message
    # a watcher named plugin:Y beside [plugin:X] is fine
    cfg = ld("[watcher:plugin:y]\ncmd = x\n[plugin:x]\nuse = circus.plugins.flapping.Flapping\n")
    assert [w.name for w in cfg.watchers] == ["plugin:y"] and [p.name for p in cfg.plugins] == ["x"]


def test_bad_plugin_config_errors_bundled_options_checked_at_load():
    # review plugins #10: `retry_in = abc` passed --check and failed in the plugin process, unnamed
    issues = errors_of("""
        [plugin:flap]
        use = circus.plugins.flapping.Flapping
        retry_in = abc
        attempts = 3
        [plugin:dog]
        use = circus_linux.plugins.watchdog.WatchDog
        port = 16x4
        watchers_regex = (
        watchers_stop_signal = SIGNOPE
        [plugin:mine]
        use = my.plugins.Thing
        retry_in = abc
        active = maybe
    """)
    got = {(i.section, i.key): (i.line, i.message) for i in issues}
    assert got[("plugin:flap", "retry_in")] == (4, "expected a number, got 'abc'")
    assert got[("plugin:dog", "port")][1] == "expected an integer, got '16x4'"
    assert "regular expression" in got[("plugin:dog", "watchers_regex")][1]
    assert "signal" in got[("plugin:dog", "watchers_stop_signal")][1]
    # a plugin we do not ship keeps its options as free-form text; `active` is circusd's own, always checked
    assert "boolean" in got[("plugin:mine", "active")][1]
    assert len(issues) == 5, issues


def test_bad_plugin_config_errors_import_targets_recorded_with_their_place():
    # the plugin classes and hook functions circusd resolves before it starts (cli/circusd.check_imports)
    cfg = ld("""
        [watcher:w]
        cmd = x
        hooks.before_start = pkg.mod.fn, true
        [plugin:p]
        use = circus.plugins.flapping.Flapping
        [plugin:c]
        cmd = /bin/true
    """)
    assert [(t.kind, t.target, t.file, t.line, t.section, t.key) for t in cfg.imports] == [
        ("hook", "pkg.mod.fn", "test.ini", 4, "watcher:w", "hooks.before_start"),
        ("plugin", "circus_linux.plugins.flapping.Flapping", "test.ini", 6, "plugin:p", "use"),
    ]


# ------------------------------------------------------------------ errors

def test_error_names_file_line_section_key_and_expectation():
    issue = one_error("[watcher:a]\ncmd = x\nnumprocesses = abc\n")
    assert (issue.file, issue.line, issue.section, issue.key) == ("test.ini", 3, "watcher:a", "numprocesses")
    assert issue.message == "expected an integer >= 0, got 'abc'"
    assert str(issue) == "test.ini:3 [watcher:a] numprocesses: expected an integer >= 0, got 'abc'"


def test_every_error_is_collected_at_once():
    issues = errors_of("""
        [circus]
        umask = 9
        check_delay = soon
        [watcher:a]
        numprocesses = -1
        stop_signal = SIGNOPE
        respawn = perhaps
        graceful_timeout = x
        rlimit_bogus = 1
        rlimit_nofile = many
        hooks.before_lunch = a.b
        hooks.before_start = notdotted
        uid = no-such-user-xyz
        gid = no-such-group-xyz
        memory_max = lots
        cpu_max = 5 apples
        cpu_weight = 0
        io_weight = 10001
        pids_max = -1
        stdout_stream.class = NoSuchStream
        stdout_stream.max_bytes = big
        cmd = x
        cmd = y
        [watcher:b]
        priority = 1
        [socket:s]
        family = AF_UNIX
        [plugin:p]
        x = 1
        [bogus]
        a = 1
        [watcher:]
        [env:]
    """)
    keys = [(i.section, i.key) for i in issues]
    expected = [
        ("circus", "umask"), ("circus", "check_delay"),
        ("watcher:a", "numprocesses"), ("watcher:a", "stop_signal"), ("watcher:a", "respawn"),
        ("watcher:a", "graceful_timeout"), ("watcher:a", "rlimit_bogus"), ("watcher:a", "rlimit_nofile"),
        ("watcher:a", "hooks.before_lunch"), ("watcher:a", "hooks.before_start"), ("watcher:a", "uid"),
        ("watcher:a", "gid"), ("watcher:a", "memory_max"), ("watcher:a", "cpu_max"),
        ("watcher:a", "cpu_weight"), ("watcher:a", "io_weight"), ("watcher:a", "pids_max"),
        ("watcher:a", "stdout_stream.class"), ("watcher:a", "stdout_stream.max_bytes"), ("watcher:a", "cmd"),
        ("watcher:b", "cmd"), ("socket:s", "path"), ("plugin:p", "use"), ("bogus", None), ("watcher:", None),
        ("env:", None),
    ]
    assert sorted(keys, key=str) == sorted(expected, key=str)
    assert all(i.line is not None for i in issues)
    assert all(i.file == "test.ini" for i in issues)


def test_missing_cmd():
    issue = one_error("[watcher:a]\nnumprocesses = 2\n")
    assert (issue.section, issue.key, issue.line) == ("watcher:a", "cmd", 1)
    assert "missing cmd" in issue.message
    assert "missing cmd" in one_error("[watcher:a]\ncmd =\n").message


def test_unknown_section_names():
    issue = one_error("[watcher:a]\ncmd = x\n[Watcher:b]\ncmd = y\n")
    assert issue.section == "Watcher:b" and "unknown section" in issue.message and issue.line == 3


def test_duplicate_watcher_names_case_insensitive():
    issue = one_error("[watcher:web]\ncmd = x\n[watcher:WEB]\ncmd = y\n")
    assert "duplicate watcher name" in issue.message


def test_unreadable_main_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path / "missing.ini")
    (issue,) = exc.value.issues
    assert issue.file.endswith("missing.ini") and "cannot read" in issue.message


def test_watchers_keep_file_order():
    cfg = ld("[watcher:z]\ncmd=x\n[watcher:a]\ncmd=y\n[watcher:m]\ncmd=z\n")
    assert [w.name for w in cfg.watchers] == ["z", "a", "m"]
    assert cfg.watcher("a").cmd == "y" and cfg.watcher("nope") is None


def test_inline_comments_readme_tour_passes_check(tmp_path, capsys):
    # The README's "Configuration tour" comments its values with ` ; ...`: it must load as written
    # (config loading only: its chaussette cmd is not installed here).
    import pathlib
    import re

    from circus_linux.cli.circusd import main

    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    block = re.search(r"## Configuration tour.*?```ini\n(.*?)```", readme.read_text(), re.S)
    assert block is not None, "README.md has no ini block under 'Configuration tour'"
    path = tmp_path / "tour.ini"
    path.write_text(block.group(1))
    assert main(["--check", str(path)]) == 0, capsys.readouterr().err
    cfg = load(path, environ={})
    web = cfg.watchers[0]
    assert (web.numprocesses, web.graceful_timeout, web.max_retry) == (5, 30.0, 5)
    assert web.env["LANG"] == "C.UTF-8"
    assert cfg.circus.pubsub_endpoint == "tcp://127.0.0.1:5556"


def test_empty_quoted_value_is_empty_string():
    cfg = ld('[env]\nX = ""\n[watcher:a]\ncmd = sleep 5\nargs = ""\n')
    assert cfg.watchers[0].args is None  # no extra empty argv element
    assert cfg.watchers[0].env["X"] == ""


def test_rlimit_empty_means_unlimited():
    w = ld("[watcher:a]\ncmd = sleep 1\nrlimit_core =\n").watchers[0]
    assert w.rlimits == {"core": resource.RLIM_INFINITY}


def test_copy_path_without_copy_env_is_an_error():
    # Circus's Watcher: "copy_env and copy_path must have the same value"
    issue = one_error("[watcher:a]\ncmd = x\ncopy_path = true\n")
    assert (issue.file, issue.section, issue.key, issue.line) == ("test.ini", "watcher:a", "copy_path", 3)
    assert "copy_env" in issue.message
    assert ld("[watcher:a]\ncmd = x\ncopy_path = true\ncopy_env = true\n").watchers[0].copy_path


def test_virtualenv_without_site_packages_is_an_error(tmp_path):
    # Circus's load_virtualenv: "<venv>/lib/python<X.Y>/site-packages does not exist"
    issue = one_error(f"[watcher:a]\ncmd = x\nvirtualenv = {tmp_path}\n")
    assert (issue.section, issue.key, issue.line) == ("watcher:a", "virtualenv", 3)
    assert f"{tmp_path}/lib/python" in issue.message and "site-packages" in issue.message
    (tmp_path / "lib" / "pypy3.10" / "site-packages").mkdir(parents=True)
    w = ld(f"[watcher:a]\ncmd = x\nvirtualenv = {tmp_path}\nvirtualenv_py_ver = 3.10\n").watchers[0]
    assert w.virtualenv_py_ver == "3.10"
