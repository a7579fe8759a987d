"""An in-memory lease/checkpoint table with DynamoDB's conditional-write semantics (fast, no server).

Just the calls, conditions and updates the DynamoDB checkpoint store and LeaseManager use.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from replicator.core.config import Config


class ConditionFailedError(Exception):
    """What botocore raises for a failed condition."""

    response = {"Error": {"Code": "ConditionalCheckFailedException"}}  # noqa: RUF012 - botocore's shape


class FakeLeaseTable:
    """Items by shard id (one stream), conditions evaluated as DynamoDB would."""

    def __init__(self) -> None:
        """Start empty."""
        self.items: dict[str, dict[str, Any]] = {}
        self.queries: list[dict[str, Any]] = []
        self.has_live_index = True
        """False: a table made before the live index (DescribeTable lists no index until UpdateTable)."""
        self.index_updates = 0

    async def create_table(self, **_: Any) -> None:
        """CreateTable: the table always exists."""

    async def describe_table(self, **_: Any) -> dict[str, Any]:
        """DescribeTable: always active, with the live index once it exists."""
        indexes = [{"IndexName": "live-leases", "IndexStatus": "ACTIVE"}] if self.has_live_index else []
        return {"Table": {"TableStatus": "ACTIVE", "GlobalSecondaryIndexes": indexes}}

    async def update_table(self, **_: Any) -> None:
        """UpdateTable: adds the live index (active at once)."""
        self.index_updates += 1
        self.has_live_index = True

    async def query(self, **kwargs: Any) -> dict[str, Any]:
        """Query: every item, one page; on the live index only items with its key (it cannot be consistent)."""
        self.queries.append(kwargs)
        if kwargs.get("IndexName") is not None:
            assert not kwargs.get("ConsistentRead"), "a GSI cannot be read consistently"
            return {"Items": [dict(i) for i in self.items.values() if "liveStreamArn" in i]}
        return {"Items": [dict(i) for i in self.items.values()]}

    async def batch_get_item(self, *, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """BatchGetItem: the items that exist, all keys processed."""
        (table, request), *_ = RequestItems.items()
        found = [dict(self.items[k["shardId"]["S"]]) for k in request["Keys"] if k["shardId"]["S"] in self.items]
        return {"Responses": {table: found}}

    async def delete_item(self, **kwargs: Any) -> None:
        """DeleteItem with shardEnd = :true."""
        key = kwargs["Key"]["shardId"]["S"]
        item = self.items.get(key)
        if item is None or not item.get("shardEnd", {}).get("BOOL", False):
            raise ConditionFailedError
        del self.items[key]

    async def put_item(self, *, Item: dict[str, Any], **_: Any) -> None:  # noqa: N803 - botocore's names
        """PutItem with attribute_not_exists(shardId)."""
        if Item["shardId"]["S"] in self.items:
            raise ConditionFailedError
        self.items[Item["shardId"]["S"]] = dict(Item)

    async def update_item(self, **kwargs: Any) -> None:
        """UpdateItem: the lease conditions, SET and REMOVE leaseOwner."""
        key = kwargs["Key"]["shardId"]["S"]
        item = self.items.setdefault(key, {"shardId": {"S": key}})
        values = kwargs["ExpressionAttributeValues"]
        condition, update = kwargs.get("ConditionExpression", ""), kwargs["UpdateExpression"]
        ok = True
        if "leaseOwner = :me" in condition:
            ok &= item.get("leaseOwner") == values[":me"]
        if "leaseCounter = :c" in condition:
            ok &= item.get("leaseCounter") == values[":c"]
        if "attribute_not_exists(leaseCounter)" in condition:
            ok &= "leaseCounter" not in item
        if "shardEnd = :false" in condition:
            ok &= not item.get("shardEnd", {}).get("BOOL", False)
        if "shardEnd = :true" in condition:
            ok &= item.get("shardEnd", {}).get("BOOL", False)
        if not ok:
            raise ConditionFailedError
        for removed in re.findall(r"REMOVE ([\w, ]+?)(?= SET|$)", update):
            for name in removed.split(","):
                item.pop(name.strip(), None)
        for name, ref in re.findall(r"(\w+) = (:\w+)", update.split("SET", 1)[-1]):
            item[name] = values[ref]


class GatedLeaseTable(FakeLeaseTable):
    """Applies an update at once but answers only when ``gate`` opens: the reply is still on the wire."""

    def __init__(self) -> None:
        """Replies flow until ``hold_replies``."""
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.applied = asyncio.Event()

    async def update_item(self, **kwargs: Any) -> None:
        """Apply, then wait for the gate."""
        await super().update_item(**kwargs)
        self.applied.set()
        await self.gate.wait()

    def hold_replies(self) -> None:
        """From now on, updates are applied but not answered until the gate opens."""
        self.gate.clear()
        self.applied.clear()


def leased_config(reader: dict[str, Any]) -> Config:
    """A worker ``w1`` with leases on a table (give it a FakeLeaseTable as the checkpoint client).

    A long failover with fast renewals: a lease another holder took stays theirs for the whole test.
    """
    return Config(
        source={"region": "us-east-1", "table": "Orders"},  # type: ignore[arg-type]
        target={"region": "eu-west-1", "table": "Orders"},  # type: ignore[arg-type]
        checkpoint={"backend": "dynamodb", "table": "leases"},  # type: ignore[arg-type]
        metrics={"enabled": False},  # type: ignore[arg-type]
        reader=reader,  # type: ignore[arg-type]
        leases={"enabled": True, "failover_time_s": 60, "renew_interval_s": 0.1},  # type: ignore[arg-type]
        worker_id="w1",
        replication={"deletes": "delete"},  # type: ignore[arg-type]
    )
