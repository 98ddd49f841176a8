"""The line-tracking ini reader: syntax, line numbers, duplicates, key case."""

from circus_linux.config import ini


def test_sections_keys_and_lines():
    text = "# comment\n[circus]\nendpoint = tcp://x:1\n\n[watcher:a]\ncmd: sleep 1\n; other comment\n"
    sections, issues = ini.parse(text, "f.ini")
    assert issues == []
    assert [s.name for s in sections] == ["circus", "watcher:a"]
    assert sections[0].line == 2
    cmd = sections[1].entries["cmd"]
    assert (cmd.value, cmd.file, cmd.line) == ("sleep 1", "f.ini", 6)


def test_continuation_lines_join_with_newline():
    sections, issues = ini.parse("[watcher:a]\ncmd = python\n  -m http.server\nargs = x\n", "f")
    assert issues == []
    assert sections[0].entries["cmd"].value == "python\n-m http.server"
    assert sections[0].entries["args"].value == "x"


def test_hash_is_part_of_value():
    sections, _ = ini.parse("[watcher:a]\ncmd = sh -c 'echo #1'\n", "f")
    assert sections[0].entries["cmd"].value == "sh -c 'echo #1'"


def test_inline_comments_kept_in_values():
    # Circus's StrictConfigParser._read: the first `;` of a value ends it when whitespace precedes it
    text = (
        "[env]\nLANG = C.UTF-8      ; for every watcher\n"
        "[watcher:a]\ncmd = sleep 5   ; short\nnumprocesses = 5\t; tab before\n"
        "args = --x=a;b\nwd = ; not a comment at the start\n"
        "shell_cmd = sh -c 'a; b ; c'\n"
        "long = first ; cut\n  second ; kept on a continuation line\n"
    )
    sections, issues = ini.parse(text, "f")
    assert issues == []
    assert sections[0].entries["LANG"].value == "C.UTF-8"
    values = {k: e.value for k, e in sections[1].entries.items()}
    assert values["cmd"] == "sleep 5"
    assert values["numprocesses"] == "5"
    assert values["args"] == "--x=a;b"  # no whitespace before the `;`
    assert values["wd"] == "; not a comment at the start"
    assert values["shell_cmd"] == "sh -c 'a; b ; c'"  # only the first `;` decides, as in Circus
    assert values["long"] == "first\nsecond ; kept on a continuation line"


def test_empty_quoted_value_is_empty_string():
    sections, _ = ini.parse('[watcher:a]\nargs = ""\ncmd = ""   ; empty\nx = "a"\ny = """"\n', "f")
    values = {k: e.value for k, e in sections[0].entries.items()}
    assert values == {"args": "", "cmd": "", "x": '"a"', "y": '""""'}


def test_keys_lowercased_except_in_env_sections():
    sections, _ = ini.parse("[watcher:a]\nNumProcesses = 2\n[env]\nHome_Dir = x\n[env:a]\nPATH = /bin\n", "f")
    assert list(sections[0].entries) == ["numprocesses"]
    assert list(sections[1].entries) == ["Home_Dir"]
    assert list(sections[2].entries) == ["PATH"]


def test_duplicate_key_in_one_file_is_reported_with_both_lines():
    _, issues = ini.parse("[watcher:a]\ncmd = x\nCMD = y\n", "f")
    assert len(issues) == 1
    assert issues[0].line == 3 and issues[0].key == "cmd" and "first set at line 2" in issues[0].message


def test_repeated_section_header_merges_in_one_file():
    sections, issues = ini.parse("[watcher:a]\ncmd = x\n[circus]\n[watcher:a]\nargs = y\n", "f")
    assert issues == []
    assert [s.name for s in sections] == ["watcher:a", "circus"]
    assert set(sections[0].entries) == {"cmd", "args"}


def test_syntax_errors_collected():
    _, issues = ini.parse("key = before section\n[]\n[watcher:a]\njust words\n", "f")
    assert [i.line for i in issues] == [1, 2, 4]
    assert "before the first key" in issues[0].message
    assert "section name" in issues[1].message
    assert "expected 'key = value'" in issues[2].message


def test_merge_later_file_overrides_and_sections_merge():
    a, _ = ini.parse("[watcher:a]\ncmd = x\nnumprocesses = 1\n", "a")
    b, _ = ini.parse("[watcher:b]\ncmd = z\n[watcher:a]\nnumprocesses = 4\n", "b")
    merged = ini.merge([a, b])
    assert [s.name for s in merged] == ["watcher:a", "watcher:b"]
    assert merged[0].entries["numprocesses"].value == "4"
    assert merged[0].entries["numprocesses"].file == "b"
    assert merged[0].entries["cmd"].file == "a"
