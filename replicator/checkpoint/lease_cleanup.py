"""Lease cleanup: a finished shard's lease item is deleted once nothing can need it again (KCL's rule, and later).

The rule (``retention.deletable``) is the one the coordinator applies to plain checkpoints without leases.

As the KCL's ``LeaseCleanupManager`` decides, a finished shard's item goes once every child shard's
lease has started (a child is taken only after its parents ended, so from then on the children answer
"did the parent finish?", ``lease_table.py``) and its own parents' items are gone (oldest first). This
worker waits longer than the KCL, on purpose:

- **retention**: the shard ended at least ``leases.finished_retention_s`` ago (the stream's retention).
  Until then the shard may still be listed by the stream, and a worker that lags behind (an old
  listing, a replay) must find its checkpoint and not create a fresh lease that reads it again;
- **listing**: the shard is no longer in this worker's listing of the stream, for the same reason.

The sweep, every ``leases.cleanup_interval_s``, reads every item of the stream once (a consistent
Query whose size follows open shards times retention over shard lifetime, not the stream's history)
and also repairs the live index's key on items an older version wrote (a rolling deploy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from replicator.checkpoint.dynamodb import LIVE_ATTRIBUTE
from replicator.checkpoint.retention import deletable
from replicator.core.errors import error_code

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from replicator.checkpoint.lease_table import LeaseItem, LeaseTable

log = structlog.get_logger(__name__)

__all__ = ["deletable", "set_live", "sweep"]


async def set_live(table: LeaseTable, lease: LeaseItem) -> None:
    """Backfill: give a lease the live index's key, or remove it from a finished one."""
    if lease.shard_end:
        update, condition = f"REMOVE {LIVE_ATTRIBUTE}", "shardEnd = :true"
        values: dict[str, Any] = {":true": {"BOOL": True}}
    else:
        update = f"SET {LIVE_ATTRIBUTE} = :s"
        condition = "attribute_exists(shardId) AND (attribute_not_exists(shardEnd) OR shardEnd = :false)"
        values = {":s": {"S": table.stream_arn}, ":false": {"BOOL": False}}
    try:
        await table.client.update_item(
            TableName=table.table,
            Key={"streamArn": {"S": table.stream_arn}, "shardId": {"S": lease.shard_id}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
        )
    except Exception as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise


async def sweep(
    table: LeaseTable, *, listed_children: Mapping[str, Iterable[str]] | None, now_s: float, retention_s: float
) -> int:
    """Read every item of the stream: repair live-index keys, note finished shards, delete what may go.

    ``listed_children`` None (at start, before any listing): repair and note only, delete nothing.
    """
    items = await table.read_all()
    for lease in items:
        table.exists.add(lease.shard_id)
        if lease.shard_end:
            table.finished.add(lease.shard_id)
        if lease.started:
            table.finished.update(lease.parents)
        if lease.live == lease.shard_end:
            await set_live(table, lease)
    if listed_children is None:
        return 0
    deleted = 0
    for sid in deletable(items, listed_children=listed_children, now_s=now_s, retention_s=retention_s):
        if await table.delete_finished(sid):
            deleted += 1
    table.forget(set(listed_children))
    log.info("lease_cleanup", items=len(items), deleted=deleted)
    return deleted
