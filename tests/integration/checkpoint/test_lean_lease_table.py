"""The lease table's hot calls on the lean transport (``checkpoint.lean_requests``), against DynamoDB Local."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import get_session

from replicator.aws.clients import open_checkpoint_client
from replicator.aws.lean import LeanDynamoDB
from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.leases import LeaseManager
from replicator.core.config import Config, LeaseConfig
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator_dev.local.dynamodb_local import DynamoDBLocal
    from types_aiobotocore_dynamodb import DynamoDBClient

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2026-01-01T00:00:00.000"


def _config(ddb: DynamoDBLocal, table: str, *, lean: bool) -> Config:
    return Config(
        source={"region": "us-east-1", "table": "src", "endpoint_url": ddb.endpoint_url},
        target={"region": "us-west-2", "table": "dst", "endpoint_url": ddb.endpoint_url},
        checkpoint={"backend": "dynamodb", "table": table, "lean_requests": lean},
        leases={"enabled": True},
    )


def _manager(client: DynamoDBClient, table: str, worker: str) -> LeaseManager:
    cfg = LeaseConfig(enabled=True, failover_time_s=10.0)
    return LeaseManager(client, table, stream_arn=ARN, worker_id=worker, cfg=cfg)


async def _until_held(manager: LeaseManager, tree: ShardTree, shard_ids: set[str]) -> None:
    """Rebalance until the live index (eventually consistent) lets the manager take ``shard_ids``."""
    deadline = time.monotonic() + 60
    while not shard_ids <= manager.held():
        assert time.monotonic() < deadline, f"never took {shard_ids - manager.held()}"
        await manager.rebalance(tree)
        await asyncio.sleep(0.1)


async def _protocol(client: DynamoDBClient, other: DynamoDBClient, table: str) -> dict[str, Any]:
    """Create, take, checkpoint, renew, refuse a second owner, release: the lease table as a worker uses it."""
    await DynamoDBCheckpointStore(client, table).start()
    a, b = _manager(client, table, "A"), _manager(other, table, "B")
    await a.prepare()
    await b.prepare()
    p, c = Shard("p", None, "1", "9"), Shard("c", "p", "10")
    tree = ShardTree()
    tree.update([p, c])
    await a.ensure_leases(tree.shards.values())
    await _until_held(a, tree, {"p"})
    await a.checkpoint("p", "5", shard_end=False, parent_shard_id=None)
    await a.renew_all()
    await b.refresh()
    assert await b.rebalance(tree) == [], "A holds p and c waits for it: B takes nothing"
    await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    await _until_held(a, tree, {"c"})
    await a.checkpoint("c", "12", shard_end=False, parent_shard_id="p")
    await a.release_all()
    page = await other.query(
        TableName=table,
        KeyConditionExpression="streamArn = :s",
        ExpressionAttributeValues={":s": {"S": ARN}},
        ConsistentRead=True,
    )
    return {
        item["shardId"]["S"]: {
            "checkpoint": item.get("checkpoint", {}).get("S"),
            "shardEnd": item.get("shardEnd", {}).get("BOOL", False),
            "owner": item.get("leaseOwner", {}).get("S"),
        }
        for item in page["Items"]
    }


@pytest.mark.parametrize("lean", [True, False])
async def test_the_lease_protocol_sends_its_writes_and_live_reads_by_the_lean_path_when_on(
    region_a: DynamoDBLocal,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    lean: bool,  # noqa: FBT001 - a parameter
) -> None:
    """Same outcome both ways; with ``lean_requests`` the writes and the live-lease Query skip botocore."""
    sent: collections.Counter[str] = collections.Counter()
    call = LeanDynamoDB._call

    async def spy(self: LeanDynamoDB, operation: str, params: Any) -> dict[str, Any]:
        sent[operation] += 1
        return await call(self, operation, params)

    monkeypatch.setattr(LeanDynamoDB, "_call", spy)
    table = unique_name("leases")
    cfg = _config(region_a, table, lean=lean)
    async with contextlib.AsyncExitStack() as stack:
        client = await open_checkpoint_client(stack, cfg)
        other = await stack.enter_async_context(
            get_session().create_client("dynamodb", region_name="us-east-1", endpoint_url=region_a.endpoint_url)
        )
        state = await _protocol(client, other, table)
    assert state == {
        "p": {"checkpoint": "9", "shardEnd": True, "owner": "A"},  # a finished lease is not held, so not released
        "c": {"checkpoint": "12", "shardEnd": False, "owner": None},
    }
    if lean:
        assert sent["PutItem"] >= 2, sent  # p's and c's lease items
        assert sent["UpdateItem"] >= 6, sent  # takes, checkpoints, renewals, releases
        assert sent["Query"] >= 1, sent  # the live-lease read of each rebalance
    else:
        assert not sent, sent
