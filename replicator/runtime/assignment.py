"""Which shards this worker reads: every shard (one worker), or those it holds a lease on (several).

The coordinator (coordinator.py) runs one loop for both; an ``AssignmentStrategy`` is what differs.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Protocol

import structlog

from replicator.checkpoint.leases import LeasedCheckpointStore, LeaseManager
from replicator.core.errors import error_code
from replicator.core.retry import RetryPolicy, retrying
from replicator.runtime.supervise import supervised

if TYPE_CHECKING:
    from collections.abc import Sequence

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.checkpoint import Checkpoint, CheckpointStore
    from replicator.core.config import LeaseConfig
    from replicator.observe.metrics import Metrics
    from replicator.source.shards import Shard, ShardTree

log = structlog.get_logger(__name__)

LEASE_RETRY = RetryPolicy(max_attempts=None, max_delay_s=10)
"""Creating and taking leases is retried without limit: until it works, this worker has nothing to read."""


class AssignmentStrategy(Protocol):
    """Decides which shards this worker reads and fences their checkpoints.

    Contract (the coordinator calls in this order; one task calls, never two at once):

    1. ``start()`` once, first. It may do I/O (load checkpoints) and start background tasks; ``store``
       is usable after it. The coordinator may be cancelled during ``start``.
    2. Every cycle: ``discovered(shards)`` after each listing of the stream's shards (every listed shard,
       not only new ones), then ``assign(tree)``, then ``checkpoints()``, ``claim`` for each shard that is
       ready and has no reader, and ``owns`` for each shard whose parents are still being read.
       ``assign`` may be cancelled at any await (on stop); it must leave what it holds consistent with
       what is stored, as lease writes do (``core.shield``).
    3. Shutdown, once: ``stop_readers()``; then, after every reader finished or was cancelled and the
       final checkpoints were saved, ``release()``. ``close()`` last, always, even if ``start`` failed or
       never ran; no call follows it.

    - ``claim(shard_id)`` returns the event that stops the shard's reader (after its current batch), or
      None when this worker must not read the shard now. An event is set by ``stop_readers``, and may be
      set earlier when the shard is handed to another worker.
    - ``checkpoints()`` is every shard's stored checkpoint as of the last ``start``/``assign``.
    - Readers save through ``store``; it raises ``LeaseLostError`` once the shard is another worker's.
    - ``owns(shard_id)`` says whether the shard's progress is this worker's to report (its state).
    - ``cycle_s`` is the longest the coordinator may wait between two ``assign`` calls; None: no
      limit (the coordinator still cycles for every discovery and every reader that finishes).
    - ``configured_position_any_cycle``: a shard without checkpoint that this worker starts after its
      first cycle still starts at ``starting_position`` (shards reach it at any cycle), instead of
      TRIM_HORIZON (a shard that appeared while the worker ran).
    - ``release()`` hands over what this worker holds; best effort, never raises for a failed write.
    """

    store: CheckpointStore
    cycle_s: float | None
    configured_position_any_cycle: bool

    async def start(self) -> None:
        """Load what is needed to assign shards; start background work."""
        ...

    async def discovered(self, shards: Sequence[Shard]) -> None:
        """Hear of a listing of the stream's shards."""
        ...

    async def assign(self, tree: ShardTree) -> None:
        """Update which shards this worker owns."""
        ...

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every shard's stored checkpoint, as last read."""
        ...

    def claim(self, shard_id: str) -> asyncio.Event | None:
        """The stop event of the reader to start for a ready shard, or None: not this worker's."""
        ...

    def owns(self, shard_id: str) -> bool:
        """Whether the shard is this worker's (to read now or later)."""
        ...

    def stop_readers(self) -> None:
        """Tell every reader to stop after its current batch."""
        ...

    async def release(self) -> None:
        """Hand over what this worker holds, once its readers are done."""
        ...

    async def close(self) -> None:
        """Release local resources."""
        ...


class StaticAssignment:
    """One worker reads every shard; checkpoints in the configured store (SQLite or DynamoDB)."""

    cycle_s: float | None = None
    configured_position_any_cycle = False

    def __init__(self, store: CheckpointStore, *, stream_arn: str, metrics: Metrics) -> None:
        """Use a started checkpoint store; no I/O."""
        self.store = store
        self.stream_arn = stream_arn
        self.metrics = metrics
        self._checkpoints: dict[str, Checkpoint] = {}
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Load every checkpoint of the stream once: only this worker moves them."""
        self._checkpoints = await retrying(
            "LoadCheckpoints",
            lambda: self.store.load_all(self.stream_arn),
            policy=RetryPolicy(max_attempts=10),
            metrics=self.metrics,
        )

    async def discovered(self, shards: Sequence[Shard]) -> None:
        """Nothing to do: every shard is this worker's."""

    async def assign(self, tree: ShardTree) -> None:
        """Nothing to do: every shard is this worker's."""

    def checkpoints(self) -> dict[str, Checkpoint]:
        """The checkpoints loaded at start (the coordinator adds the shard ends it saw since)."""
        return self._checkpoints

    def claim(self, shard_id: str) -> asyncio.Event:
        """Every ready shard is read; all readers stop together."""
        del shard_id
        return self._stop

    def owns(self, shard_id: str) -> bool:
        """Every shard is this worker's."""
        del shard_id
        return True

    def stop_readers(self) -> None:
        """Tell every reader to stop."""
        self._stop.set()

    async def release(self) -> None:
        """Nothing is held."""

    async def close(self) -> None:
        """The store belongs to the service's exit stack."""


class LeasedAssignment:
    """Several workers share the shards through leases in the DynamoDB checkpoint table (leases.py)."""

    configured_position_any_cycle = True

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        stream_arn: str,
        worker_id: str,
        cfg: LeaseConfig,
        metrics: Metrics,
    ) -> None:
        """Bind to the lease table; no I/O (``start`` starts the renewer)."""
        self.metrics = metrics
        self.cycle_s: float | None = cfg.renew_interval_s or cfg.failover_time_s / 3
        self.leases = LeaseManager(client, table, stream_arn=stream_arn, worker_id=worker_id, cfg=cfg, metrics=metrics)
        # Checkpoints fenced by the shard's lease: refused once another worker holds it.
        self.store: CheckpointStore = LeasedCheckpointStore(self.leases)
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Add/backfill the live-lease index, then renew held leases every ``cycle_s`` (``assign`` takes them).

        The renewer is supervised (``supervise.py``): if it dies it is logged, counted and restarted.
        """
        await retrying("PrepareLeases", self.leases.prepare, policy=LEASE_RETRY, metrics=self.metrics)
        renew = supervised("lease-renewer", self.leases.run_renewer, metrics=self.metrics)
        self._renewer = asyncio.create_task(renew, name="lease-renewer")

    async def discovered(self, shards: Sequence[Shard]) -> None:
        """Create the lease of every shard that has none."""
        create = functools.partial(self.leases.ensure_leases, shards)
        await retrying("CreateLeases", create, policy=LEASE_RETRY, metrics=self.metrics)

    async def assign(self, tree: ShardTree) -> None:
        """Refresh the leases; take free and expired ones up to the fair share, or steal one."""
        await retrying("TakeLeases", lambda: self.leases.rebalance(tree), policy=LEASE_RETRY, metrics=self.metrics)
        try:
            await self.leases.cleanup_if_due(tree)
        except Exception as exc:  # noqa: BLE001 - cleanup is housekeeping: the next sweep tries again
            log.warning("lease_cleanup_failed", error=type(exc).__name__, error_code=error_code(exc))

    def checkpoints(self) -> dict[str, Checkpoint]:
        """The checkpoints of every lease, as of the last refresh."""
        return self.leases.checkpoints()

    def claim(self, shard_id: str) -> asyncio.Event | None:
        """Read a shard only while holding its lease; its reader stops when the lease is lost."""
        return self.leases.stop_event(shard_id) if shard_id in self.leases.held() else None

    def owns(self, shard_id: str) -> bool:
        """The shards this worker holds a lease on."""
        return shard_id in self.leases.held()

    def stop_readers(self) -> None:
        """Stop every held shard's reader; the leases are kept (and renewed) until ``release``."""
        self.leases.stop_readers()

    async def release(self) -> None:
        """Stop renewing, then give up every held lease so other workers take them at once."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        await self.leases.release_all()

    async def close(self) -> None:
        """Close the lease history file."""
        self.leases.close()
