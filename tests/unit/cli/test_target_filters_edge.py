"""Every command compiles each target's own filters and transforms at the edge, as it does the top-level ones."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from replicator.cli.main import main

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def _no_replicator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REPLICATOR_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "own",
    [
        "filters: [{eventName: [{numeric: [nope]}]}]",
        "transforms: [{type: nonsense}]",
    ],
)
def test_a_bad_filter_or_transform_of_one_target_exits_2(tmp_path: Path, own: str) -> None:
    """check-config refuses a target's own bad filter or transform (exit 2), naming it, before anything runs."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "source: {region: us-east-1, table: src}\n"
        "targets:\n"
        "  - {name: eu, region: eu-west-1, table: tbl}\n"
        f"  - {{name: ap, region: ap-south-1, table: tbl, {own}}}\n"
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert f"targets[1] (ap): {own.split(':', maxsplit=1)[0]}[0]" in result.stderr
