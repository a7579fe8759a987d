"""Leases: several workers share one stream's shards through the DynamoDB checkpoint table (KCL's model).

The checkpoint item of a shard is also its lease: ``leaseOwner`` (worker id) and ``leaseCounter`` (bumped
by every renewal, take and checkpoint). Every change to a lease is a conditional write, so at most one
worker holds a shard at a time:

- **expiry** without trusting clocks: a lease whose counter has not moved for ``failover_time_s`` (as
  this worker measured it, since it first saw that counter value) is expired; an unowned lease is free;
- **taking**: a worker takes free and expired leases (``leaseCounter = <seen>``) up to its fair share,
  ``ceil(active leases / live workers)``; if none is free and it holds fewer than that, it steals ONE
  lease from the most loaded worker (only from a worker above the fair share), once per cycle;
- **renewal** every ``renew_interval_s`` (default a third of the failover time) bumps the counter
  (``leaseOwner = me AND leaseCounter = <mine>``); a renewal that fails, or no successful renewal for
  a whole failover time, means the lease is lost: the shard's reader is told to stop;
- **checkpoints** are conditional the same way (and bump the counter): a worker that lost a lease
  cannot move its checkpoint (``LeaseLostError``); the new owner resumes from the last one;
- **parent before child**: a child's lease is only taken once its parents' items say ``shardEnd``;
- **shutdown**: readers stop and checkpoint, then the leases are released (``leaseOwner`` removed), so
  other workers take them at once instead of after the failover time.

Renewals and checkpoints of one lease are serialised by a lock in this worker, so they never fail each
other's counter condition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from replicator.checkpoint import Checkpoint
from replicator.core.errors import LeaseLostError, error_code

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.config import LeaseConfig
    from replicator.observe.metrics import Metrics
    from replicator.source.shards import Shard, ShardTree

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
class _Held:
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


class LeaseHistory:
    """Appends lease events as JSON lines (acquired, checkpoint, renewed, lost, released): an audit aid.

    ``t`` is when the event is known to hold from (acquired: after the write returned) or until
    (checkpoint/renewed: when the write was sent), so per-shard holding intervals can be checked for
    overlap without trusting response latencies.
    """

    def __init__(self, path: Path) -> None:
        """Open for appending (line-buffered: a SIGKILL loses at most the line being written)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8", buffering=1)

    def write(self, worker: str, shard_id: str, event: str, t: float, counter: int | None = None) -> None:
        """Append one event."""
        line = {"t": t, "worker": worker, "shard": shard_id, "event": event, "counter": counter}
        self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class LeaseManager:
    """Holds this worker's leases on one stream."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        stream_arn: str,
        worker_id: str,
        cfg: LeaseConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Bind to the checkpoint table; no I/O."""
        self._client = client
        self.table = table
        self.stream_arn = stream_arn
        self.worker_id = worker_id
        self.failover_s = cfg.failover_time_s
        self.renew_interval_s = cfg.renew_interval_s or cfg.failover_time_s / 3
        self.max_leases = cfg.max_leases_per_worker
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._held: dict[str, _Held] = {}
        self._items: dict[str, LeaseItem] = {}
        self._seen: dict[str, tuple[str | None, int | None, float]] = {}
        """shard -> (owner, counter, when this worker first saw that pair): expiry by observation."""
        self._history = LeaseHistory(Path(cfg.history_path)) if cfg.history_path else None
        self._stopping = False

    # --- reading -------------------------------------------------------------------------------

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {"streamArn": {"S": self.stream_arn}, "shardId": {"S": shard_id}}

    async def refresh(self) -> dict[str, LeaseItem]:
        """Read every lease of the stream (consistent Query) and note counter changes for expiry."""
        items: dict[str, LeaseItem] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "streamArn = :s",
            "ExpressionAttributeValues": {":s": {"S": self.stream_arn}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._client.query(**kwargs)
            for raw in page.get("Items", []):
                lease = _parse(raw)
                items[lease.shard_id] = lease
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        now = self._clock()
        for lease in items.values():
            seen = self._seen.get(lease.shard_id)
            if seen is None or seen[:2] != (lease.owner, lease.counter):
                self._seen[lease.shard_id] = (lease.owner, lease.counter, now)
        self._items = items
        return items

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Return the checkpoints of every lease, as of the last refresh."""
        return {shard_id: lease.as_checkpoint() for shard_id, lease in self._items.items()}

    def held(self) -> set[str]:
        """Shards this worker holds a lease on."""
        return set(self._held)

    def stop_event(self, shard_id: str) -> asyncio.Event:
        """Set when the shard's reader must stop (lease lost, or shutting down)."""
        return self._held[shard_id].stop

    def _expired(self, lease: LeaseItem) -> bool:
        if lease.owner is None:
            return True
        seen = self._seen.get(lease.shard_id)
        return seen is not None and self._clock() - seen[2] > self.failover_s

    # --- writing -------------------------------------------------------------------------------

    async def ensure_leases(self, shards: Iterable[Shard]) -> None:
        """Create the lease item of every shard that has none (any worker may; only one succeeds)."""
        known = set(self._items)
        for shard in shards:
            if shard.shard_id in known:
                continue
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

    async def _take(self, lease: LeaseItem, *, steal: bool = False) -> bool:
        """Take a lease whose counter is still the one seen; False when someone else moved first."""
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
        self._held[lease.shard_id] = _Held(counter=nxt, renewed_at=now)
        self._seen[lease.shard_id] = (self.worker_id, nxt, now)
        lease.owner, lease.counter = self.worker_id, nxt
        self._record(lease.shard_id, "acquired", self._wall(), nxt)
        log.info("lease_acquired", shard_id=lease.shard_id, previous_owner=previous, stolen=steal, counter=nxt)
        return True

    async def rebalance(self, tree: ShardTree) -> list[str]:
        """Refresh, then take free/expired leases up to the fair share, or steal one. Returns shards taken."""
        if self._stopping:
            return []
        items = await self.refresh()
        active = self._active(items, tree)
        for sid in list(self._held):
            lease = items.get(sid)
            # A lower counter than ours is a stale read: a renewal or checkpoint finished while the
            # Query was in flight. Only another owner, or a counter we did not write, means loss.
            if lease is None or lease.owner != self.worker_id or (lease.counter or 0) > self._held[sid].counter:
                self._lose(sid, "taken by another worker" if lease is not None else "lease item gone")
        loads = self._loads(active)
        target = math.ceil(len(active) / len(loads)) if active else 0
        if self.max_leases is not None:
            target = min(target, self.max_leases)
        mine = loads[self.worker_id]
        taken: list[str] = []
        for lease in self._candidates(active):
            if mine >= target:
                break
            if await self._take(lease):
                taken.append(lease.shard_id)
                mine += 1
        if mine < target and not taken:
            taken += await self._steal_one(active, loads, target)
        return taken

    def _loads(self, active: dict[str, LeaseItem]) -> dict[str, int]:
        """Active leases per live worker (this one included): who counts towards the fair share."""
        loads: dict[str, int] = {self.worker_id: 0}
        for lease in active.values():
            if lease.owner is not None and not self._expired(lease):
                loads[lease.owner] = loads.get(lease.owner, 0) + 1
        return loads

    def _active(self, items: dict[str, LeaseItem], tree: ShardTree) -> dict[str, LeaseItem]:
        """Leases with work left whose shard still exists and whose parents are read to their end."""
        checkpoints = self.checkpoints()
        return {
            sid: lease
            for sid, lease in items.items()
            if not lease.shard_end and sid in tree.shards and not tree.parent_pending(tree.shards[sid], checkpoints)
        }

    def _candidates(self, active: dict[str, LeaseItem]) -> list[LeaseItem]:
        # Our own lease from an earlier life of this worker id first, then unowned, then expired ones.
        own = [lease for lease in active.values() if lease.owner == self.worker_id and lease.shard_id not in self._held]
        others = sorted(
            (lease for lease in active.values() if lease.owner != self.worker_id and self._expired(lease)),
            key=lambda lease: (lease.owner is not None, lease.shard_id),
        )
        return own + others

    async def _steal_one(self, active: dict[str, LeaseItem], loads: dict[str, int], target: int) -> list[str]:
        victims = sorted(((n, w) for w, n in loads.items() if w != self.worker_id), reverse=True)
        if not victims or victims[0][0] <= target:
            return []
        victim = victims[0][1]
        lease = min((lease for lease in active.values() if lease.owner == victim), key=lambda lease: lease.shard_id)
        if await self._take(lease, steal=True):
            if self.metrics is not None:
                self.metrics.errors.labels(kind="lease_stolen").inc()
            return [lease.shard_id]
        return []

    def _lose(self, shard_id: str, why: str) -> None:
        held = self._held.pop(shard_id, None)
        if held is None:
            return
        held.stop.set()
        self._record(shard_id, "lost", self._wall(), held.counter)
        if self.metrics is not None:
            self.metrics.errors.labels(kind="lease_lost").inc()
        log.warning("lease_lost", shard_id=shard_id, reason=why)

    async def _conditional(self, shard_id: str, update: str, values: dict[str, Any], event: str) -> None:
        """Apply an update to a lease this worker holds (bumping its counter); LeaseLostError if not."""
        held = self._held.get(shard_id)
        if held is None:
            raise LeaseLostError(f"this worker holds no lease on shard {shard_id}")
        async with held.lock:
            if self._held.get(shard_id) is not held:
                raise LeaseLostError(f"the lease on shard {shard_id} was lost")
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
                    self._lose(shard_id, f"{event} refused: another worker holds the lease")
                    raise LeaseLostError(f"the lease on shard {shard_id} is held by another worker") from exc
                raise
            held.counter = nxt
            held.renewed_at = self._clock()
            self._seen[shard_id] = (self.worker_id, nxt, held.renewed_at)
            self._record(shard_id, event, sent, nxt)

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
        await self._conditional(shard_id, "SET " + ", ".join(sets), values, "checkpoint")
        if shard_end:
            # Done for good: nothing left to renew or to hand over; children may now be taken.
            held = self._held.pop(shard_id, None)
            if held is not None:
                self._record(shard_id, "ended", self._wall(), held.counter)

    async def renew_all(self) -> None:
        """Renew every held lease; a refused renewal, or none for a failover time, loses the lease."""
        for shard_id in list(self._held):
            held = self._held.get(shard_id)
            if held is None:
                continue
            try:
                await self._conditional(shard_id, "SET leaseCounter = :next", {}, "renewed")
            except LeaseLostError:
                continue
            except Exception as exc:  # noqa: BLE001 - any failure to renew counts towards expiry
                log.warning("lease_renewal_failed", shard_id=shard_id, error=type(exc).__name__)
                if self._clock() - held.renewed_at > self.failover_s:
                    # Others may already consider it expired and have taken it: stop before they start.
                    self._lose(shard_id, "not renewed within the failover time")

    async def run_renewer(self) -> None:
        """Renew held leases every ``renew_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.renew_interval_s)
            await self.renew_all()

    def stop_readers(self) -> None:
        """Tell every held shard's reader to stop (shutdown); leases are kept until ``release_all``."""
        self._stopping = True
        for held in self._held.values():
            held.stop.set()

    async def release_all(self) -> None:
        """Give up every held lease so other workers take them at once (after readers checkpointed)."""
        self._stopping = True
        for shard_id in list(self._held):
            try:
                await self._conditional(shard_id, "REMOVE leaseOwner SET leaseCounter = :next", {}, "released")
            except LeaseLostError:
                continue
            except Exception as exc:  # noqa: BLE001 - best effort: an unreleased lease expires anyway
                log.warning("lease_release_failed", shard_id=shard_id, error=type(exc).__name__)
                continue
            self._held.pop(shard_id, None)
        log.info("leases_released")

    def _record(self, shard_id: str, event: str, t: float, counter: int | None) -> None:
        if self._history is not None:
            self._history.write(self.worker_id, shard_id, event, t, counter)

    def close(self) -> None:
        """Close the history file."""
        if self._history is not None:
            self._history.close()


class LeasedCheckpointStore:
    """The CheckpointStore readers use when leases are on: every save is fenced by the lease."""

    def __init__(self, manager: LeaseManager) -> None:
        """Wrap a lease manager."""
        self.manager = manager

    async def start(self) -> None:
        """Do nothing: the DynamoDB checkpoint store creates the table."""

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of the stream (fresh from the table)."""
        del stream_arn
        await self.manager.refresh()
        return self.manager.checkpoints()

    async def save(
        self,
        stream_arn: str,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool = False,
        parent_shard_id: str | None = None,
    ) -> None:
        """Save while holding the shard's lease; LeaseLostError when another worker holds it."""
        del stream_arn
        await self.manager.checkpoint(shard_id, sequence_number, shard_end=shard_end, parent_shard_id=parent_shard_id)

    async def close(self) -> None:
        """Nothing to release: the manager owns the lease state."""
