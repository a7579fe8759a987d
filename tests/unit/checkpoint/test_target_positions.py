"""Per-target positions (fan-out) in every checkpoint backend: stored with the shard's, absent with one target."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
from fake_lease_table import FakeLeaseTable

from replicator.checkpoint import Checkpoint
from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.leases import LeasedCheckpointStore, LeaseManager
from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import LeaseConfig
from replicator.core.errors import LeaseLostError
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:1:table/T/stream/1"
OLD_SCHEMA = """
CREATE TABLE checkpoints (
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT,
    shard_end INTEGER NOT NULL DEFAULT 0,
    parent_shard_id TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (stream_arn, shard_id)
)
"""


async def test_sqlite_stores_target_positions_beside_the_shards(tmp_path: Path) -> None:
    """Saved together, read back together; a save without targets leaves them as they were."""
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    await store.start()
    await store.save(ARN, "s0", "5", targets={"eu": "9", "ap": "5"})
    await store.save(ARN, "s0", "5", parent_shard_id="p0")
    cp = (await store.load_all(ARN))["s0"]
    assert (cp.sequence_number, cp.parent_shard_id) == ("5", "p0")
    assert cp.targets == {"eu": "9", "ap": "5"}
    assert cp.target_position("eu") == "9"
    assert cp.target_position("new") == "5"
    await store.close()


def test_a_position_behind_the_shards_is_left_from_an_earlier_run() -> None:
    """A one-target run moved the shard on without the map: a stale, lower position resumes at the shard's."""
    cp = Checkpoint("s0", "120", shard_end=False, updated_at_s=0.0, targets={"eu": "99", "ap": "130"})
    assert cp.target_position("eu") == "120"
    assert cp.target_position("ap") == "130"
    assert Checkpoint("s0", None, shard_end=False, updated_at_s=0.0).target_position("eu") is None


async def test_sqlite_one_target_stores_nothing_new_and_old_files_read_both_ways(tmp_path: Path) -> None:
    """A file from before fan-out opens (the column is added), and the old SELECT still reads the table."""
    path = tmp_path / "cp.db"
    conn = sqlite3.connect(path)
    conn.execute(OLD_SCHEMA)
    conn.execute("INSERT INTO checkpoints VALUES (?, 's0', '3', 0, NULL, 1.0)", (ARN,))
    conn.commit()
    conn.close()
    store = SqliteCheckpointStore(path)
    await store.start()
    assert (await store.load_all(ARN))["s0"] == Checkpoint("s0", "3", shard_end=False, updated_at_s=1.0)
    await store.save(ARN, "s1", "4")
    await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT targets FROM checkpoints WHERE shard_id = 's1'").fetchone() == (None,)
    old_select = "SELECT shard_id, sequence_number, shard_end, updated_at, parent_shard_id FROM checkpoints"
    assert len(conn.execute(old_select).fetchall()) == 2
    conn.close()


class _Recorder:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    async def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.updates.append(kwargs)
        return {}


async def test_dynamodb_store_sets_the_targets_map_only_with_fan_out() -> None:
    """One target: the update names no targets attribute; fan-out: a map in the same update."""
    client = _Recorder()
    store = DynamoDBCheckpointStore(client, "cp")  # type: ignore[arg-type]
    await store.save(ARN, "s0", "5")
    await store.save(ARN, "s0", "5", targets={"eu": "7", "ap": "5"})
    assert "targets" not in client.updates[0]["UpdateExpression"]
    assert "targets = :targets" in client.updates[1]["UpdateExpression"]
    assert "checkpoint = :seq" in client.updates[1]["UpdateExpression"]
    assert client.updates[1]["ExpressionAttributeValues"][":targets"] == {"M": {"eu": {"S": "7"}, "ap": {"S": "5"}}}


async def test_lease_checkpoint_writes_targets_under_the_lease_condition() -> None:
    """The lease's fenced checkpoint carries the per-target map; a fresh read of the lease returns it."""
    table = FakeLeaseTable()
    manager = LeaseManager(table, "cp", stream_arn=ARN, worker_id="w1", cfg=LeaseConfig(enabled=True))  # type: ignore[arg-type]
    shard = Shard("s0", None, "1")
    tree = ShardTree()
    tree.update([shard])
    await manager.ensure_leases([shard])
    assert await manager.rebalance(tree) == ["s0"]
    store = LeasedCheckpointStore(manager)
    await store.save(ARN, "s0", "5", targets={"eu": "8", "ap": "5"})
    assert (await store.load_all(ARN))["s0"].targets == {"eu": "8", "ap": "5"}
    other = LeaseManager(table, "cp", stream_arn=ARN, worker_id="w2", cfg=LeaseConfig(enabled=True))  # type: ignore[arg-type]
    await other.refresh()
    assert other.checkpoints()["s0"].targets == {"eu": "8", "ap": "5"}
    with pytest.raises(LeaseLostError):
        await LeasedCheckpointStore(other).save(ARN, "s0", "9", targets={"eu": "9", "ap": "9"})
    assert table.items["s0"]["targets"] == {"M": {"eu": {"S": "8"}, "ap": {"S": "5"}}}
