"""Lease lifecycle on DynamoDB Local: the live-lease index, an older table's migration, cleanup after retention."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from support import ddb_client

from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.leases import LeaseManager
from replicator.core.config import LeaseConfig
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator_dev.local.dynamodb_local import DynamoDBLocal
    from types_aiobotocore_dynamodb import DynamoDBClient

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2026-01-01T00:00:00.000"
RETENTION_S = 2.0
"""Accelerated retention (``leases.finished_retention_s``): the stream's 24 h in two seconds."""


def _manager(client: DynamoDBClient, table: str, worker: str) -> LeaseManager:
    cfg = LeaseConfig(enabled=True, finished_retention_s=RETENTION_S, cleanup_interval_s=0.01)
    return LeaseManager(client, table, stream_arn=ARN, worker_id=worker, cfg=cfg)


def _tree(*shards: Shard) -> ShardTree:
    tree = ShardTree()
    tree.update(shards)
    tree.prune(s.shard_id for s in shards)
    return tree


async def _stream_keys(client: DynamoDBClient, table: str) -> set[str]:
    page = await client.query(
        TableName=table,
        KeyConditionExpression="streamArn = :s",
        ExpressionAttributeValues={":s": {"S": ARN}},
        ConsistentRead=True,
    )
    return {item["shardId"]["S"] for item in page["Items"]}


async def _until(check: Callable[[], Any], what: str) -> None:
    """Wait on an outcome (GSI propagation, retention passing), not on a fixed delay."""
    deadline = time.monotonic() + 60
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_rollover_chain_on_dynamodb_local_reads_live_leases_and_deletes_the_finished_parent(
    region_a: DynamoDBLocal, unique_name: Callable[[str], str]
) -> None:
    """The worker's table has the live index; the ended parent leaves it and is deleted after retention."""
    table = unique_name("leases")
    async with ddb_client(region_a) as client:
        await DynamoDBCheckpointStore(client, table).start()
        a = _manager(client, table, "A")
        await a.prepare()
        assert a.table.use_index
        p, c = Shard("p", None, "1", "9"), Shard("c", "p", "10")
        tree = _tree(p, c)
        await a.ensure_leases(tree.shards.values())

        async def took(shard_id: str) -> bool:
            return shard_id in await a.rebalance(tree) or shard_id in a.held()

        await _until(lambda: took("p"), "the parent's lease was never taken")
        await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
        await _until(lambda: took("c"), "the child's lease was never taken")
        assert set(a.table.items) == {"c"}  # the finished parent is no longer read

        tree = _tree(c)  # the stream trimmed the parent

        async def deleted() -> bool:
            await a.cleanup_if_due(tree)
            return "p" not in await _stream_keys(client, table)

        started = time.time()
        await _until(deleted, "the finished parent's lease was never deleted")
        assert time.time() - started >= RETENTION_S / 2  # not at the first sweep: retention had to pass
        assert await _stream_keys(client, table) == {"c"}


async def test_a_table_made_before_the_live_index_gets_it_and_its_open_leases_are_taken(
    region_a: DynamoDBLocal, unique_name: Callable[[str], str]
) -> None:
    """Migration: an index-less checkpoint table gains the index (UpdateTable) and a backfilled live key."""
    table = unique_name("oldleases")
    async with ddb_client(region_a) as client:
        await client.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "streamArn", "KeyType": "HASH"},
                {"AttributeName": "shardId", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "streamArn", "AttributeType": "S"},
                {"AttributeName": "shardId", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        key = {"streamArn": {"S": ARN}}
        await client.put_item(
            TableName=table,
            Item={**key, "shardId": {"S": "old"}, "shardEnd": {"BOOL": True}, "leaseCounter": {"N": "3"}},
        )
        await client.put_item(
            TableName=table,
            Item={**key, "shardId": {"S": "open"}, "parentShardId": {"S": "old"}, "leaseCounter": {"N": "1"}},
        )
        a = _manager(client, table, "A")
        await a.prepare()
        desc = await client.describe_table(TableName=table)
        assert [i["IndexName"] for i in desc["Table"].get("GlobalSecondaryIndexes", [])] == ["live-leases"]
        tree = _tree(Shard("old", None, "1", "5"), Shard("open", "old", "6"))

        async def taken() -> bool:
            await a.cleanup_if_due(tree)  # re-checks the index until ACTIVE
            await a.rebalance(tree)
            return a.held() == {"open"} and a.table.use_index

        # The old lease has no owner: free at once, once the index (built by DynamoDB) serves it.
        await _until(taken, "the open lease of the migrated table was never taken from the live index")
