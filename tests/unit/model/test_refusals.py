"""The configurations the checker shows cannot converge are refused at start-up, naming what to set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from replicator.cli.main import main
from replicator.core.config import Config
from replicator.core.errors import RecordRejectedError
from replicator.core.records import from_lambda_event
from replicator.pipeline.stages import Pipeline

if TYPE_CHECKING:
    from pathlib import Path

BASE: dict[str, Any] = {
    "source": {"region": "us-east-1", "table": "src"},
    "target": {"region": "us-west-2", "table": "dst"},
    "metrics": {"enabled": False},
}
TS = {"timestamp_attribute": "updatedAt"}


@pytest.mark.parametrize(
    "transform",
    [
        {"type": "exclude", "attributes": ["updatedAt"]},
        {"type": "include", "attributes": ["a"]},
        {"type": "rename", "attributes": {"updatedAt": "modified"}},
    ],
)
def test_a_transform_removing_the_timestamp_attribute_is_refused(transform: dict[str, Any]) -> None:
    """Item 2: include/exclude/rename that lose timestamp_attribute fail validation naming the entry."""
    with pytest.raises(ValueError, match=r"transforms\[0\].*replication.timestamp_attribute"):
        Config(**BASE, replication=TS, transforms=[transform])


def test_a_transform_keeping_the_timestamp_attribute_is_accepted() -> None:
    """Including the timestamp attribute, or excluding another one, is fine."""
    Config(**BASE, replication=TS, transforms=[{"type": "include", "attributes": ["updatedAt", "a"]}])
    Config(**BASE, replication=TS, transforms=[{"type": "exclude", "attributes": ["b"]}])


def test_a_plugin_dropping_the_timestamp_attribute_rejects_the_record() -> None:
    """Item 2, plugins: a record whose transformed item lost the source item's timestamp is a record error."""
    cfg = Config(
        **BASE, replication=TS, transforms=[{"type": "plugin", "function": "plugins_for_tests:drop_updated_at"}]
    )
    event = {
        "eventName": "INSERT",
        "dynamodb": {
            "Keys": {"pk": {"S": "k"}},
            "NewImage": {"pk": {"S": "k"}, "updatedAt": {"N": "5"}},
            "SequenceNumber": "1",
            "ApproximateCreationDateTime": 1.0,
        },
    }
    with pytest.raises(RecordRejectedError, match="timestamp_attribute"):
        Pipeline.from_config(cfg).run(from_lambda_event(event, shard_id="s"))


def test_tombstones_shorter_than_the_replay_window_are_refused() -> None:
    """Item 3: tombstone_ttl_s must exceed replay_window_s (14 days: SQS's longest retention) with tombstones."""
    with pytest.raises(ValueError, match=r"tombstone_ttl_s .* must exceed replay_window_s"):
        Config(**BASE, replication={"tombstone_ttl_s": 7 * 24 * 3600})
    with pytest.raises(ValueError, match="replay_window_s"):
        Config(**BASE, replication={"replay_window_s": 365 * 24 * 3600})
    assert Config(**BASE).replication.tombstone_ttl_s > Config(**BASE).replication.replay_window_s
    Config(**BASE, replication={"tombstone_ttl_s": 3600, "deletes": "delete"})


def test_check_config_refuses_with_the_reason(tmp_path: Path) -> None:
    """``check-config`` exits 2 and says what to set (``run`` loads the config the same way)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "source: {region: us-east-1, table: src}\ntarget: {region: us-west-2, table: dst}\n"
        "replication: {timestamp_attribute: updatedAt}\n"
        "transforms:\n  - {type: exclude, attributes: [updatedAt]}\n"
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "timestamp_attribute" in result.output


def test_source_tombstones_without_a_timestamp_attribute_is_refused(tmp_path: Path) -> None:
    """Item 1: the active-active setting needs timestamp_attribute; ``check-config`` says what to set."""
    with pytest.raises(ValueError, match=r"replication.source_tombstones .* needs replication.timestamp_attribute"):
        Config(**BASE, replication={"source_tombstones": True})
    Config(**BASE, replication={"source_tombstones": True, **TS})
    path = tmp_path / "c.yaml"
    path.write_text(
        "source: {region: us-east-1, table: src}\ntarget: {region: us-west-2, table: dst}\n"
        "replication: {source_tombstones: true}\n"
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "set replication.timestamp_attribute" in result.output
