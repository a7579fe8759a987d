"""Review of the target/targets configuration: environment overrides and round trips."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml

from replicator.core.config import Config, load_config
from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

SOURCE = {"region": "us-east-1", "table": "Orders"}


def _file(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_env_override_of_target_table_with_a_one_entry_targets_file(tmp_path: Path) -> None:
    """REPLICATOR_TARGET__TABLE with a file listing one target under targets: overrides that target's table."""
    path = _file(tmp_path, {"source": SOURCE, "targets": [{"region": "eu-west-1", "table": "Orders"}]})
    cfg = load_config(path, {"REPLICATOR_TARGET__TABLE": "Other"})
    assert cfg.target.table == "Other"
    assert cfg.target.region == "eu-west-1"


def test_model_dump_round_trip_with_two_targets() -> None:
    """A validated two-target Config dumped and validated again is the same configuration."""
    cfg = Config(
        source=SOURCE,  # type: ignore[arg-type]
        targets=[
            {"name": "eu", "region": "eu-west-1", "table": "Orders"},
            {"region": "ap-southeast-2", "table": "Orders2"},
        ],  # type: ignore[list-item]
    )
    again = Config(**cfg.model_dump())
    assert again.targets == cfg.targets
    assert again.target == cfg.targets[0]


def test_env_override_of_target_table_with_a_two_entry_targets_file_names_the_conflict(tmp_path: Path) -> None:
    """REPLICATOR_TARGET__TABLE with two targets in the file: refused with a message naming targets."""
    path = _file(
        tmp_path,
        {
            "source": SOURCE,
            "targets": [{"region": "eu-west-1", "table": "Orders"}, {"region": "ap-south-1", "table": "Orders"}],
        },
    )
    with pytest.raises(ConfigError, match="targets"):
        load_config(path, {"REPLICATOR_TARGET__TABLE": "Other"})
