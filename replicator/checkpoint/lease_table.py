"""The lease table: how a lease is stored, and this worker's conditional writes of it (``leases.py``: the protocol).

A lease is the shard's checkpoint item (``checkpoint/dynamodb.py``), keyed by ``streamArn`` and
``shardId``: ``leaseOwner`` (worker id, absent when free), ``leaseCounter`` (bumped by every take,
renewal, checkpoint and release; absent on an item a checkpoint store without leases wrote),
``checkpoint``, ``shardEnd``, ``parentShardId`` (and ``adjacentParentShardId`` after a Kinesis merge),
``updatedAt``, and ``liveStreamArn`` while the shard has work left (the key of the sparse ``live-leases``
index, ``dynamodb.py``). A take is conditional on the counter this worker read; every other write on the
counter this worker last wrote and on being the owner.

Rebalancing reads the live index only (eventually consistent: a stale read is at worst a take that
fails its condition, or a lower counter than ours, which is not a loss; a held lease it does not show is
read from the table before it counts as gone). That a shard finished stays
answerable from the store after its item left the index, and after cleanup deleted it
(``lease_cleanup.py``): its item says ``shardEnd``, or a child's lease was taken (``leaseCounter`` above
0), which only happens once every parent ended.

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
from replicator.checkpoint.dynamodb import LIVE_ATTRIBUTE, LIVE_INDEX, stream_items, targets_of, targets_value
from replicator.core.errors import LeaseLostError, error_code
from replicator.core.shield import complete_before_cancel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

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
    adjacent_parent_shard_id: str | None = None
    live: bool = False
    """The item carries the live index's key (``liveStreamArn``)."""
    targets: dict[str, str] = dataclasses.field(default_factory=dict)
    """Fan-out: each target's own checkpoint (``Checkpoint.targets``)."""

    @property
    def parents(self) -> tuple[str, ...]:
        """The shard's parents as the lease records them."""
        return tuple(p for p in (self.parent_shard_id, self.adjacent_parent_shard_id) if p is not None)

    @property
    def started(self) -> bool:
        """Some worker took the lease (only done once every parent ended), or it has progress."""
        return bool(self.counter) or self.checkpoint is not None or self.shard_end

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
            targets=self.targets,
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
        adjacent_parent_shard_id=item.get("adjacentParentShardId", {}).get("S"),
        live=LIVE_ATTRIBUTE in item,
        targets=targets_of(item),
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
        """Every live lease of the stream (shard with work left), as of the last refresh."""
        self.seen: dict[str, tuple[str | None, int | None, float]] = {}
        """shard -> (owner, counter, when this worker first saw that pair): expiry by observation."""
        self.finished: set[str] = set()
        """Listed shards known to be read to their end (their item left the live index)."""
        self.exists: set[str] = set()
        """Listed shards known to have a lease item (so discovery need not create one)."""
        self.use_index = False
        """Read the live index (True once it is ACTIVE and backfilled) or the whole stream's items."""

    @property
    def client(self) -> DynamoDBClient:
        """The checkpoint table's client."""
        return self._client

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {"streamArn": {"S": self.stream_arn}, "shardId": {"S": shard_id}}

    async def refresh(self) -> dict[str, LeaseItem]:
        """Read every live lease of the stream and note counter changes for expiry."""
        items: dict[str, LeaseItem] = {}
        raws = self._live_items() if self.use_index else stream_items(self._client, self.table, self.stream_arn)
        async for raw in raws:
            lease = _parse(raw)
            if lease.shard_end:
                self.finished.add(lease.shard_id)
            else:
                items[lease.shard_id] = lease
        now = self._clock()
        for lease in items.values():
            seen = self.seen.get(lease.shard_id)
            if seen is None or seen[:2] != (lease.owner, lease.counter):
                self.seen[lease.shard_id] = (lease.owner, lease.counter, now)
        for gone in self.seen.keys() - items.keys():
            del self.seen[gone]
        self.exists.update(items)
        self.items = items
        return items

    async def _live_items(self) -> AsyncIterator[dict[str, Any]]:
        # A GSI cannot be read consistently: see the module docstring for why stale reads are harmless.
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": LIVE_INDEX,
            "KeyConditionExpression": f"{LIVE_ATTRIBUTE} = :s",
            "ExpressionAttributeValues": {":s": {"S": self.stream_arn}},
        }
        while True:
            page = await self._client.query(**kwargs)
            for item in page.get("Items", []):
                yield dict(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def read_all(self) -> list[LeaseItem]:
        """Every lease item of the stream, finished ones included (consistent Query): cleanup, migration."""
        return [_parse(raw) async for raw in stream_items(self._client, self.table, self.stream_arn)]

    async def lookup(self, shard_ids: Iterable[str]) -> dict[str, LeaseItem]:
        """Read some leases by key (consistent); a shard without item is absent from the answer."""
        wanted = sorted(set(shard_ids))
        out: dict[str, LeaseItem] = {}
        for start in range(0, len(wanted), 100):
            keys = [self._key(sid) for sid in wanted[start : start + 100]]
            while keys:
                answer = await self._client.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                )
                for raw in answer.get("Responses", {}).get(self.table, []):
                    lease = _parse(dict(raw))
                    out[lease.shard_id] = lease
                unprocessed: dict[str, Any] = dict(answer.get("UnprocessedKeys", {}))
                keys = list(unprocessed.get(self.table, {}).get("Keys", []))
        for lease in out.values():
            self.exists.add(lease.shard_id)
            if lease.shard_end:
                self.finished.add(lease.shard_id)
        return out

    async def delete_finished(self, shard_id: str) -> bool:
        """Delete a finished shard's item (conditional on it being finished); False if it was not."""
        try:
            await self._client.delete_item(
                TableName=self.table,
                Key=self._key(shard_id),
                ConditionExpression="shardEnd = :true",
                ExpressionAttributeValues={":true": {"BOOL": True}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        self._record(shard_id, "deleted", self._wall(), None)
        return True

    def forget(self, listed: set[str]) -> None:
        """Drop what is known of shards no longer listed (their items are history, not needed in memory)."""
        self.finished &= listed
        self.exists &= listed

    async def create(self, shard: Shard) -> None:
        """Create the shard's lease item unless it exists (any worker may; only one succeeds)."""
        item: dict[str, Any] = {
            **self._key(shard.shard_id),
            "leaseCounter": {"N": "0"},
            LIVE_ATTRIBUTE: {"S": self.stream_arn},
        }
        if shard.parent_shard_id is not None:
            item["parentShardId"] = {"S": shard.parent_shard_id}
        if shard.adjacent_parent_shard_id is not None:
            item["adjacentParentShardId"] = {"S": shard.adjacent_parent_shard_id}
        try:
            await self._client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(shardId)"
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        self.exists.add(shard.shard_id)

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
        self,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool,
        parent_shard_id: str | None,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        """Save a checkpoint (and fan-out positions), only while this worker holds the lease; else LeaseLostError."""
        sets = ["shardEnd = :end", "updatedAt = :now", "leaseCounter = :next"]
        values: dict[str, Any] = {":end": {"BOOL": shard_end}, ":now": {"N": repr(self._wall())}}
        if sequence_number is not None:
            sets.append("checkpoint = :seq")
            values[":seq"] = {"S": sequence_number}
        if parent_shard_id is not None:
            sets.append("parentShardId = :parent")
            values[":parent"] = {"S": parent_shard_id}
        if targets is not None:
            sets.append("targets = :targets")
            values[":targets"] = targets_value(targets)
        # At shard end the lease is done for good: nothing left to renew or to hand over; children may
        # now be taken.
        last = "ended" if shard_end else None
        # At shard end the lease also leaves the live index: rebalancing no longer reads it.
        update = "SET " + ", ".join(sets) + (f" REMOVE {LIVE_ATTRIBUTE}" if shard_end else "")
        await self._conditional(shard_id, update, values, "checkpoint", last=last)
        if shard_end:
            self.finished.add(shard_id)

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
