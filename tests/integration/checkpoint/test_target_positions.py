"""Per-target positions (fan-out) in the DynamoDB checkpoint table and its leases, on DynamoDB Local."""

from __future__ import annotations

from typing import TYPE_CHECKING

from support import ddb_client

from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.leases import LeasedCheckpointStore, LeaseManager
from replicator.core.config import LeaseConfig
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2026-01-01T00:00:00.000"


async def test_store_and_lease_keep_target_positions_one_target_none(
    region_a: DynamoDBLocal, unique_name: Callable[[str], str]
) -> None:
    """The map is written with the checkpoint (plain and leased), read back; a one-target save adds none."""
    table = unique_name("cp")
    async with ddb_client(region_a) as client:
        store = DynamoDBCheckpointStore(client, table)
        await store.start()
        await store.save(ARN, "s0", "5")
        item = (await client.get_item(TableName=table, Key={"streamArn": {"S": ARN}, "shardId": {"S": "s0"}}))["Item"]
        assert "targets" not in item
        await store.save(ARN, "s0", "5", targets={"eu": "7", "ap": "5"})
        assert (await store.load_all(ARN))["s0"].targets == {"eu": "7", "ap": "5"}

        manager = LeaseManager(client, table, stream_arn=ARN, worker_id="w1", cfg=LeaseConfig(enabled=True))
        shard = Shard("s1", None, "1")
        tree = ShardTree()
        tree.update([shard])
        await manager.ensure_leases([shard])
        assert await manager.rebalance(tree) == ["s1"]
        leased = LeasedCheckpointStore(manager)
        await leased.save(ARN, "s1", "3", targets={"eu": "9", "ap": "3"})
        checkpoints = await leased.load_all(ARN)
        assert checkpoints["s1"].targets == {"eu": "9", "ap": "3"}
        assert checkpoints["s1"].sequence_number == "3"
        assert checkpoints["s1"].owner == "w1"
