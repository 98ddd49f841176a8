"""[circus] loggerconfig: the loader checks the file circusd will apply (name, existence, syntax)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circus_linux.config import loads
from circus_linux.config.loggerconfig import has_yaml
from circus_linux.errors import ConfigError

INI = "[loggers]\nkeys = root\n[handlers]\nkeys = h\n[formatters]\nkeys =\n"


def _issue(value: str) -> str:
    with pytest.raises(ConfigError) as exc:
        loads(f"[circus]\nloggerconfig = {value}\n", "c.ini", environ={})
    (issue,) = exc.value.issues
    assert (issue.file, issue.section, issue.key, issue.line) == ("c.ini", "circus", "loggerconfig", 2)
    return issue.message


def test_loggerconfig_ignored_missing_file_is_an_error(tmp_path: Path) -> None:
    assert "cannot read the logging config" in _issue(f"{tmp_path}/missing.json")
    assert "No such file or directory" in _issue(f"{tmp_path}/missing.ini")


def test_loggerconfig_ignored_bad_name_or_syntax_is_an_error(tmp_path: Path) -> None:
    assert "*.ini, *.json or *.yaml" in _issue(f"{tmp_path}/log.conf")
    (tmp_path / "bad.json").write_text("{not json")
    assert "not valid JSON" in _issue(f"{tmp_path}/bad.json")
    (tmp_path / "list.json").write_text("[]")
    assert "expected a JSON object" in _issue(f"{tmp_path}/list.json")
    (tmp_path / "half.ini").write_text("[loggers]\nkeys = root\n")
    assert "needs [handlers], [formatters]" in _issue(f"{tmp_path}/half.ini")


def test_loggerconfig_ignored_valid_files_and_default_load(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_text(json.dumps({"version": 1}))
    (tmp_path / "log.ini").write_text(INI)
    for value in (f"{tmp_path}/log.json", f"{tmp_path}/log.ini", "default"):
        assert loads(f"[circus]\nloggerconfig = {value}\n", "c.ini", environ={}).circus.loggerconfig == value


def test_loggerconfig_ignored_yaml_needs_pyyaml(tmp_path: Path) -> None:
    (tmp_path / "log.yaml").write_text("version: 1\n")
    if has_yaml():
        cfg = loads(f"[circus]\nloggerconfig = {tmp_path}/log.yaml\n", "c.ini", environ={})
        assert cfg.circus.loggerconfig == f"{tmp_path}/log.yaml"
    else:
        assert "needs PyYAML: it is not installed" in _issue(f"{tmp_path}/log.yaml")
