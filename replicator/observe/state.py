"""Shared state: what each shard is doing, read by the coordinator, the metrics and the health checks.

Readers write their own shard's entry; everyone else only reads. Parts talk through this object rather
than to each other (aiokafka's consumer/fetcher/coordinator model).

The time-dependent gauges (iterator age, checkpoint age, shards by state) are computed when they are
collected, from this object, so a scrape always sees the current value: a stuck shard's ages grow
between scrapes even though its reader, stuck, updates nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import TYPE_CHECKING, Literal

from replicator.core.records import US_PER_S
from replicator.observe.metrics import SHARD_STATES

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator.observe.metrics import Metrics

ShardState = Literal["owned", "reading", "waiting_on_parent", "closed", "stopped"]

_LAGGING_STATES = frozenset({"reading", "stopped"})
"""States whose shards export iterator and checkpoint ages: a shard being read, or one that failed."""

CLOSED_COUNTER_GRACE_S = 120.0
"""How long a closed shard's counters stay exported, so scrapes see their last increments."""


@dataclasses.dataclass(slots=True)
class TargetStatus:
    """One target's progress on one shard (fan-out): what an operator needs to see a target fall behind."""

    target_id: str
    checkpoint: str | None = None
    """The last record done for this target (its own checkpoint)."""
    attached: bool = True
    """Fed by the shard's reader; False while it is detached (catching up with its own reader)."""
    queued_batches: int = 0
    """Batches handed to it and not yet written (at most ``fanout.max_buffered_batches``)."""
    newest_done_s: float | None = None
    """Source creation time of the last record done for it; None when it has done all the reader read."""

    def lag_s(self, now: float) -> float:
        """Seconds behind the source for this target: 0 when it has done everything read."""
        return 0.0 if self.newest_done_s is None else max(0.0, now - self.newest_done_s)

    def as_json(self, now: float) -> dict[str, object]:
        """The /status view of this target on its shard."""
        return {
            "checkpoint": self.checkpoint,
            "attached": self.attached,
            "queued_batches": self.queued_batches,
            "lag_s": round(self.lag_s(now), 3),
        }


@dataclasses.dataclass(slots=True)
class ShardStatus:
    """One shard's live status."""

    shard_id: str
    state: ShardState = "owned"
    checkpoint: str | None = None
    last_progress_s: float = 0.0
    """When the shard last made progress: a batch done, or an empty read (caught up)."""
    last_checkpoint_s: float = 0.0
    """When a checkpoint was last saved (0: never by this worker)."""
    current_since_s: float = 0.0
    """When the checkpoint was last known current: saved, confirmed by an empty read, or the shard taken."""
    newest_record_s: float | None = None
    """Source creation time of the newest record read; None once a read came back empty (caught up)."""
    closed_at_s: float | None = None
    counters_removed: bool = False
    error: str | None = None
    targets: dict[str, TargetStatus] = dataclasses.field(default_factory=dict)
    """Fan-out: each target's own progress on this shard (empty with one target)."""

    def iterator_age_s(self, now: float) -> float:
        """Seconds behind the source: 0 when caught up, else the newest record read's age."""
        if self.newest_record_s is None:
            return 0.0
        return max(0.0, now - self.newest_record_s)

    def checkpoint_age_s(self, now: float) -> float:
        """Seconds since the checkpoint was last known current."""
        return max(0.0, now - self.current_since_s)


class WorkerState:
    """Every shard this worker knows about."""

    def __init__(
        self,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        *,
        closed_counter_grace_s: float = CLOSED_COUNTER_GRACE_S,
    ) -> None:
        """Start empty; no I/O."""
        self.metrics = metrics
        self.clock = clock
        self.closed_counter_grace_s = closed_counter_grace_s
        self.shards: dict[str, ShardStatus] = {}
        self.started_s = clock()
        self.running = False
        """True once the worker serves (stream resolved, coordinator started); /readyz waits for it."""
        self.stream_problem: str | None = None
        """Set while the stream read is disabled or replaced (``stream_disabled``...): /readyz says not ready."""
        for state in SHARD_STATES:
            metrics.shards.labels(state=state).set_function(functools.partial(self.count, state))

    def shard(self, shard_id: str) -> ShardStatus:
        """Return the status entry of a shard (created on first use)."""
        status = self.shards.get(shard_id)
        if status is None:
            now = self.clock()
            status = self.shards[shard_id] = ShardStatus(shard_id, last_progress_s=now, current_since_s=now)
        return status

    def count(self, state: str) -> int:
        """Shards in ``state``; "owned" counts every shard held and not finished (closed) or failed."""
        if state == "owned":
            return sum(1 for s in self.shards.values() if s.state not in ("closed", "stopped"))
        return sum(1 for s in self.shards.values() if s.state == state)

    def set_state(self, shard_id: str, state: ShardState, error: str | None = None) -> None:
        """Move a shard to a state; a closed shard's per-shard gauges go (bounded label cardinality)."""
        status = self.shard(shard_id)
        previous = status.state
        status.state = state
        status.error = error
        now = self.clock()
        if state == "closed":
            status.closed_at_s = now
            status.newest_record_s = None
            self.metrics.remove_shard_series(shard_id, counters=False)
        elif state in _LAGGING_STATES and previous not in _LAGGING_STATES:
            if state == "reading":
                # The stored checkpoint is current as of taking the shard: a shard that waited long
                # on its parent must not start with a large checkpoint age.
                status.current_since_s = now
                status.last_progress_s = now
            self._export_ages(status)
        self.refresh_gauges()

    def _export_ages(self, status: ShardStatus) -> None:
        clock, shard = self.clock, status.shard_id
        self.metrics.iterator_age.labels(shard).set_function(lambda: status.iterator_age_s(clock()))
        self.metrics.checkpoint_age.labels(shard).set_function(lambda: status.checkpoint_age_s(clock()))

    def read(self, shard_id: str, *, newest_created_us: int) -> None:
        """Note a page of records read; ``newest_created_us`` is its last record's source creation time."""
        self.shard(shard_id).newest_record_s = newest_created_us / US_PER_S

    def caught_up(self, shard_id: str) -> None:
        """Note an empty read: nothing is behind, and the checkpoint covers everything read."""
        status = self.shard(shard_id)
        now = self.clock()
        status.last_progress_s = now
        status.current_since_s = now
        status.newest_record_s = None

    def batch_done(self, shard_id: str) -> None:
        """Every record of a page reached its outcome and was checkpointed."""
        self.shard(shard_id).last_progress_s = self.clock()

    def progressed(self, shard_id: str, *, iterator_age_s: float) -> None:
        """Older form of ``caught_up`` (age 0) / ``batch_done`` (age > 0, also records the age)."""
        if iterator_age_s <= 0:
            self.caught_up(shard_id)
            return
        status = self.shard(shard_id)
        if status.newest_record_s is None:
            status.newest_record_s = self.clock() - iterator_age_s
        self.batch_done(shard_id)

    def checkpointed(self, shard_id: str, sequence_number: str | None) -> None:
        """Record a saved checkpoint."""
        status = self.shard(shard_id)
        now = self.clock()
        status.checkpoint = sequence_number
        status.last_checkpoint_s = now
        status.current_since_s = now
        if status.state != "closed":
            self.metrics.last_checkpoint_timestamp.labels(shard=shard_id).set(now)

    def target(self, shard_id: str, target_id: str) -> TargetStatus:
        """Return one target's progress entry on a shard (created on first use)."""
        targets = self.shard(shard_id).targets
        status = targets.get(target_id)
        if status is None:
            status = targets[target_id] = TargetStatus(target_id)
        return status

    def targets_json(self) -> dict[str, dict[str, dict[str, object]]]:
        """Every shard's per-target progress (fan-out), by shard id then target id."""
        now = self.clock()
        return {
            sid: {tid: target.as_json(now) for tid, target in status.targets.items()}
            for sid, status in self.shards.items()
            if status.targets
        }

    def release(self, shard_id: str) -> None:
        """Forget a shard this worker no longer holds (lease lost or handed over): drop all its series."""
        self.shards.pop(shard_id, None)
        self.metrics.remove_shard_series(shard_id, counters=True)

    def refresh_gauges(self) -> None:
        """Housekeeping on change and on scrape: drop closed shards' counters after the grace period.

        The ages and per-state counts need no refresh: they are computed when collected.
        """
        now = self.clock()
        for status in self.shards.values():
            if (
                status.closed_at_s is not None
                and not status.counters_removed
                and now - status.closed_at_s >= self.closed_counter_grace_s
            ):
                self.metrics.remove_shard_series(status.shard_id, counters=True)
                status.counters_removed = True

    def not_ready(self, timeout_s: float) -> list[str]:
        """Shards stopped, or reading with no progress for ``timeout_s``, and a stream problem (empty: ready)."""
        now = self.clock()
        stuck = [
            s.shard_id
            for s in self.shards.values()
            if s.state == "stopped" or (s.state == "reading" and now - s.last_progress_s > timeout_s)
        ]
        return stuck if self.stream_problem is None else [*stuck, self.stream_problem]
