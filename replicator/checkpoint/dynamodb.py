"""Checkpoints in a DynamoDB table (ECS): one item per shard, created on first use.

Key: ``streamArn`` (hash) and ``shardId`` (range), so one table can serve several streams. The item is
also the shard's lease (``leaseOwner``, ``leaseCounter``) when workers share shards.

The sparse index ``live-leases`` (hash ``liveStreamArn``, range ``shardId``) holds only the leases of
shards not yet read to their end: a lease carries ``liveStreamArn`` from its creation until its shard-end
checkpoint removes it, so rebalancing reads open shards, not the stream's history. Tables made before
the index existed get it on the first start of a leased worker (``ensure_live_index``; the worker's role
needs ``dynamodb:UpdateTable``), which also backfills the attribute (``lease_table.py``).

Fan-out positions (``Checkpoint.targets``) are the map attribute ``targets`` (target id to sequence
number), set in the same update as ``checkpoint``; with one target the item has no such attribute.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from replicator.checkpoint import Checkpoint
from replicator.checkpoint.retention import finished_checkpoints_to_delete
from replicator.core.errors import error_code
from replicator.core.shield import complete_before_cancel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeDefinitionTypeDef, GlobalSecondaryIndexTypeDef

log = structlog.get_logger(__name__)

LIVE_INDEX = "live-leases"
LIVE_ATTRIBUTE = "liveStreamArn"
"""Set to the stream ARN on leases whose shard has work left; removed at shard end (sparse index key)."""

_LIVE_INDEX_SPEC: GlobalSecondaryIndexTypeDef = {
    "IndexName": LIVE_INDEX,
    "KeySchema": [
        {"AttributeName": LIVE_ATTRIBUTE, "KeyType": "HASH"},
        {"AttributeName": "shardId", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}
_ATTRIBUTES: list[AttributeDefinitionTypeDef] = [
    {"AttributeName": "streamArn", "AttributeType": "S"},
    {"AttributeName": "shardId", "AttributeType": "S"},
    {"AttributeName": LIVE_ATTRIBUTE, "AttributeType": "S"},
]


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
                AttributeDefinitions=_ATTRIBUTES,
                GlobalSecondaryIndexes=[_LIVE_INDEX_SPEC],
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
        targets: Mapping[str, str] | None = None,
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
        if targets is not None:
            sets.append("targets = :targets")
            values[":targets"] = targets_value(targets)
        # A finished shard leaves the live index (in case leased workers share this table later).
        remove = f" REMOVE {LIVE_ATTRIBUTE}" if shard_end else ""
        await complete_before_cancel(
            self._client.update_item(
                TableName=self.table,
                Key={"streamArn": {"S": stream_arn}, "shardId": {"S": shard_id}},
                UpdateExpression="SET " + ", ".join(sets) + remove,
                ExpressionAttributeValues=values,
            )
        )

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        """Delete finished shards' items nothing can need again (``CheckpointStore``), parents first.

        Each delete is conditional on the item still saying shard end: an item saved since (a shard
        read again by hand) stays.
        """
        checkpoints = await self.load_all(stream_arn)
        deleted = []
        for shard_id in finished_checkpoints_to_delete(
            checkpoints, listed=listed, now_s=now_s, retention_s=retention_s
        ):
            try:
                await self._client.delete_item(
                    TableName=self.table,
                    Key={"streamArn": {"S": stream_arn}, "shardId": {"S": shard_id}},
                    ConditionExpression="shardEnd = :true",
                    ExpressionAttributeValues={":true": {"BOOL": True}},
                )
            except Exception as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                continue
            deleted.append(shard_id)
        return deleted

    async def close(self) -> None:
        """The client belongs to the service's exit stack; nothing to release here."""


async def live_index_status(client: DynamoDBClient, table: str) -> str | None:
    """The live index's status (``ACTIVE``, ``CREATING``...), asking DynamoDB to add it when missing.

    None: the index is missing and could not be added (no ``dynamodb:UpdateTable``, or another index
    change is in progress); rebalancing then reads the whole stream's items, as before the index.
    """
    desc = await client.describe_table(TableName=table)
    for index in desc["Table"].get("GlobalSecondaryIndexes", []):
        if index["IndexName"] == LIVE_INDEX:
            return str(index.get("IndexStatus", "ACTIVE"))
    try:
        await client.update_table(
            TableName=table,
            AttributeDefinitions=_ATTRIBUTES,
            GlobalSecondaryIndexUpdates=[{"Create": {**_LIVE_INDEX_SPEC}}],
        )
    except Exception as exc:  # noqa: BLE001 - without the index the worker works, at the old read cost
        code = error_code(exc)
        if code not in ("ResourceInUseException", "ValidationException"):
            log.warning("live_index_not_created", table=table, error_code=code, error=type(exc).__name__)
            return None
    log.info("live_index_creating", table=table, index=LIVE_INDEX)
    return "CREATING"


def _from_item(item: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        shard_id=item["shardId"]["S"],
        sequence_number=item.get("checkpoint", {}).get("S"),
        shard_end=bool(item.get("shardEnd", {}).get("BOOL", False)),
        updated_at_s=float(item.get("updatedAt", {}).get("N", "0")),
        parent_shard_id=item.get("parentShardId", {}).get("S"),
        owner=item.get("leaseOwner", {}).get("S"),
        lease_counter=int(item.get("leaseCounter", {}).get("N", "0")),
        targets=targets_of(item),
    )


def targets_value(targets: Mapping[str, str]) -> dict[str, Any]:
    """The ``targets`` attribute's value: a map of target id to sequence number."""
    return {"M": {target_id: {"S": seq} for target_id, seq in targets.items()}}


def targets_of(item: Mapping[str, Any]) -> dict[str, str]:
    """An item's per-target positions (empty without fan-out)."""
    return {target_id: value["S"] for target_id, value in item.get("targets", {}).get("M", {}).items()}


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
