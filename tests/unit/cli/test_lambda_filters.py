from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest
import yaml
from click.testing import CliRunner

from replicator.cli.main import main
from replicator.pipeline.filters import compile_filters

if TYPE_CHECKING:
    from pathlib import Path

CONFIG = """\
source: {region: us-east-1, table: src}
target: {region: us-west-2, table: dst}
filters:
  - {eventName: [INSERT, MODIFY]}
  - '{"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "tenant#"}]}}}}'
"""


def _event(event_name: str, pk: str) -> dict[str, object]:
    return {"eventName": event_name, "dynamodb": {"Keys": {"pk": {"S": pk}}}}


@pytest.fixture(autouse=True)
def _no_replicator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REPLICATOR_"):
            monkeypatch.delenv(name)


def _run(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["lambda-filters", "--config", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_output_is_filter_criteria_matching_like_the_config(tmp_path: Path) -> None:
    """The JSON is {"Filters": [{"Pattern": <json>}]}; its patterns select the events the config does."""
    code, out, _ = _run(tmp_path, CONFIG)
    assert code == 0
    criteria = json.loads(out)
    assert list(criteria) == ["Filters"]
    patterns = [f["Pattern"] for f in criteria["Filters"]]
    assert all(isinstance(p, str) for p in patterns)
    assert [json.loads(p) for p in patterns] == [
        {"eventName": ["INSERT", "MODIFY"]},
        {"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "tenant#"}]}}}},
    ]
    from_cli = compile_filters(patterns)
    from_config = compile_filters(yaml.safe_load(CONFIG)["filters"])
    for event in (_event("INSERT", "x"), _event("REMOVE", "tenant#1"), _event("REMOVE", "other")):
        assert from_cli.matches(event) == from_config.matches(event)
    assert not from_cli.matches(_event("REMOVE", "other"))
    assert from_cli.matches(_event("REMOVE", "tenant#1"))


def test_yaml_output_is_a_sam_snippet_with_the_same_criteria(tmp_path: Path) -> None:
    """--format yaml gives FilterCriteria for the SAM event, one single-line JSON Pattern per filter."""
    _, as_json, _ = _run(tmp_path, CONFIG)
    code, out, _ = _run(tmp_path, CONFIG, "--format", "yaml")
    assert code == 0
    assert out.startswith("FilterCriteria:\n")
    assert yaml.safe_load(out) == {"FilterCriteria": json.loads(as_json)}
    pattern_lines = [line for line in out.splitlines() if "Pattern:" in line]
    assert len(pattern_lines) == 2


def test_invalid_filter_exits_2_naming_it(tmp_path: Path) -> None:
    """A bad pattern fails like check-config: exit 2 and the filter's index in the message."""
    bad = CONFIG.replace("{eventName: [INSERT, MODIFY]}", "{eventName: [{numeric: [nope]}]}")
    code, out, err = _run(tmp_path, bad)
    assert code == 2
    assert out == ""
    assert "filters[0]" in err


def test_no_filters_prints_empty_criteria_and_a_note(tmp_path: Path) -> None:
    """Without filters the JSON has no patterns, and the YAML is only a comment saying to omit it."""
    plain = CONFIG.split("filters:", maxsplit=1)[0]
    code, out, err = _run(tmp_path, plain)
    assert code == 0
    assert json.loads(out) == {"Filters": []}
    assert "leave FilterCriteria out" in err
    code, out, _ = _run(tmp_path, plain, "--format", "yaml")
    assert code == 0
    assert yaml.safe_load(out) is None
    assert out.startswith("# no filters configured")


def test_subset_mode_prints_no_criteria_so_the_handler_sees_the_deletes(tmp_path: Path) -> None:
    """filter_mode subset: the mapping must not drop the deletes the handler replicates: no patterns, a note."""
    code, out, err = _run(tmp_path, CONFIG + "filter_mode: subset\n")
    assert code == 0
    assert json.loads(out) == {"Filters": []}
    assert "filter_mode subset" in err
    assert "leave FilterCriteria out" in err
