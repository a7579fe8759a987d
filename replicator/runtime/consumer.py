"""One shard's reader: poll GetRecords, process each batch, checkpoint after it, until the shard ends.

Polling: a shard that returned a full page is polled again at once (catching up); one that returned
records, every ``poll_interval_s`` counted from the previous poll's start (Lambda polls 4 times/s); each
consecutive empty read doubles the wait up to ``max_idle_poll_interval_s`` (``polling.IdleBackoff``: idle
shards cost fewer GetRecords), and the first read with records goes back to the fast interval.
Throttling is retried with backoff (``retry.py``).

Batching window (``failure.maximum_batching_window_seconds``, as Lambda's): with a window, records are
gathered over several GetRecords calls until ``batch_size`` records, the window has passed since the
first one, or the shard ends; then processed and checkpointed. Gathered records are not checkpointed,
so a crash or an expired iterator only means reading them again.

Parallelization (``failure.parallelization_factor`` N > 1, as Lambda's): up to N batches of the shard are
in flight at once, and the next GetRecords page is read while they are written. Each batch's records are
routed to N lanes by a hash of their key; a lane runs its sub-batches one after another, so one key's
changes are still applied in source order. The checkpoint only moves up to the highest sequence number
below which every record is done (``CheckpointTracker``), so a crash or a failed lane never skips a
record. With N = 1 a batch is processed and checkpointed before the next read, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Literal, Protocol

import structlog

from replicator.checkpoint import Checkpoint, CheckpointStore
from replicator.core.config import ReaderConfig
from replicator.core.errors import ExpiredIteratorError, ShardGoneError, TrimmedDataError
from replicator.core.records import ChangeRecord
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics
from replicator.observe.state import ShardState
from replicator.pipeline.fanout import RecordProcessor
from replicator.runtime.polling import IdleBackoff
from replicator.source.api import ChangeSource, IteratorType, ShardIterator
from replicator.source.shards import Shard

log = structlog.get_logger(__name__)

ReaderExit = Literal["shard_end", "stopped", "lease_lost"]

NOTHING_LOST_WITHIN_S = 23 * 3600.0
"""An empty read after the checkpoint this recently proves no later record was trimmed: records stay 24 h
(DynamoDB Streams; Kinesis at least 24 h), less an hour for a record not yet visible to that read."""


class ReaderState(Protocol):
    """What a reader reports about its shard: ``WorkerState``, or a fan-out's view of it (``shard_fanout``)."""

    def set_state(self, shard_id: str, state: ShardState, error: str | None = None) -> None:
        """Move the shard to a state."""
        ...

    def read(self, shard_id: str, *, newest_created_us: int) -> None:
        """Note a page of records read."""
        ...

    def caught_up(self, shard_id: str) -> None:
        """Note an empty read."""
        ...

    def batch_done(self, shard_id: str) -> None:
        """Note a page done."""
        ...

    def checkpointed(self, shard_id: str, sequence_number: str | None) -> None:
        """Note a saved checkpoint."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderSettings:
    """What a reader needs from the configuration."""

    reader: ReaderConfig
    batch_size: int
    initial_position: Literal["TRIM_HORIZON", "LATEST"]
    batching_window_s: float = 0.0
    parallelization_factor: int = 1


class CheckpointTracker:
    """Records of one shard in read order, and which are done: the checkpoint is the done prefix's end.

    Lanes finish out of order; a checkpoint past a record that is not done would skip it after a crash.
    """

    def __init__(self) -> None:
        """Nothing pending."""
        self._order: collections.deque[str] = collections.deque()
        self._done: set[str] = set()

    def add(self, sequence_numbers: Iterable[str]) -> None:
        """Append dispatched records, in shard order."""
        self._order.extend(sequence_numbers)

    def done(self, sequence_numbers: Iterable[str]) -> None:
        """Mark records that reached their outcome."""
        self._done.update(sequence_numbers)

    def advance(self) -> str | None:
        """Return the new checkpoint (the highest sequence number below which all are done), or None."""
        last = None
        order, done = self._order, self._done
        while order and order[0] in done:
            last = order.popleft()
            done.discard(last)
        return last

    @property
    def pending(self) -> int:
        """Records dispatched and not yet below the checkpoint."""
        return len(self._order)


def lane_of(record: ChangeRecord, lanes: int) -> int:
    """Return the lane of a record's key.

    ``hash`` (SipHash) differs between processes, which is harmless: lanes only order work within this
    process. (CRC32 was tried and is linear: keys differing in one character all fell in one lane.)
    """
    return hash(record.key_id) % lanes


class ShardReader:
    """Reads one shard from its checkpoint to its end (or until told to stop)."""

    def __init__(
        self,
        *,
        api: ChangeSource,
        stream_arn: str,
        shard: Shard,
        checkpoint: Checkpoint | None,
        store: CheckpointStore,
        processor: RecordProcessor,
        state: ReaderState,
        metrics: Metrics,
        settings: ReaderSettings,
        retry_policy: RetryPolicy,
        stop: asyncio.Event,
        clock: Callable[[], float] = time.time,
        pause: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """Wire the reader; no I/O (``run`` does it). ``pause``: waits between polls (default: until stop)."""
        self.api = api
        self.stream_arn = stream_arn
        self.shard = shard
        self.store = store
        self.processor = processor
        self.state = state
        self.metrics = metrics
        self.settings = settings
        self.retry_policy = retry_policy
        self.stop = stop
        self.clock = clock
        self.pause = pause or self._until_stop
        self.position: str | None = checkpoint.sequence_number if checkpoint else None
        self.log = log.bind(shard_id=shard.shard_id, stream_arn=stream_arn)
        self._lanes = settings.parallelization_factor
        self._tracker = CheckpointTracker()
        self._inflight: set[asyncio.Future[list[BaseException | None]]] = set()
        self._lane_tail: list[asyncio.Task[None] | None] = [None] * self._lanes
        # Every lane task not yet finished: a lane is a chain, and its tail alone does not reach the
        # sub-batch actually writing.
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._lane_error: BaseException | None = None
        self._nothing_after: tuple[str, float] | None = None
        """(sequence number, wall time): a read just after that record came back empty at that time."""

    async def _iterator(self) -> ShardIterator:
        """An iterator just after the last record done, or at the initial position."""
        kind: IteratorType = "AFTER_SEQUENCE_NUMBER" if self.position else self.settings.initial_position
        return await retrying(
            "GetShardIterator",
            lambda: self.api.get_iterator(self.stream_arn, self.shard.shard_id, kind, self.position),
            policy=self.retry_policy,
            metrics=self.metrics,
        )

    async def run(self) -> ReaderExit:
        """Read until the shard ends or ``stop`` is set; the current batch always finishes first.

        Raises TrimmedDataError (unless configured to skip), PoisonRecordError, or an error the retry
        policy gave up on; the coordinator marks the shard stopped.
        """
        try:
            exit_ = await self._run()
            await self._drain()
        finally:
            # An error (or cancellation) left batches in flight: their records are read again after restart.
            pending = [task for task in self._lane_tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        return exit_

    async def _run(self) -> ReaderExit:  # noqa: C901, PLR0912, PLR0915 - the poll loop reads best whole
        shard_id = self.shard.shard_id
        self.state.set_state(shard_id, "reading")
        cfg = self.settings.reader
        iterator = await self._get_iterator_handling_trim()
        idle = IdleBackoff(fast_s=cfg.poll_interval_s, max_s=cfg.max_idle_poll_interval_s)
        window = self.settings.batching_window_s
        buffer: list[ChangeRecord] = []
        buffer_since = 0.0
        while not self.stop.is_set():
            polled_at = time.monotonic()
            try:
                raw, next_iterator = await retrying(
                    "GetRecords",
                    lambda it=iterator: self.api.get_records(it, cfg.get_records_limit),  # type: ignore[misc]
                    policy=self.retry_policy,
                    metrics=self.metrics,
                )
            except ExpiredIteratorError:
                # Iterators live 15 minutes; a long outage of the target outlives one.
                self.metrics.errors.labels(kind="expired_iterator").inc()
                self.log.info("iterator_expired", checkpoint=self.position)
                # The new iterator starts after the checkpoint: gathered records come again.
                buffer = []
                await self._drain()
                iterator = await self._get_iterator_handling_trim()
                continue
            except (TrimmedDataError, ShardGoneError) as exc:
                buffer = []
                await self._drain()
                iterator = await self._on_trimmed(exc)
                continue
            if self._inflight:
                await self._collect(block=False)
            self.metrics.get_records_calls.labels(result="records" if raw else "empty").inc()
            if raw:
                if not buffer:
                    buffer_since = time.monotonic()
                buffer.extend(raw)
                idle.after_records(self.clock() - raw[-1].approximate_creation_time_s)
            flush = (
                window <= 0
                or next_iterator is None
                or len(buffer) >= self.settings.batch_size
                or time.monotonic() - buffer_since >= window
            )
            if buffer and flush:
                await self._process(buffer)
                buffer = []
            elif not raw and not buffer:
                self.state.caught_up(shard_id)
                if iterator.position is not None:
                    self._nothing_after = (iterator.position, self.clock())
            if next_iterator is None:
                await self._drain()
                await retrying(
                    "SaveCheckpoint",
                    lambda: self.store.save(
                        self.stream_arn,
                        shard_id,
                        self.position,
                        shard_end=True,
                        parent_shard_id=self.shard.parent_shard_id,
                    ),
                    policy=self.retry_policy,
                    metrics=self.metrics,
                )
                self.state.checkpointed(shard_id, self.position)
                self.log.info("shard_end", checkpoint=self.position)
                return "shard_end"
            iterator = next_iterator
            if len(raw) >= cfg.get_records_limit:
                continue
            # While records flow the shard is polled every poll_interval_s from the start of the last poll,
            # not that long after its batch was written: the batch's time counts towards the interval
            # (measured in bench/: p50 lag fell by about the batch time).
            delay = cfg.poll_interval_s - (time.monotonic() - polled_at) if raw else idle.after_empty()
            if buffer:
                # Wake up in time to process what was gathered when the window closes.
                delay = max(0.0, min(delay, buffer_since + window - time.monotonic()))
            if delay > 0:
                await self.pause(delay)
        return "stopped"

    async def _until_stop(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=delay_s)

    async def _process(self, records: list[ChangeRecord]) -> None:
        shard_id = self.shard.shard_id
        self.metrics.records_read.labels(shard=shard_id).inc(len(records))
        # Behind by the newest record's age from now until a read comes back empty (state.py).
        self.state.read(shard_id, newest_created_us=records[-1].approximate_creation_time_us)
        size = self.settings.batch_size
        if self._lanes > 1:
            for start in range(0, len(records), size):
                await self._dispatch(records[start : start + size])
            return
        for start in range(0, len(records), size):
            batch: list[ChangeRecord] = records[start : start + size]
            await self.processor.process(batch)
            last = batch[-1].sequence_number
            await retrying(
                "SaveCheckpoint",
                lambda last=last: self.store.save(
                    self.stream_arn, shard_id, last, parent_shard_id=self.shard.parent_shard_id
                ),  # type: ignore[misc]
                policy=self.retry_policy,
                metrics=self.metrics,
            )
            self.position = last
            self.state.checkpointed(shard_id, last)
            self.log.debug("checkpoint", sequence_number=last, records=len(batch))
        self.state.batch_done(shard_id)

    async def _dispatch(self, batch: Sequence[ChangeRecord]) -> None:
        """Start a batch on the lanes, once fewer than ``parallelization_factor`` batches are in flight."""
        while len(self._inflight) >= self._lanes:
            await self._collect(block=True)
        self._tracker.add(r.sequence_number for r in batch)
        subs: list[list[ChangeRecord]] = [[] for _ in range(self._lanes)]
        for record in batch:
            subs[lane_of(record, self._lanes)].append(record)
        parts = []
        for lane, sub in enumerate(subs):
            if sub:
                task = asyncio.create_task(self._run_lane(self._lane_tail[lane], sub))
                self._lane_tail[lane] = task
                self._lane_tasks.add(task)
                task.add_done_callback(self._lane_tasks.discard)
                parts.append(task)
        # return_exceptions: a failed lane must not leave its siblings running unobserved; the failure
        # itself reaches _collect as _lane_error.
        self._inflight.add(asyncio.gather(*parts, return_exceptions=True))

    async def _run_lane(self, previous: asyncio.Task[None] | None, sub: list[ChangeRecord]) -> None:
        if previous is not None:
            # The lane's earlier sub-batch first: per-key order. If it failed, this one must not run.
            await asyncio.wait([previous])
            if self._lane_error is not None:
                return
        try:
            await self.processor.process(sub)
        except BaseException as exc:
            if self._lane_error is None:
                self._lane_error = exc
            raise
        self._tracker.done(r.sequence_number for r in sub)

    async def _collect(self, *, block: bool) -> None:
        """Reap finished batches (waiting for one when ``block``), raise a lane's failure, save progress."""
        if block:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
        finished = {f for f in self._inflight if f.done()}
        self._inflight -= finished
        for f in finished:
            if not f.cancelled():
                f.exception()  # retrieved: the lane's own error is raised below (as _lane_error)
        if self._lane_error is not None:
            # Records past the failed one stay unchecked-pointed; the caller's finally cancels the rest.
            raise self._lane_error
        for _ in finished:
            self.state.batch_done(self.shard.shard_id)
        await self._save_progress()

    async def _drain(self) -> None:
        """Wait for every batch in flight and checkpoint them (shard end, stop, a new iterator)."""
        while self._inflight:
            await self._collect(block=True)

    async def final_checkpoint(self, policy: RetryPolicy) -> None:
        """After ``run`` ended, cancelled too: save what finished lanes did that no checkpoint covers yet."""
        await self._save_progress(policy)

    async def _save_progress(self, policy: RetryPolicy | None = None) -> None:
        last = self._tracker.advance()
        if last is None:
            return
        shard_id, parent = self.shard.shard_id, self.shard.parent_shard_id
        await retrying(
            "SaveCheckpoint",
            lambda: self.store.save(self.stream_arn, shard_id, last, parent_shard_id=parent),
            policy=policy or self.retry_policy,
            metrics=self.metrics,
        )
        self.position = last
        self.state.checkpointed(shard_id, last)
        self.log.debug("checkpoint", sequence_number=last)

    async def _get_iterator_handling_trim(self) -> ShardIterator:
        while True:
            try:
                return await self._iterator()
            except (TrimmedDataError, ShardGoneError) as exc:
                return await self._on_trimmed(exc)

    async def _on_trimmed(self, exc: Exception) -> ShardIterator:
        """Never skip trimmed data silently: stop the shard, unless the config says skip.

        Unless only the checkpointed record aged out: a read after it came back empty recently enough
        that every later record is still in the shard (a quiet shard). Then read on, without an alarm.
        """
        if isinstance(exc, TrimmedDataError) and self._only_checkpoint_aged_out():
            self.log.info("checkpoint_aged_out", checkpoint=self.position, action="reading on from TRIM_HORIZON")
            return await self._trim_horizon()
        self.metrics.errors.labels(kind="trimmed_data").inc()
        if self.settings.reader.on_trimmed_data != "skip_to_trim_horizon" or isinstance(exc, ShardGoneError):
            self.log.error(
                "trimmed_data",
                checkpoint=self.position,
                action="shard stopped; set reader.on_trimmed_data: skip_to_trim_horizon to skip the lost records",
            )
            raise exc
        self.log.warning("trimmed_data_skipped", checkpoint=self.position, action="skipping to TRIM_HORIZON")
        self.metrics.errors.labels(kind="trimmed_data_skipped").inc()
        return await self._trim_horizon()

    async def _trim_horizon(self) -> ShardIterator:
        return await retrying(
            "GetShardIterator",
            lambda: self.api.get_iterator(self.stream_arn, self.shard.shard_id, "TRIM_HORIZON"),
            policy=self.retry_policy,
            metrics=self.metrics,
        )

    def _only_checkpoint_aged_out(self) -> bool:
        """Whether a read after the checkpoint came back empty recently enough that nothing after it aged out."""
        seen = self._nothing_after
        if seen is None or self.position is None or seen[0] != self.position:
            return False
        return self.clock() - seen[1] < NOTHING_LOST_WITHIN_S
