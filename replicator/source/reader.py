"""One shard's reader: poll GetRecords, process each batch, checkpoint after it, until the shard ends.

Polling: a shard that returned a full page is polled again at once (catching up); one that returned
records, every ``poll_interval_s`` (Lambda polls 4 times/s); an empty read backs off towards
``max_idle_poll_interval_s``. Throttling is retried with backoff (``retry.py``).

Batching window (``failure.maximum_batching_window_seconds``, as Lambda's): with a window, records are
gathered over several GetRecords calls until ``batch_size`` records, the window has passed since the
first one, or the shard ends; then processed and checkpointed. Gathered records are not checkpointed,
so a crash or an expired iterator only means reading them again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Literal

import structlog

from replicator.checkpoint import Checkpoint, CheckpointStore
from replicator.config import ReaderConfig
from replicator.errors import ExpiredIteratorError, LeaseLostError, ShardGoneError, TrimmedDataError
from replicator.metrics import Metrics
from replicator.processor import BatchProcessor
from replicator.records import ChangeRecord, from_stream_record
from replicator.retry import RetryPolicy, retrying
from replicator.source.shards import Shard
from replicator.source.streams import IteratorType, StreamsAPI
from replicator.state import WorkerState

log = structlog.get_logger(__name__)

ReaderExit = Literal["shard_end", "stopped", "lease_lost"]


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderSettings:
    """What a reader needs from the configuration."""

    reader: ReaderConfig
    batch_size: int
    initial_position: Literal["TRIM_HORIZON", "LATEST"]
    batching_window_s: float = 0.0


class ShardReader:
    """Reads one shard from its checkpoint to its end (or until told to stop)."""

    def __init__(
        self,
        *,
        api: StreamsAPI,
        stream_arn: str,
        shard: Shard,
        checkpoint: Checkpoint | None,
        store: CheckpointStore,
        processor: BatchProcessor,
        state: WorkerState,
        metrics: Metrics,
        settings: ReaderSettings,
        retry_policy: RetryPolicy,
        stop: asyncio.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wire the reader; no I/O (``run`` does it)."""
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
        self.position: str | None = checkpoint.sequence_number if checkpoint else None
        self.log = log.bind(shard_id=shard.shard_id, stream_arn=stream_arn)

    async def _iterator(self) -> str:
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
        shard_id = self.shard.shard_id
        self.state.set_state(shard_id, "reading")
        cfg = self.settings.reader
        iterator = await self._get_iterator_handling_trim()
        idle_delay = cfg.poll_interval_s
        window = self.settings.batching_window_s
        buffer: list[dict[str, object]] = []
        buffer_since = 0.0
        while not self.stop.is_set():
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
                iterator = await self._get_iterator_handling_trim()
                continue
            except (TrimmedDataError, ShardGoneError) as exc:
                buffer = []
                iterator = await self._on_trimmed(exc)
                continue
            self.metrics.get_records_calls.labels(result="records" if raw else "empty").inc()
            if raw:
                if not buffer:
                    buffer_since = time.monotonic()
                buffer.extend(raw)
                idle_delay = cfg.poll_interval_s
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
            if next_iterator is None:
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
            delay = cfg.poll_interval_s if raw else idle_delay
            if not raw:
                idle_delay = min(cfg.max_idle_poll_interval_s, max(idle_delay * 2, cfg.poll_interval_s))
            if buffer:
                # Wake up in time to process what was gathered when the window closes.
                delay = max(0.0, min(delay, buffer_since + window - time.monotonic()))
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        return "stopped"

    async def _process(self, raw: list[dict[str, object]]) -> None:
        shard_id = self.shard.shard_id
        records = [from_stream_record(r, shard_id=shard_id, stream_arn=self.stream_arn) for r in raw]
        self.metrics.records_read.labels(shard=shard_id).inc(len(records))
        # Behind by the newest record's age from now until a read comes back empty (state.py).
        self.state.read(shard_id, newest_created_s=records[-1].approximate_creation_time_s)
        size = self.settings.batch_size
        for start in range(0, len(records), size):
            batch: list[ChangeRecord] = records[start : start + size]
            await self.processor.process(batch)
            last = batch[-1].sequence_number
            try:
                await retrying(
                    "SaveCheckpoint",
                    lambda last=last: self.store.save(self.stream_arn, shard_id, last, parent_shard_id=self.shard.parent_shard_id),  # type: ignore[misc]
                    policy=self.retry_policy,
                    metrics=self.metrics,
                )
            except LeaseLostError:
                raise
            self.position = last
            self.state.checkpointed(shard_id, last)
            self.log.debug("checkpoint", sequence_number=last, records=len(batch))
        self.state.batch_done(shard_id)

    async def _get_iterator_handling_trim(self) -> str:
        while True:
            try:
                return await self._iterator()
            except (TrimmedDataError, ShardGoneError) as exc:
                return await self._on_trimmed(exc)

    async def _on_trimmed(self, exc: Exception) -> str:
        """Never skip trimmed data silently: stop the shard, unless the config says skip."""
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
        return await retrying(
            "GetShardIterator",
            lambda: self.api.get_iterator(self.stream_arn, self.shard.shard_id, "TRIM_HORIZON"),
            policy=self.retry_policy,
            metrics=self.metrics,
        )
