"""One shard read once, written to several targets: per target a bounded queue, a writer and a checkpoint.

The contract (DESIGN.md, "Fan-out"):

- **Hand-out.** The shard's reader (``ShardReader``, with this object as its processor) hands each batch
  to the queue of every *attached* target and goes on without waiting for it to be written. A queue holds
  at most ``fanout.max_buffered_batches`` batches waiting (plus the one being written); while it is full
  the reader waits for room: a slower target slows the reader. A target whose queue stays full for
  ``fanout.detach_after_s``, or at once while its ``TargetHealth`` says unavailable, is **detached**: the
  batch is not queued for it and the reader goes on for the others.
- **Per-target order and checkpoints.** Each target's writer task writes its queue in order (so each key's
  changes in source order, per target) and moves that target's position. The shard's checkpoint holds
  every target's position (``Checkpoint.targets``) and, as ``sequence_number``, the slowest one, in one
  write (fenced by the lease when leases are on). After a restart the reader resumes from the slowest
  target and every target skips the records at or before its own position.
- **Catch-up.** A detached target, once its queue is written, reads the shard itself from its own
  position (``catch_up.py``, a ``ShardReader`` of its own). At most one catch-up reader runs per shard
  (detached targets take turns), so a shard never has more than two readers (DynamoDB Streams' limit).
  The catch-up writes only records the reader already handed out; when its position equals the reader's
  hand-out position it is attached again, the check and the switch in one step with no await between:
  the next batch the reader hands out is the first it has not written: no gap, no duplicate.
- **Shard end.** The reader at the shard's end waits until every target has written every record; only
  then is the shard-end checkpoint written (which lets the children start). With
  ``fanout.on_shard_end_while_detached: wait`` a target down for long thus holds the shard's children
  back until it caught up (or dead-lettered near retention). With ``dead_letter``, a target that is
  detached (or attached but unavailable) when the shard ends is *set aside*: the write it is held in is
  cancelled and every record of the shard it has not written goes to the dead-letter destination (naming
  the target), its queue first, then through its catch-up reader; then the shard ends for every target.
- A failure of any target's writer (a poison record, a lost lease) stops the whole shard, as one target did.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from typing import TYPE_CHECKING

import structlog

from replicator.core.errors import TargetDetachedError
from replicator.core.retry import retrying
from replicator.pipeline.processor import BatchResult

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping, Sequence
    from typing import Any

    from replicator.checkpoint import Checkpoint, CheckpointStore
    from replicator.core.config import FanOutConfig
    from replicator.core.records import ChangeRecord
    from replicator.core.retry import RetryPolicy
    from replicator.observe.metrics import Metrics
    from replicator.observe.state import WorkerState
    from replicator.pipeline.processor import BatchProcessor
    from replicator.runtime.consumer import ReaderSettings
    from replicator.source.api import ChangeSource
    from replicator.source.shards import Shard

log = structlog.get_logger(__name__)

HEALTH_POLL_S = 0.5
"""While waiting for room in a full queue, how often the target's health is looked at again."""


def seq_int(sequence_number: str) -> int:
    """A sequence number as the integer it is (they are decimal strings of varying length)."""
    return int(sequence_number)


@dataclasses.dataclass(slots=True)
class TargetLane:
    """One target on one shard: its queue of batches, its position, and whether the reader feeds it."""

    target_id: str
    processor: BatchProcessor
    position: str | None
    queue: deque[list[ChangeRecord]] = dataclasses.field(default_factory=deque)
    attached: bool = True
    writing: bool = False
    max_queued: int = 0
    """The most batches ever waiting in the queue: never above ``max_buffered_batches`` (tests read it)."""
    detached_count: int = 0
    has_batch: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set by the reader when it queues a batch; only the writer, which waits on it, clears it."""
    has_room: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set by the writer when a batch leaves the queue; only the reader, which waits on it, clears it."""
    set_aside: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set at the shard's end (policy dead_letter): its unwritten records are dead-lettered, not written."""

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return not self.queue and not self.writing

    def unavailable(self) -> bool:
        """The target refuses writes (its ``TargetHealth`` holds them)."""
        return self.processor.target.unavailable_code is not None

    def undone(self, records: Sequence[ChangeRecord]) -> list[ChangeRecord]:
        """The records after this target's position (a restart resumes from the slowest target)."""
        if self.position is None:
            return list(records)
        done = seq_int(self.position)
        return [r for r in records if seq_int(r.sequence_number) > done]


class ShardFanOut:
    """The targets of one shard: the reader's processor (``process`` hands out) and the checkpoint writer."""

    def __init__(
        self,
        *,
        api: ChangeSource,
        settings: ReaderSettings,
        stream_arn: str,
        shard: Shard,
        checkpoint: Checkpoint | None,
        processors: Mapping[str, BatchProcessor],
        store: CheckpointStore,
        state: WorkerState,
        metrics: Metrics,
        cfg: FanOutConfig,
        retry_policy: RetryPolicy,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Wire the targets; no I/O and no task (``start`` starts the writers).

        ``stop``: the reader's stop signal: once set, a full queue is not waited on (its target resumes
        from its own checkpoint after the restart or on the worker that takes the shard over).
        """
        self.stop = stop
        self.api = api
        self.settings = settings
        self.stream_arn = stream_arn
        self.shard = shard
        self.store = store
        self.state = state
        self.metrics = metrics
        self.max_buffered = cfg.max_buffered_batches
        self.detach_after_s = cfg.detach_after_s
        self.on_shard_end = cfg.on_shard_end_while_detached
        self.retry_policy = retry_policy
        self.lanes = {
            tid: TargetLane(tid, processor, checkpoint.target_position(tid) if checkpoint else None)
            for tid, processor in processors.items()
        }
        self.handed: str | None = checkpoint.sequence_number if checkpoint else None
        """The last record handed out by the reader (where an attached target's queue continues)."""
        self.first_handed: str | None = None
        """The first record the reader handed out: where a target with no position of its own starts."""
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        self.progress = asyncio.Event()
        """Set whenever a target's position moves or it is attached again (shard end waits on it)."""
        self.catch_up_slot = asyncio.Lock()
        """Held by the shard's one catch-up reader: a shard has at most two readers."""
        self.readers = 1
        self.max_readers = 1
        """Readers of this shard at once (the reader and at most one catch-up); never above 2 (tests read it)."""
        self._save_lock = asyncio.Lock()
        self._saved: tuple[str | None, dict[str, str], bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.log = log.bind(shard_id=shard.shard_id, stream_arn=stream_arn)
        for lane in self.lanes.values():
            self._report(lane)

    # --- the reader's side ---------------------------------------------------------------------------

    async def process(self, records: Sequence[ChangeRecord]) -> BatchResult:
        """Hand a batch to every attached target's queue, waiting for room only up to the detach bound."""
        if self.failure is not None:
            raise self.failure
        if not records:
            return BatchResult()
        # One step, no await: who gets this batch, and how far the hand-out reaches (catch-up compares to it).
        recipients = [lane for lane in self.lanes.values() if lane.attached]
        if self.first_handed is None:
            self.first_handed = records[0].sequence_number
        self.handed = records[-1].sequence_number
        for lane in recipients:
            batch = lane.undone(records)
            if batch:
                await self._offer(lane, batch)
            if self.failure is not None:
                raise self.failure
        return BatchResult()

    async def _offer(self, lane: TargetLane, batch: list[ChangeRecord]) -> None:
        deadline = time.monotonic() + self.detach_after_s
        while len(lane.queue) >= self.max_buffered:
            now = time.monotonic()
            stopping = self.stop is not None and self.stop.is_set()
            if now >= deadline or lane.unavailable() or self.failure is not None or stopping:
                self._detach(lane, "unavailable" if lane.unavailable() else "stopping" if stopping else "queue_full")
                return
            lane.has_room.clear()
            if len(lane.queue) < self.max_buffered:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.has_room.wait(), timeout=min(HEALTH_POLL_S, deadline - now))
            if not lane.attached:
                return
        lane.queue.append(batch)
        lane.max_queued = max(lane.max_queued, len(lane.queue))
        lane.has_batch.set()
        self._report(lane)

    def _detach(self, lane: TargetLane, why: str) -> None:
        lane.attached = False
        lane.detached_count += 1
        self.metrics.errors.labels(kind="target_detached").inc()
        self.log.warning("target_detached", target=lane.target_id, reason=why, checkpoint=lane.position)
        self._report(lane)

    def attach_if_caught_up(self, lane: TargetLane) -> bool:
        """Attach ``lane`` again when it has written everything handed out; no await: check and switch at once."""
        if lane.attached:
            return True
        handed = self.handed
        if handed is None or (lane.position is not None and seq_int(lane.position) >= seq_int(handed)):
            lane.attached = True
            self.log.info("target_attached", target=lane.target_id, checkpoint=lane.position)
            self._report(lane)
            self.progress.set()
            return True
        return False

    def done(self) -> bool:
        """Every target attached with nothing queued: every record handed out is written everywhere."""
        return all(lane.attached and lane.idle for lane in self.lanes.values())

    async def finish_shard(self) -> None:
        """At the shard's end: wait until every target wrote every record, then save the shard-end checkpoint."""
        while not self.done():
            if self.failure is not None:
                raise self.failure
            self._set_aside_stuck_targets()
            self.progress.clear()
            # A target may turn unavailable while the others finish: look at its health again now and then.
            await _first(self.progress.wait(), self.failed.wait(), asyncio.sleep(HEALTH_POLL_S))
        if self.failure is not None:
            raise self.failure
        await self.save(shard_end=True)

    def _set_aside_stuck_targets(self) -> None:
        """Policy dead_letter: a target detached or unavailable at the shard's end is set aside (module doc)."""
        if self.on_shard_end != "dead_letter":
            return
        for lane in self.lanes.values():
            if lane.set_aside.is_set() or (lane.attached and lane.idle):
                continue
            if not lane.attached or lane.unavailable():
                lane.set_aside.set()
                self.metrics.errors.labels(kind="target_set_aside").inc()
                self.log.warning(
                    "target_set_aside",
                    target=lane.target_id,
                    checkpoint=lane.position,
                    action=f"the rest of the shard is dead-lettered; replay with redrive --target {lane.target_id}",
                )

    # --- the writers' side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start one writer task per target."""
        for lane in self.lanes.values():
            task = asyncio.create_task(self._guard(lane), name=f"fanout:{self.shard.shard_id}:{lane.target_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guard(self, lane: TargetLane) -> None:
        try:
            await self._write_loop(lane)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - any writer failure stops the shard, re-raised by the reader
            if self.failure is None:
                self.failure = exc
            self.failed.set()
            self.progress.set()

    async def _write_loop(self, lane: TargetLane) -> None:
        from replicator.runtime.catch_up import catch_up  # noqa: PLC0415 - catch_up builds on this module

        while True:
            if lane.queue:
                lane.writing = True
                batch = lane.queue[0]
                try:
                    await self.write(lane, batch)
                finally:
                    lane.queue.popleft()
                    lane.writing = False
                    lane.has_room.set()
                    self._report(lane)
                continue
            if not lane.attached and not self.stopping.is_set():
                await catch_up(self, lane)
                continue
            self.progress.set()
            # Cleared only here, then the queue looked at again: a batch queued meanwhile is not missed.
            lane.has_batch.clear()
            if lane.queue:
                continue
            await _first(lane.has_batch.wait(), self.stopping.wait())
            if self.stopping.is_set() and lane.idle:
                return

    async def write(self, lane: TargetLane, records: Sequence[ChangeRecord]) -> None:
        """Write records (in shard order, after ``lane.position``) to one target, then save its position.

        A target set aside (shard end, policy dead_letter) gets its records dead-lettered instead; a write
        held when that happens is cancelled and its records dead-lettered (those it wrote meanwhile are then
        both written and dead-lettered: a redrive of them is superseded).
        """
        if self.on_shard_end == "dead_letter":
            await self._write_or_set_aside(lane, records)
        else:
            await lane.processor.process(records)
        lane.position = records[-1].sequence_number
        status = self.state.target(self.shard.shard_id, lane.target_id)
        status.newest_done_s = records[-1].approximate_creation_time_us / 1_000_000
        await self.save()
        self.progress.set()

    async def _write_or_set_aside(self, lane: TargetLane, records: Sequence[ChangeRecord]) -> None:
        if not lane.set_aside.is_set():
            writing = asyncio.ensure_future(lane.processor.process(records))
            aside = asyncio.ensure_future(lane.set_aside.wait())
            try:
                await asyncio.wait({writing, aside}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                aside.cancel()
                if not writing.done():
                    writing.cancel()
                    await asyncio.gather(writing, return_exceptions=True)
            if not writing.cancelled():
                writing.result()
                return
        await lane.processor.dead_letter_all(records, TargetDetachedError(lane.target_id, self.shard.shard_id))

    async def save(self, *, shard_end: bool = False) -> None:
        """Save every target's position and the slowest as the shard's, in one write (skipped when unchanged)."""
        async with self._save_lock:
            positions = {tid: lane.position for tid, lane in self.lanes.items() if lane.position is not None}
            slowest = None
            if len(positions) == len(self.lanes):
                slowest = min(positions.values(), key=seq_int)
            if shard_end:
                slowest = self.handed
            key = (slowest, positions, shard_end)
            if key == self._saved:
                return
            await retrying(
                "SaveCheckpoint",
                lambda: self.store.save(
                    self.stream_arn,
                    self.shard.shard_id,
                    slowest,
                    shard_end=shard_end,
                    parent_shard_id=self.shard.parent_shard_id,
                    targets=positions,
                ),
                policy=self.retry_policy,
                metrics=self.metrics,
            )
            self._saved = key
        self.state.checkpointed(self.shard.shard_id, slowest)
        for lane in self.lanes.values():
            self._report(lane)

    def _report(self, lane: TargetLane) -> None:
        status = self.state.target(self.shard.shard_id, lane.target_id)
        status.checkpoint = lane.position
        status.attached = lane.attached
        status.queued_batches = len(lane.queue)
        if lane.attached and lane.idle and lane.position == self.handed:
            status.newest_done_s = None

    async def drain(self) -> None:
        """After the reader stopped: let every queued batch be written and every writer (and catch-up) end."""
        self.stopping.set()
        for lane in self.lanes.values():
            lane.has_batch.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        """Cancel every writer (and catch-up) still running; their records are read again after a restart."""
        self.stopping.set()
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of several coroutines returns; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
