"""Loading the configuration: unknown keys refused with a suggestion, errors blamed on their real source."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from replicator.core.config import load_config
from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

GOOD = "source: {region: us-east-1, table: Orders}\ntarget: {region: eu-west-1, table: Orders}\n"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return str(info.value)


def test_unknown_top_level_variable_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    """REPLICATOR_TABEL is no key: refused, naming the variable and the keys it was probably meant as."""
    message = _error(_file(tmp_path, GOOD), {"REPLICATOR_TABEL": "Orders"})
    assert "REPLICATOR_TABEL" in message
    assert "did you mean REPLICATOR_SOURCE__TABLE or REPLICATOR_TARGET__TABLE" in message


def test_unknown_nested_variable_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    """REPLICATOR_TARGET__TABEL suggests REPLICATOR_TARGET__TABLE."""
    message = _error(_file(tmp_path, GOOD), {"REPLICATOR_TARGET__TABEL": "x"})
    assert "REPLICATOR_TARGET__TABEL" in message
    assert "did you mean REPLICATOR_TARGET__TABLE?" in message


def test_variables_that_are_not_config_keys_are_left_alone(tmp_path: Path) -> None:
    """REPLICATOR_CONFIG (the entrypoint's) and REPLICATOR_CACHE_DIR (dev tools) are not config keys."""
    cfg = load_config(_file(tmp_path, GOOD), environ={"REPLICATOR_CONFIG": "/x", "REPLICATOR_CACHE_DIR": "/y"})
    assert cfg.target.table == "Orders"


def test_unknown_yaml_key_suggests_the_close_one(tmp_path: Path) -> None:
    """A misspelt key in the file: did you mean, and the file named."""
    path = _file(tmp_path, GOOD + "targte: {}\n")
    message = _error(path)
    assert f"targte: unknown key; did you mean target? (in {path})" in message


def test_unknown_nested_yaml_key_suggests_the_close_one(tmp_path: Path) -> None:
    """replication.skip_echo suggests replication.skip_echoes."""
    message = _error(_file(tmp_path, GOOD + "replication: {skip_echo: true}\n"))
    assert "replication.skip_echo: unknown key; did you mean replication.skip_echoes?" in message


def test_a_bad_value_from_a_variable_names_the_variable_not_the_file(tmp_path: Path) -> None:
    """The variable that set the value is blamed, not the file."""
    path = _file(tmp_path, GOOD)
    message = _error(path, {"REPLICATOR_TARGET__MAX_CONCURRENT_WRITES": "lots"})
    line = next(ln for ln in message.splitlines() if "target.max_concurrent_writes" in ln)
    assert "from environment variable REPLICATOR_TARGET__MAX_CONCURRENT_WRITES" in line
    assert str(path) not in line


def test_a_bad_value_from_the_file_names_the_file(tmp_path: Path) -> None:
    """A value from the file is blamed on the file."""
    path = _file(tmp_path, GOOD + "metrics: {port: 70000}\n")
    message = _error(path, {"REPLICATOR_TARGET__TABLE": "Other"})
    line = next(ln for ln in message.splitlines() if "metrics.port" in ln)
    assert f"(in {path})" in line


def test_bad_json_in_a_list_variable_names_the_variable() -> None:
    """REPLICATOR_FILTERS is JSON; a parse error names the variable."""
    message = _error(None, {"REPLICATOR_FILTERS": "[x"})
    assert "REPLICATOR_FILTERS" in message
    assert "not valid JSON" in message


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    """No '<unicode string>': the file, line and column of the problem."""
    path = _file(tmp_path, "source: {region: us-east-1\n  table: [\n")
    message = _error(path)
    assert "<unicode string>" not in message
    assert message.startswith(f"{path}:2:")


def test_environment_still_overrides_and_parses_json(tmp_path: Path) -> None:
    """Variables override file keys; lists are JSON, scalars are coerced by the model."""
    cfg = load_config(
        _file(tmp_path, GOOD + "target: {region: eu-west-1, table: Orders, max_concurrent_writes: 8}\n"),
        environ={
            "REPLICATOR_TARGET__TABLE": "Other",
            "replicator_metrics__port": "0",
            "REPLICATOR_FILTERS": '[{"eventName": ["INSERT"]}]',
            "REPLICATOR_FAILURE__ON_FAILURE__DESTINATION": "/tmp/dead.jsonl",  # noqa: S108 - a value only
        },
    )
    assert (cfg.target.table, cfg.target.max_concurrent_writes) == ("Other", 8)
    assert cfg.metrics.port == 0
    assert cfg.filters == [{"eventName": ["INSERT"]}]
    assert cfg.failure.on_failure.destination == "/tmp/dead.jsonl"  # noqa: S108 - a value only


def test_filter_quota_is_a_setting(tmp_path: Path) -> None:
    """Six filters need filters_per_event_source_mapping raised; up to ten are then accepted."""
    six = "filters:\n" + '  - {eventName: ["INSERT"]}\n' * 6
    message = _error(_file(tmp_path, GOOD + six))
    assert "filters_per_event_source_mapping" in message
    cfg = load_config(_file(tmp_path, GOOD + six + "filters_per_event_source_mapping: 10\n"), environ={})
    assert len(cfg.filters) == 6
    assert "filters_per_event_source_mapping" in _error(
        _file(tmp_path, GOOD + six + "filters_per_event_source_mapping: 11\n")
    )


def test_given_environ_replaces_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """environ={} means no variables at all, whatever the process has."""
    monkeypatch.setenv("REPLICATOR_TARGET__TABLE", "FromProcess")
    path = _file(tmp_path, GOOD)
    assert load_config(path, environ={}).target.table == "Orders"
    assert load_config(path).target.table == "FromProcess"
