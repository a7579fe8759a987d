"""Checkpoints in a DynamoDB table (ECS): one item per shard, created on first use.

Key: ``streamArn`` (hash) and ``shardId`` (range), so one table can serve several streams. The item is
also the shard's lease (``leaseOwner``, ``leaseCounter``) when workers share shards.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from replicator.checkpoint import Checkpoint
from replicator.core.errors import error_code
from replicator.core.shield import complete_before_cancel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from types_aiobotocore_dynamodb import DynamoDBClient


class DynamoDBCheckpointStore:
    """CheckpointStore on a DynamoDB table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        """Bind to a table; created in ``start`` if missing."""
        self._client = client
        self.table = table

    async def start(self) -> None:
        """Create the table (on-demand) if missing and wait until it is active."""
        try:
            await self._client.create_table(
                TableName=self.table,
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
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        for _ in range(600):
            desc = await self._client.describe_table(TableName=self.table)
            if desc["Table"]["TableStatus"] == "ACTIVE":
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"checkpoint table {self.table} did not become ACTIVE")

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of the stream (Query, paginated)."""
        out: dict[str, Checkpoint] = {}
        async for item in stream_items(self._client, self.table, stream_arn):
            cp = _from_item(item)
            out[cp.shard_id] = cp
        return out

    async def save(
        self,
        stream_arn: str,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool = False,
        parent_shard_id: str | None = None,
    ) -> None:
        """Update the shard's item; a cancellation waits for the write's answer (``core.shield``).

        Abandoned in flight, the write could land after the shard's next save (the final checkpoint at
        shutdown) and move the checkpoint back.
        """
        sets = ["shardEnd = :end", "updatedAt = :now"]
        values: dict[str, Any] = {":end": {"BOOL": shard_end}, ":now": {"N": repr(time.time())}}
        if sequence_number is not None:
            sets.append("checkpoint = :seq")
            values[":seq"] = {"S": sequence_number}
        if parent_shard_id is not None:
            sets.append("parentShardId = :parent")
            values[":parent"] = {"S": parent_shard_id}
        await complete_before_cancel(
            self._client.update_item(
                TableName=self.table,
                Key={"streamArn": {"S": stream_arn}, "shardId": {"S": shard_id}},
                UpdateExpression="SET " + ", ".join(sets),
                ExpressionAttributeValues=values,
            )
        )

    async def close(self) -> None:
        """The client belongs to the service's exit stack; nothing to release here."""


def _from_item(item: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        shard_id=item["shardId"]["S"],
        sequence_number=item.get("checkpoint", {}).get("S"),
        shard_end=bool(item.get("shardEnd", {}).get("BOOL", False)),
        updated_at_s=float(item.get("updatedAt", {}).get("N", "0")),
        parent_shard_id=item.get("parentShardId", {}).get("S"),
        owner=item.get("leaseOwner", {}).get("S"),
        lease_counter=int(item.get("leaseCounter", {}).get("N", "0")),
    )


async def stream_items(client: DynamoDBClient, table: str, stream_arn: str) -> AsyncIterator[dict[str, Any]]:
    """Every item of one stream in the checkpoint (and lease) table: a consistent Query, page by page."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "streamArn = :s",
        "ExpressionAttributeValues": {":s": {"S": stream_arn}},
        "ConsistentRead": True,
    }
    while True:
        page = await client.query(**kwargs)
        for item in page.get("Items", []):
            yield dict(item)
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
