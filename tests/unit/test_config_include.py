"""include / include_dir: relative globs, override order, section merging, missing files, cycles."""

import pytest

from circus_linux.config import load, loads
from circus_linux.errors import ConfigError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_include_globs_relative_to_including_file_and_override(tmp_path, monkeypatch):
    main = write(tmp_path / "circus.ini",
                 "[circus]\ninclude = conf.d/*.ini\n[watcher:a]\ncmd = x\nnumprocesses = 1\n")
    write(tmp_path / "conf.d" / "10-a.ini", "[watcher:a]\nnumprocesses = 2\n")
    write(tmp_path / "conf.d" / "20-a.ini", "[watcher:a]\nnumprocesses = 3\n[watcher:b]\ncmd = y\n")
    monkeypatch.chdir("/")  # relative to the file, not to the cwd
    cfg = load(main, environ={})
    assert [w.name for w in cfg.watchers] == ["a", "b"]
    a = cfg.watcher("a")
    assert a is not None
    assert a.numprocesses == 3 and a.cmd == "x"
    assert len(cfg.files) == 3 and cfg.files[0] == str(main)


def test_include_dir_and_nested_includes(tmp_path):
    main = write(tmp_path / "main.ini", "[circus]\ninclude_dir = d\n")
    write(tmp_path / "d" / "one.ini", "[circus]\ninclude = ../more/two.ini\n[watcher:one]\ncmd = x\n")
    write(tmp_path / "d" / "ignored.txt", "[watcher:nope]\ncmd = x\n")
    write(tmp_path / "more" / "two.ini", "[watcher:two]\ncmd = y\n")
    cfg = load(main, environ={})
    assert [w.name for w in cfg.watchers] == ["one", "two"]


def test_include_dir_glob_refused(tmp_path):
    # Circus globs os.path.join(include_dir, '*.ini'): include_dir may name several directories by a glob
    main = write(tmp_path / "main.ini", "[circus]\ninclude_dir = conf*.d\n")
    write(tmp_path / "conf1.d" / "w.ini", "[watcher:w1]\ncmd = x\n")
    write(tmp_path / "conf2.d" / "w.ini", "[watcher:w2]\ncmd = y\n")
    write(tmp_path / "conf3.d" / "notes.txt", "")
    cfg = load(main, environ={})
    assert [w.name for w in cfg.watchers] == ["w1", "w2"]
    assert cfg.warnings == ()
    write(main, "[circus]\ninclude_dir = nothing*.d\n")
    cfg = load(main, environ={})
    assert len(cfg.warnings) == 1 and "matches no *.ini file" in cfg.warnings[0]


def test_missing_literal_include_is_an_error_glob_matching_nothing_a_warning(tmp_path):
    main = write(tmp_path / "main.ini", "[watcher:a]\ncmd = x\n[circus]\ninclude = nothing/*.ini\n")
    cfg = load(main, environ={})
    assert len(cfg.warnings) == 1 and "matches no file" in cfg.warnings[0]
    write(main, "[watcher:a]\ncmd = x\n[circus]\ninclude = missing.ini\ninclude_dir = nodir\n")
    with pytest.raises(ConfigError) as exc:
        load(main, environ={})
    issues = exc.value.issues
    assert [(i.key, i.line) for i in issues] == [("include", 4), ("include_dir", 5)]
    assert "missing.ini" in issues[0].message and issues[0].file == str(main)


def test_include_cycle_detected_and_reported(tmp_path):
    a = write(tmp_path / "a.ini", "[circus]\ninclude = b.ini\n[watcher:w]\ncmd = x\n")
    write(tmp_path / "b.ini", "[circus]\ninclude = a.ini\n")
    with pytest.raises(ConfigError) as exc:
        load(a, environ={})
    (issue,) = exc.value.issues
    assert "include cycle" in issue.message and issue.file.endswith("b.ini") and issue.line == 2
    assert "a.ini -> " in issue.message


def test_glob_matching_a_file_being_read_is_skipped_with_a_warning(tmp_path):
    a = write(tmp_path / "a.ini", "[circus]\ninclude = *.ini\n[watcher:w]\ncmd = x\n")
    write(tmp_path / "b.ini", "[watcher:v]\ncmd = y\n")
    cfg = load(a, environ={})
    assert [w.name for w in cfg.watchers] == ["w", "v"]
    (warning,) = cfg.warnings
    assert "include cycle" in warning and "skipped" in warning


def test_literal_self_include_is_a_cycle(tmp_path):
    a = write(tmp_path / "a.ini", "[circus]\ninclude = a.ini\n[watcher:w]\ncmd = x\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load(a, environ={})


def test_errors_in_included_files_name_that_file(tmp_path):
    main = write(tmp_path / "main.ini", "[circus]\ninclude = bad.ini\n[watcher:a]\ncmd = x\n")
    bad = write(tmp_path / "bad.ini", "\n[watcher:a]\nnumprocesses = many\n")
    with pytest.raises(ConfigError) as exc:
        load(main, environ={})
    (issue,) = exc.value.issues
    assert (issue.file, issue.line, issue.key) == (str(bad), 3, "numprocesses")


def test_unreadable_include(tmp_path):
    main = write(tmp_path / "main.ini", "[circus]\ninclude = bin.ini\n")
    (tmp_path / "bin.ini").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read included file"):
        load(main, environ={})


def test_loads_resolves_relative_includes_from_cwd(tmp_path, monkeypatch):
    write(tmp_path / "w.ini", "[watcher:w]\ncmd = x\n")
    monkeypatch.chdir(tmp_path)
    cfg = loads("[circus]\ninclude = w.ini\n", environ={})
    assert cfg.watchers[0].name == "w"
