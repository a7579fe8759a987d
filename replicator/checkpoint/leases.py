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
- **parent before child**: a child's lease is only taken once its parents' items say ``shardEnd`` (or,
  after cleanup deleted a parent's item, once a sibling's lease was taken: ``lease_table.py``);
- **only live leases are read**: rebalancing queries the sparse ``live-leases`` index (shards with work
  left); finished items are deleted after the stream's retention (``lease_cleanup.py``), so both the
  table and this worker's memory follow the open shards, not the stream's history;
- **shutdown**: readers stop and checkpoint, then the leases are released (``leaseOwner`` removed), so
  other workers take them at once instead of after the failover time.

The item format and the conditional writes (serialised per lease, each run to its answer before a
cancellation of its caller goes on) are in ``lease_table.py``; which leases to hold is decided here.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from replicator.checkpoint import Checkpoint
from replicator.checkpoint.dynamodb import live_index_status
from replicator.checkpoint.lease_cleanup import sweep
from replicator.checkpoint.lease_history import LeaseHistory
from replicator.checkpoint.lease_table import LeaseTable
from replicator.core.errors import LeaseLostError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.checkpoint.lease_table import LeaseItem
    from replicator.core.config import LeaseConfig
    from replicator.observe.metrics import Metrics
    from replicator.source.shards import Shard, ShardTree

log = structlog.get_logger(__name__)

RENEW_CONCURRENCY = 32
"""Lease renewals (and creations) in flight at once (each is one small conditional write)."""


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
        self.worker_id = worker_id
        self.failover_s = cfg.failover_time_s
        self.renew_interval_s = cfg.renew_interval_s or cfg.failover_time_s / 3
        self.max_leases = cfg.max_leases_per_worker
        self.retention_s = cfg.finished_retention_s
        self.cleanup_interval_s = cfg.cleanup_interval_s
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._next_cleanup = clock() + cfg.cleanup_interval_s
        history = LeaseHistory(Path(cfg.history_path)) if cfg.history_path else None
        self._table = LeaseTable(
            client,
            table,
            stream_arn=stream_arn,
            worker_id=worker_id,
            history=history,
            metrics=metrics,
            clock=clock,
            wall=wall,
        )
        self._stopping = False

    @property
    def table(self) -> LeaseTable:
        """The lease table as this worker read it (its caches are what memory bounding is about)."""
        return self._table

    # --- reading -------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Make sure the live index exists (adding it to an older table) and backfill its key; then use it."""
        status = await live_index_status(self._table.client, self._table.table)
        await sweep(self._table, listed_children=None, now_s=self._wall(), retention_s=self.retention_s)
        self._table.use_index = status == "ACTIVE"

    async def refresh(self) -> dict[str, LeaseItem]:
        """Read every live lease of the stream and note counter changes for expiry."""
        return await self._table.refresh()

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Return the checkpoints of every live lease, and shard end for every shard known finished."""
        out = {shard_id: lease.as_checkpoint() for shard_id, lease in self._table.items.items()}
        # Known finished wins over a live item read from the (eventually consistent) index.
        out.update((sid, Checkpoint(sid, None, shard_end=True, updated_at_s=0.0)) for sid in self._table.finished)
        return out

    async def cleanup_if_due(self, tree: ShardTree) -> int:
        """Every ``cleanup_interval_s``: delete finished leases past retention whose children started."""
        if self._clock() < self._next_cleanup:
            return 0
        self._next_cleanup = self._clock() + self.cleanup_interval_s
        if not self._table.use_index:
            # An index added at start becomes ACTIVE once DynamoDB backfilled it.
            self._table.use_index = await live_index_status(self._table.client, self._table.table) == "ACTIVE"
        children: dict[str, list[str]] = {sid: [] for sid in tree.shards}
        for shard in tree.shards.values():
            for parent in (shard.parent_shard_id, shard.adjacent_parent_shard_id):
                if parent in children:
                    children[parent].append(shard.shard_id)
        return await sweep(self._table, listed_children=children, now_s=self._wall(), retention_s=self.retention_s)

    def held(self) -> set[str]:
        """Shards this worker holds a lease on."""
        return set(self._table.held)

    def stop_event(self, shard_id: str) -> asyncio.Event:
        """Set when the shard's reader must stop (lease lost, or shutting down)."""
        return self._table.held[shard_id].stop

    def _expired(self, lease: LeaseItem) -> bool:
        if lease.owner is None:
            return True
        seen = self._table.seen.get(lease.shard_id)
        return seen is not None and self._clock() - seen[2] > self.failover_s

    # --- writing -------------------------------------------------------------------------------

    async def ensure_leases(self, shards: Iterable[Shard]) -> None:
        """Create the lease item of every shard that has none (any worker may; only one succeeds).

        Shards not known to have an item are read first (finished items are not in the live index);
        a closed shard whose item cleanup deleted is not created again (a started child says it ended).
        """
        table = self._table
        unknown = [s for s in shards if s.shard_id not in table.exists and s.shard_id not in table.finished]
        if not unknown:
            return
        found = await table.lookup(s.shard_id for s in unknown)
        ended = self._finished_by_children(found.values())
        # A rollover opens a child for every shard at about the same time: create them concurrently.
        limit = asyncio.Semaphore(RENEW_CONCURRENCY)

        async def create(shard: Shard) -> None:
            async with limit:
                await table.create(shard)

        await asyncio.gather(*(create(s) for s in unknown if s.shard_id not in found and s.shard_id not in ended))

    def _finished_by_children(self, more: Iterable[LeaseItem] = ()) -> set[str]:
        """Parents whose item may be gone but whose child's lease was taken: they ended."""
        leases = [*self._table.items.values(), *more]
        return {parent for lease in leases if lease.started for parent in lease.parents} | self._table.finished

    async def _learn_parents(self, tree: ShardTree) -> None:
        """Find out whether the listed parents of live leases finished (their items left the live index)."""
        table = self._table
        table.finished |= self._finished_by_children() & set(tree.shards)
        unknown = {
            parent
            for sid in table.items
            if sid in tree.shards
            for parent in (tree.shards[sid].parent_shard_id, tree.shards[sid].adjacent_parent_shard_id)
            if parent is not None and parent in tree.shards and parent not in table.items
        } - table.finished
        if unknown:
            await table.lookup(unknown)

    async def _refresh_with_held(self) -> dict[str, LeaseItem]:
        """Refresh; a held lease the live index did not show is read from the table before it counts as gone.

        Absent from the index is not gone: the index lags the table, and an older version's item has no
        live key until a sweep repairs it (``lease_cleanup.py``).
        """
        items = await self.refresh()
        missing = [sid for sid in self._table.held if sid not in items]
        if missing:
            found = await self._table.lookup(missing)
            items.update((sid, lease) for sid, lease in found.items() if not lease.shard_end)
        return items

    async def rebalance(self, tree: ShardTree) -> list[str]:
        """Refresh, then take free/expired leases up to the fair share, or steal one. Returns shards taken."""
        if self._stopping:
            return []
        items = await self._refresh_with_held()
        self._table.forget(set(tree.shards))
        await self._learn_parents(tree)
        active = self._active(items, tree)
        held = self._table.held
        for sid in list(held):
            lease = items.get(sid)
            # A lower counter than ours is a stale read: a renewal or checkpoint finished while the
            # Query was in flight, or the live index is behind (it is eventually consistent), even
            # showing the owner before our take. Only a counter we did not write means loss.
            counter = lease.counter or 0 if lease is not None else 0
            if (
                lease is None
                or counter > held[sid].counter
                or (lease.owner != self.worker_id and counter >= held[sid].counter)
            ):
                self._table.lose(sid, "taken by another worker" if lease is not None else "lease item gone")
        loads = self._loads(active)
        target = math.ceil(len(active) / len(loads)) if active else 0
        if self.max_leases is not None:
            target = min(target, self.max_leases)
        mine = loads[self.worker_id]
        taken: list[str] = []
        candidates = self._candidates(active)
        # After a rollover a worker takes hundreds of children: concurrently, as many as it still lacks.
        limit = asyncio.Semaphore(RENEW_CONCURRENCY)

        async def take(lease: LeaseItem) -> bool:
            async with limit:
                return await self._table.take(lease)

        while mine < target and candidates:
            batch, candidates = candidates[: target - mine], candidates[target - mine :]
            for lease, ok in zip(batch, await asyncio.gather(*(take(lease) for lease in batch)), strict=True):
                if ok:
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
            if not lease.shard_end
            and sid not in self._table.finished
            and sid in tree.shards
            and not tree.parent_pending(tree.shards[sid], checkpoints)
        }

    def _candidates(self, active: dict[str, LeaseItem]) -> list[LeaseItem]:
        # Our own lease from an earlier life of this worker id first, then unowned, then expired ones.
        own = [
            lease
            for lease in active.values()
            if lease.owner == self.worker_id and lease.shard_id not in self._table.held
        ]
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
        if await self._table.take(lease, steal=True):
            if self.metrics is not None:
                self.metrics.errors.labels(kind="lease_stolen").inc()
            return [lease.shard_id]
        return []

    async def checkpoint(
        self,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool,
        parent_shard_id: str | None,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        """Save a checkpoint, only while this worker holds the lease; raises LeaseLostError otherwise."""
        await self._table.checkpoint(
            shard_id, sequence_number, shard_end=shard_end, parent_shard_id=parent_shard_id, targets=targets
        )

    async def renew_all(self) -> None:
        """Renew every held lease; a refused renewal, or none for a failover time, loses the lease.

        Renewals run ``RENEW_CONCURRENCY`` at a time: one after another, hundreds of leases at a few
        milliseconds each would take longer than the failover time, and other workers would take them.
        """
        limit = asyncio.Semaphore(RENEW_CONCURRENCY)

        async def renew(shard_id: str) -> None:
            async with limit:
                await self._renew_one(shard_id)

        await asyncio.gather(*(renew(shard_id) for shard_id in list(self._table.held)))

    async def _renew_one(self, shard_id: str) -> None:
        held = self._table.held.get(shard_id)
        if held is None:
            return
        try:
            await self._table.renew(shard_id)
        except LeaseLostError:
            return
        except Exception as exc:  # noqa: BLE001 - any failure to renew counts towards expiry
            log.warning("lease_renewal_failed", shard_id=shard_id, error=type(exc).__name__)
            if self._clock() - held.renewed_at > self.failover_s:
                # Others may already consider it expired and have taken it: stop before they start.
                self._table.lose(shard_id, "not renewed within the failover time")

    async def run_renewer(self) -> None:
        """Renew held leases every ``renew_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.renew_interval_s)
            await self.renew_all()

    def stop_readers(self) -> None:
        """Tell every held shard's reader to stop (shutdown); leases are kept until ``release_all``."""
        self._stopping = True
        for held in self._table.held.values():
            held.stop.set()

    async def release_all(self) -> None:
        """Give up every held lease so other workers take them at once (after readers checkpointed).

        Releases run ``RENEW_CONCURRENCY`` at a time, as renewals do: one after another, a third of
        1,000 shards took over a minute on a busy table, longer than a container's stop timeout.
        """
        self._stopping = True
        limit = asyncio.Semaphore(RENEW_CONCURRENCY)

        async def release(shard_id: str) -> None:
            async with limit:
                try:
                    await self._table.release(shard_id)
                except LeaseLostError:
                    return
                except Exception as exc:  # noqa: BLE001 - best effort: an unreleased lease expires anyway
                    log.warning("lease_release_failed", shard_id=shard_id, error=type(exc).__name__)

        await asyncio.gather(*(release(shard_id) for shard_id in list(self._table.held)))
        log.info("leases_released")

    def close(self) -> None:
        """Close the history file."""
        self._table.close()


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
        targets: Mapping[str, str] | None = None,
    ) -> None:
        """Save while holding the shard's lease; LeaseLostError when another worker holds it."""
        del stream_arn
        await self.manager.checkpoint(
            shard_id, sequence_number, shard_end=shard_end, parent_shard_id=parent_shard_id, targets=targets
        )

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        """Delete nothing: the lease cleanup (``LeaseManager.cleanup_if_due``) deletes finished leases."""
        del stream_arn, listed, now_s, retention_s
        return []

    async def close(self) -> None:
        """Nothing to release: the manager owns the lease state."""
