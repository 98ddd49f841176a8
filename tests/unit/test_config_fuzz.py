"""Random ini-ish text: loads() either returns a Config or raises ConfigError, never anything else."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circus_linux.config import Config, loads
from circus_linux.errors import ConfigError

HEADERS = ["[circus]", "[watcher:a]", "[watcher:b]", "[socket:s]", "[plugin:p]", "[env]", "[env:a*]",
           "[env:]", "[watcher:]", "[junk]", "[", "]", "[]"]
KEYS = ["cmd", "args", "numprocesses", "stop_signal", "umask", "port", "path", "family", "use", "sockets",
        "include", "include_dir", "singleton", "cpu_max", "memory_max", "pids_max", "rlimit_nofile",
        "hooks.before_start", "stdout_stream.class", "stdout_stream.filename", "systemd", "uid", "gid",
        "stdin_socket", "X", "PATH", "flapping.max_retry", "cpu_weight", "type", "backlog", "endpoint_owner"]
VALUES = ["", "1", "-1", "0", "abc", "max", "50%", "10 100000", "SIGTERM", "99999", "true", "only",
          "a.b.c", "a.b, true", "s", "$(circus.sockets.s)", "${socket:s}", "$(circus.env.X)", "$PATH",
          "${X}", "/run/x.sock", "AF_UNIX", "022", "64M", "*.none", "FileStream", "root", "((circus.wid))",
          "circus.plugins.flapping.Flapping", "no-such-user-xyz"]

line = st.one_of(
    st.sampled_from(HEADERS),
    st.tuples(st.sampled_from(KEYS), st.sampled_from(["=", ":", " = "]), st.sampled_from(VALUES))
    .map("".join),
    st.sampled_from(["", "# c", "; c", "   continued", "garbage line"]),
    st.text(max_size=40),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, max_size=25).map("\n".join))
def test_structured_random_configs_only_raise_config_error(text):
    try:
        cfg = loads(text, "/nonexistent-dir/fuzz.ini", environ={"PATH": "/bin"})
    except ConfigError as exc:
        assert exc.issues, "a ConfigError always carries at least one issue"
        assert all(i.file for i in exc.issues)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_config_error(text):
    try:
        loads(text, "/nonexistent-dir/fuzz.ini", environ={})
    except ConfigError as exc:
        assert exc.issues
