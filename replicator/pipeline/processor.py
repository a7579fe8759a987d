"""A batch of one shard's changes, from pipeline to target: shared by the service and the Lambda handler.

Ordering: changes to one key are applied in source order (a batch holds one shard's records, and a
shard's batches are processed one after another); writes to different keys run concurrently. Within a
batch, a key's changes collapse to the one with the greatest version: last-writer-wins would discard the
others anyway, so they are counted ``collapsed`` and cost no write. If the target refuses that change, the
next greatest is written instead, so the key's earlier good changes are not lost.

Failure: transient errors are retried (``retry.py``). A record that cannot be written (a transform
raised, the target rejected it, it is older than ``maximum_record_age_s``, its write still failed
transiently after ``retry_policy.max_attempts``) goes to the dead-letter destination when one is
configured; without one, ``PoisonRecordError`` stops the shard before its checkpoint passes the record.
With ``bisect_on_error`` (``failure.bisect_batch_on_function_error``) an unexpected error raised for one
record is isolated to that record like the known ones, which is where Lambda's bisection converges;
without it such an error fails the whole batch (see DESIGN.md, "Failure handling").
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from replicator.core.errors import RecordRejectedError, ReplicatorError, TransformError, is_transient
from replicator.core.records import US_PER_S, ChangeRecord
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.logs import record_fields

if TYPE_CHECKING:
    # Annotations only: the Lambda handler imports this module for PoisonRecordError, and its
    # configuration, AWS and pipeline modules load in its environment set-up (runtime/wiring.py).
    from replicator.observe.metrics import Metrics
    from replicator.pipeline.stages import Pipeline
    from replicator.sink.deadletter import DeadLetterSink
    from replicator.sink.writer import ConditionalWriter, Write

log = structlog.get_logger(__name__)


class PoisonRecordError(ReplicatorError):
    """A record could not be replicated and there is no dead-letter destination to put it in."""

    def __init__(self, record: ChangeRecord, cause: BaseException) -> None:
        """Name the record by shard and sequence number (never by contents)."""
        self.record = record
        super().__init__(
            f"record at shard {record.shard_id} sequence {record.sequence_number} cannot be replicated "
            f"({type(cause).__name__}: {cause}); configure failure.on_failure.destination to dead-letter it"
        )


@dataclasses.dataclass(slots=True)
class BatchResult:
    """What became of each record of a batch."""

    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        """Records accounted for."""
        return sum(self.outcomes.values())


class BatchProcessor:
    """Runs batches through the pipeline and the conditional writer."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        writer: ConditionalWriter,
        metrics: Metrics,
        retry_policy: RetryPolicy,
        max_concurrent_writes: int,
        dead_letters: DeadLetterSink | None = None,
        maximum_record_age_s: float = -1,
        bisect_on_error: bool = True,
        clock: Callable[[], float] = time.time,
        source_writer: ConditionalWriter | None = None,
    ) -> None:
        """Wire the parts; no I/O. ``source_writer``: also tombstone deletes in the source (active-active)."""
        self.pipeline = pipeline
        self.writer = writer
        self.source_writer = source_writer
        self.metrics = metrics
        self.retry_policy = retry_policy
        self.dead_letters = dead_letters
        self.maximum_record_age_s = maximum_record_age_s
        self.bisect_on_error = bisect_on_error
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max_concurrent_writes)

    async def process(self, records: Sequence[ChangeRecord]) -> BatchResult:
        """Process one shard's batch; returns when every record has its outcome.

        Raises PoisonRecordError (no destination for a record that cannot be replicated) or a
        transient error when the retry policy gave up; then no record of the batch may be checkpointed.
        """
        result = BatchResult()
        by_key: dict[tuple[tuple[str, str, str], ...], list[Write]] = {}
        now = self._clock()
        for record in records:
            if (
                self.maximum_record_age_s >= 0
                and now - record.approximate_creation_time_us / US_PER_S > self.maximum_record_age_s
            ):
                await self._dead_letter(
                    record, RecordRejectedError(f"record older than {self.maximum_record_age_s} s"), 0, result
                )
                continue
            try:
                decision = self.pipeline.run(record)
            except (TransformError, RecordRejectedError) as exc:
                await self._dead_letter(record, exc, 1, result)
                continue
            except Exception as exc:
                if not self.bisect_on_error:
                    raise
                await self._dead_letter(record, exc, 1, result)
                continue
            if isinstance(decision, str):
                result.outcomes[decision] += 1
                continue
            changes = by_key.setdefault(decision.record.key_id, [])
            if changes:
                result.outcomes["collapsed"] += 1
            changes.append(decision)
        if by_key:
            # Greatest version first; the others stand by in case the target refuses it.
            await self._write_all([sorted(c, key=lambda w: w.version, reverse=True) for c in by_key.values()], result)
        self._account(result, records)
        return result

    async def _write_all(self, per_key: list[list[Write]], result: BatchResult) -> None:
        try:
            await asyncio.gather(*(self._write_key(changes, result) for changes in per_key))
        finally:
            # Counted once per batch, not per write: a labelled child lookup per record was measurable
            # (bench/). A batch holds one shard's records.
            if result.outcomes["replicated"]:
                shard = per_key[0][0].record.shard_id
                self.metrics.records_written.labels(shard=shard).inc(result.outcomes["replicated"])

    async def _write_key(self, changes: list[Write], result: BatchResult) -> None:
        """Write a key's winning change; if the target refuses it, its best collapsed change instead.

        Without the fallback the key's earlier good changes, counted ``collapsed``, would never be
        written and the target would stay at its state before the batch.
        """
        for position, write in enumerate(changes):
            if position:
                result.outcomes["collapsed"] -= 1  # it gets its own outcome now
            if not await self._write(write, result):
                return

    async def _write(self, write: Write, result: BatchResult) -> bool:
        """Write one change; True when the target refused it (dead-lettered), so a fallback may follow."""
        async with self._semaphore:
            try:
                outcome = await retrying(
                    "PutItem" if write.item is not None else "DeleteItem",
                    lambda: self.writer.write(write),
                    policy=self.retry_policy,
                    metrics=self.metrics,
                )
                if self.source_writer is not None and write.item is None:
                    await self._tombstone_source(write, self.source_writer)
                elif self.source_writer is not None:
                    await self._revive_source(write, self.source_writer)
            except RecordRejectedError as exc:
                await self._dead_letter(write.record, exc, 1, result)
                return True
            except Exception as exc:
                if is_transient(exc):
                    # Retries ran out (only with a finite failure.maximum_retry_attempts): as Lambda
                    # does, the record goes to the destination and the shard moves on.
                    if self.retry_policy.max_attempts is None:
                        raise
                    await self._dead_letter(write.record, exc, self.retry_policy.max_attempts + 1, result)
                    return False
                if not self.bisect_on_error:
                    raise
                await self._dead_letter(write.record, exc, 1, result)
                return False
        result.outcomes[outcome] += 1
        if outcome == "replicated":
            self.metrics.replication_latency.observe(
                max(0.0, self._clock() - write.record.approximate_creation_time_us / US_PER_S)
            )
        else:
            self.metrics.conflicts.inc()
        return False

    async def _tombstone_source(self, write: Write, writer: ConditionalWriter) -> None:
        # The application's delete removed the item from the source, so nothing there stops an older
        # write replicated from the other region from bringing it back. A tombstone with the delete's
        # version does (and loses, by the same conditions, to any newer write made there since). The
        # source keys come from the untouched event: transforms may have rewritten the target's keys.
        keys = write.record.event["dynamodb"]["Keys"]
        await retrying(
            "PutItem",
            lambda: writer.write(dataclasses.replace(write, keys=keys)),
            policy=self.retry_policy,
            metrics=self.metrics,
        )

    async def _revive_source(self, write: Write, writer: ConditionalWriter) -> None:
        # An application UpdateItem on a tombstone in the source keeps its flags (UpdateItem keeps what
        # it does not set): the target gets the item live, the source would hide it and TTL remove it.
        # Clearing them makes the application's write mean there what it means in DynamoDB.
        image = write.record.event["dynamodb"].get("NewImage")
        if image is None or writer.revive_request(image, write.version) is None:
            return
        await retrying(
            "PutItem", lambda: writer.revive(image, write.version), policy=self.retry_policy, metrics=self.metrics
        )

    async def _dead_letter(
        self, record: ChangeRecord, error: BaseException, attempts: int, result: BatchResult
    ) -> None:
        if self.dead_letters is None:
            raise PoisonRecordError(record, error) from error
        await self.dead_letters.send(record, error=error, attempts=attempts)
        # record_fields: keys and images only when logging.log_item_contents is true.
        log.error("dead_lettered", **record_fields(record), error=type(error).__name__)
        self.metrics.dead_letters.inc()
        result.outcomes["dead_lettered"] += 1

    def _account(self, result: BatchResult, records: Sequence[ChangeRecord]) -> None:
        for outcome, count in result.outcomes.items():
            self.metrics.records.labels(outcome=outcome).inc(count)
        self.metrics.batch_size.observe(len(records))
        if result.total != len(records):
            # Every record read must end in exactly one outcome; a mismatch is a bug worth shouting about.
            log.error("accounting_mismatch", records=len(records), accounted=result.total)
