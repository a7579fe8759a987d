"""``lambda-filters`` with ``targets:``: the mapping lets through every record that any target wants."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from replicator.cli.main import main
from replicator.pipeline.filters import compile_filters

if TYPE_CHECKING:
    from pathlib import Path

HEAD = """\
source: {region: us-east-1, table: src}
filters:
  - {eventName: [INSERT]}
"""


@pytest.fixture(autouse=True)
def _no_replicator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REPLICATOR_"):
            monkeypatch.delenv(name)


def _run(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["lambda-filters", "--config", str(path)])
    return result.exit_code, result.stdout, result.stderr


def _event(event_name: str, pk: str) -> dict[str, object]:
    return {"eventName": event_name, "dynamodb": {"Keys": {"pk": {"S": pk}}}}


def test_the_criteria_are_the_or_of_every_targets_effective_filters(tmp_path: Path) -> None:
    """One target has its own filter, the other the top-level one: both patterns, once each."""
    config = HEAD + (
        "targets:\n"
        "  - {name: eu, region: eu-west-1, table: tbl, filters: [{dynamodb: {Keys: {pk: {S: [{prefix: 'eu#'}]}}}}]}\n"
        "  - {name: ap, region: ap-south-1, table: tbl}\n"
        "  - {name: us, region: us-west-2, table: tbl}\n"
    )
    code, out, _ = _run(tmp_path, config)
    assert code == 0
    patterns = [f["Pattern"] for f in json.loads(out)["Filters"]]
    assert [json.loads(p) for p in patterns] == [
        {"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "eu#"}]}}}},
        {"eventName": ["INSERT"]},
    ]
    criteria = compile_filters(patterns)
    assert criteria.matches(_event("REMOVE", "eu#1"))
    assert criteria.matches(_event("INSERT", "other"))
    assert not criteria.matches(_event("REMOVE", "other"))


def test_a_target_without_filters_means_no_criteria(tmp_path: Path) -> None:
    """A target with ``filters: []`` wants every record: the mapping must not filter at all."""
    config = HEAD + (
        "targets:\n"
        "  - {name: eu, region: eu-west-1, table: tbl}\n"
        "  - {name: ap, region: ap-south-1, table: tbl, filters: []}\n"
    )
    code, out, err = _run(tmp_path, config)
    assert code == 0
    assert json.loads(out) == {"Filters": []}
    assert "ap" in err
    assert "leave FilterCriteria out" in err


def test_more_patterns_than_the_quota_together_means_no_criteria_and_a_warning(tmp_path: Path) -> None:
    """Six distinct patterns over two targets exceed the mapping's five: no criteria; the function filters."""
    targets = "".join(
        f"  - {{name: t{i}, region: r{i}, table: tbl, filters: "
        f"[{{eventName: [INSERT]}}, {{dynamodb: {{Keys: {{pk: {{S: [a{i}]}}}}}}}},"
        f" {{dynamodb: {{Keys: {{pk: {{S: [b{i}]}}}}}}}}]}}\n"
        for i in range(3)
    )
    code, out, err = _run(tmp_path, HEAD + "targets:\n" + targets)
    assert code == 0
    assert json.loads(out) == {"Filters": []}
    assert "7 distinct patterns" in err
    assert "filters_per_event_source_mapping" in err
