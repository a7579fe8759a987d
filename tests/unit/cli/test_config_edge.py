"""Every command validates filters and transforms when it loads the config, before it opens anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from replicator.cli.main import main

if TYPE_CHECKING:
    from pathlib import Path

# Port 9 (discard) refuses connections: a command that got past loading would fail there instead.
BAD = """\
source: {region: us-east-1, table: src, endpoint_url: "http://127.0.0.1:9"}
target: {region: us-west-2, table: dst, endpoint_url: "http://127.0.0.1:9"}
checkpoint: {backend: sqlite, path: CP}
metrics: {enabled: false}
"""


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        ('filters:\n  - {dynamodb: {NewImage: {n: {N: [{numeric: [">>", 1]}]}}}}\n', "filters[0]"),
        ("transforms:\n  - {type: exclude, attributes: []}\n", "transforms[0]"),
    ],
)
@pytest.mark.parametrize(
    "command", [["status"], ["verify"], ["backfill"], ["redrive", "--dry-run"], ["lambda-filters"]]
)
def test_a_bad_rule_exits_2_naming_it_before_any_connection(
    tmp_path: Path, command: list[str], rules: str, named: str
) -> None:
    """Exit 2 with the filter or transform named, and no checkpoint file created."""
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.replace("CP", str(tmp_path / "cp.db")) + rules)
    result = CliRunner().invoke(main, [*command, "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "cp.db").exists()
