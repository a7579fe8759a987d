"""The lease table: how a lease is stored, and this worker's conditional writes of it (``leases.py``: the protocol).

A lease is the shard's checkpoint item (``checkpoint/dynamodb.py``), keyed by ``streamArn`` and
``shardId``: ``leaseOwner`` (worker id, absent when free), ``leaseCounter`` (bumped by every take,
renewal, checkpoint and release; absent on an item a checkpoint store without leases wrote),
``checkpoint``, ``shardEnd``, ``parentShardId`` and ``updatedAt``. A take is conditional on the counter
this worker read; every other write on the counter this worker last wrote and on being the owner.

Renewals and checkpoints of one lease are serialised by a lock in this worker, so they never fail each
other's counter condition. Every lease write (take, renew, checkpoint, release) runs to its answer even
when its caller is cancelled (``core.shield``), and records the new counter before the cancellation goes
on: DynamoDB may have applied it, and a counter one behind would make the next write of the lease fail
as if another worker had taken it (and shutdown could not release it).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import structlog

from replicator.checkpoint import Checkpoint
from replicator.checkpoint.dynamodb import stream_items
from replicator.core.errors import LeaseLostError, error_code
from replicator.core.shield import complete_before_cancel

if TYPE_CHECKING:
    from collections.abc import Callable

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.checkpoint.lease_history import LeaseHistory
    from replicator.observe.metrics import Metrics
    from replicator.source.shards import Shard

log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class LeaseItem:
    """One lease as last read from the table."""

    shard_id: str
    owner: str | None
    counter: int | None
    """None: the item has no counter yet (written by a checkpoint store without leases)."""
    checkpoint: str | None
    shard_end: bool
    parent_shard_id: str | None
    updated_at_s: float

    def as_checkpoint(self) -> Checkpoint:
        """Return the checkpoint view of the lease."""
        return Checkpoint(
            shard_id=self.shard_id,
            sequence_number=self.checkpoint,
            shard_end=self.shard_end,
            updated_at_s=self.updated_at_s,
            parent_shard_id=self.parent_shard_id,
            owner=self.owner,
            lease_counter=self.counter or 0,
        )


@dataclasses.dataclass(slots=True)
class HeldLease:
    """A lease this worker holds: the counter it last wrote, and its reader's stop signal."""

    counter: int
    renewed_at: float
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


def _parse(item: dict[str, Any]) -> LeaseItem:
    counter = item.get("leaseCounter", {}).get("N")
    return LeaseItem(
        shard_id=item["shardId"]["S"],
        owner=item.get("leaseOwner", {}).get("S"),
        counter=int(counter) if counter is not None else None,
        checkpoint=item.get("checkpoint", {}).get("S"),
        shard_end=bool(item.get("shardEnd", {}).get("BOOL", False)),
        parent_shard_id=item.get("parentShardId", {}).get("S"),
        updated_at_s=float(item.get("updatedAt", {}).get("N", "0")),
    )


class LeaseTable:
    """One stream's leases as this worker read, saw and holds them, and its writes of them."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        stream_arn: str,
        worker_id: str,
        history: LeaseHistory | None,
        metrics: Metrics | None,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        """Bind to the checkpoint table; no I/O."""
        self._client = client
        self.table = table
        self.stream_arn = stream_arn
        self.worker_id = worker_id
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._history = history
        self.held: dict[str, HeldLease] = {}
        self.items: dict[str, LeaseItem] = {}
        """Every lease of the stream, as of the last refresh."""
        self.seen: dict[str, tuple[str | None, int | None, float]] = {}
        """shard -> (owner, counter, when this worker first saw that pair): expiry by observation."""

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {"streamArn": {"S": self.stream_arn}, "shardId": {"S": shard_id}}

    async def refresh(self) -> dict[str, LeaseItem]:
        """Read every lease of the stream (consistent Query) and note counter changes for expiry."""
        items: dict[str, LeaseItem] = {}
        async for raw in stream_items(self._client, self.table, self.stream_arn):
            lease = _parse(raw)
            items[lease.shard_id] = lease
        now = self._clock()
        for lease in items.values():
            seen = self.seen.get(lease.shard_id)
            if seen is None or seen[:2] != (lease.owner, lease.counter):
                self.seen[lease.shard_id] = (lease.owner, lease.counter, now)
        self.items = items
        return items

    async def create(self, shard: Shard) -> None:
        """Create the shard's lease item unless it exists (any worker may; only one succeeds)."""
        item: dict[str, Any] = {**self._key(shard.shard_id), "leaseCounter": {"N": "0"}}
        if shard.parent_shard_id is not None:
            item["parentShardId"] = {"S": shard.parent_shard_id}
        try:
            await self._client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(shardId)"
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    async def take(self, lease: LeaseItem, *, steal: bool = False) -> bool:
        """Take a lease whose counter is still the one seen; False when someone else moved first."""
        # Cancelled while in flight, a take DynamoDB applied would leave a lease nobody renews or releases.
        return await complete_before_cancel(self._take_write(lease, steal=steal))

    async def _take_write(self, lease: LeaseItem, *, steal: bool) -> bool:
        nxt = (lease.counter or 0) + 1
        values: dict[str, Any] = {
            ":me": {"S": self.worker_id},
            ":next": {"N": str(nxt)},
            ":false": {"BOOL": False},
        }
        if lease.counter is None:
            condition = "attribute_not_exists(leaseCounter)"
        else:
            condition = "leaseCounter = :c"
            values[":c"] = {"N": str(lease.counter)}
        try:
            await self._client.update_item(
                TableName=self.table,
                Key=self._key(lease.shard_id),
                UpdateExpression="SET leaseOwner = :me, leaseCounter = :next",
                ConditionExpression=f"{condition} AND (attribute_not_exists(shardEnd) OR shardEnd = :false)",
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        now = self._clock()
        previous = lease.owner
        self.held[lease.shard_id] = HeldLease(counter=nxt, renewed_at=now)
        self.seen[lease.shard_id] = (self.worker_id, nxt, now)
        lease.owner, lease.counter = self.worker_id, nxt
        self._record(lease.shard_id, "acquired", self._wall(), nxt)
        log.info("lease_acquired", shard_id=lease.shard_id, previous_owner=previous, stolen=steal, counter=nxt)
        return True

    def lose(self, shard_id: str, why: str) -> None:
        """Drop a lease this worker no longer holds and tell its reader to stop."""
        held = self.held.pop(shard_id, None)
        if held is None:
            return
        held.stop.set()
        self._record(shard_id, "lost", self._wall(), held.counter)
        if self.metrics is not None:
            self.metrics.errors.labels(kind="lease_lost").inc()
        log.warning("lease_lost", shard_id=shard_id, reason=why)

    async def checkpoint(
        self, shard_id: str, sequence_number: str | None, *, shard_end: bool, parent_shard_id: str | None
    ) -> None:
        """Save a checkpoint, only while this worker holds the lease; raises LeaseLostError otherwise."""
        sets = ["shardEnd = :end", "updatedAt = :now", "leaseCounter = :next"]
        values: dict[str, Any] = {":end": {"BOOL": shard_end}, ":now": {"N": repr(self._wall())}}
        if sequence_number is not None:
            sets.append("checkpoint = :seq")
            values[":seq"] = {"S": sequence_number}
        if parent_shard_id is not None:
            sets.append("parentShardId = :parent")
            values[":parent"] = {"S": parent_shard_id}
        # At shard end the lease is done for good: nothing left to renew or to hand over; children may
        # now be taken.
        last = "ended" if shard_end else None
        await self._conditional(shard_id, "SET " + ", ".join(sets), values, "checkpoint", last=last)

    async def renew(self, shard_id: str) -> None:
        """Bump the counter of a held lease; LeaseLostError when another worker holds it."""
        await self._conditional(shard_id, "SET leaseCounter = :next", {}, "renewed")

    async def release(self, shard_id: str) -> None:
        """Remove this worker as the owner of a held lease, which it then no longer holds."""
        await self._conditional(shard_id, "REMOVE leaseOwner SET leaseCounter = :next", {}, "released", last="released")

    async def _conditional(
        self, shard_id: str, update: str, values: dict[str, Any], event: str, *, last: str | None = None
    ) -> None:
        """Apply an update to a lease this worker holds (bumping its counter); LeaseLostError if not.

        ``last``: the write ends this worker's hold on the lease (``ended``, ``released``): it is dropped
        from the held leases, together with the write, so a cancellation cannot separate the two.
        """
        held = self.held.get(shard_id)
        if held is None:
            raise LeaseLostError(f"this worker holds no lease on shard {shard_id}")
        async with held.lock:
            if self.held.get(shard_id) is not held:
                raise LeaseLostError(f"the lease on shard {shard_id} was lost")
            # Inside the lock: the next write of this lease waits for this one's counter.
            await complete_before_cancel(self._write_held(shard_id, held, update, values, event, last=last))

    async def _write_held(
        self, shard_id: str, held: HeldLease, update: str, values: dict[str, Any], event: str, *, last: str | None
    ) -> None:
        nxt = held.counter + 1
        sent = self._wall()
        try:
            await self._client.update_item(
                TableName=self.table,
                Key=self._key(shard_id),
                UpdateExpression=update,
                ConditionExpression="leaseOwner = :me AND leaseCounter = :c",
                ExpressionAttributeValues={
                    **values,
                    ":me": {"S": self.worker_id},
                    ":c": {"N": str(held.counter)},
                    ":next": {"N": str(nxt)},
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                self.lose(shard_id, f"{event} refused: another worker holds the lease")
                raise LeaseLostError(f"the lease on shard {shard_id} is held by another worker") from exc
            raise
        held.counter = nxt
        held.renewed_at = self._clock()
        self.seen[shard_id] = (self.worker_id, nxt, held.renewed_at)
        self._record(shard_id, event, sent, nxt)
        if last is not None and self.held.get(shard_id) is held:
            del self.held[shard_id]
            if last != event:
                self._record(shard_id, last, self._wall(), nxt)

    def _record(self, shard_id: str, event: str, t: float, counter: int | None) -> None:
        if self._history is not None:
            self._history.write(self.worker_id, shard_id, event, t, counter)

    def close(self) -> None:
        """Close the history file."""
        if self._history is not None:
            self._history.close()
