"""A batch of one shard's changes, from pipeline to target: shared by the service and the Lambda handler.

Ordering: changes to one key are applied in source order (a batch holds one shard's records, and a
shard's batches are processed one after another); writes to different keys run concurrently. Within a
batch, a key's changes collapse to the one with the greatest version: last-writer-wins would discard the
others anyway, so they are counted ``collapsed`` and cost no write. If the target refuses that change, the
next greatest is written instead, so the key's earlier good changes are not lost.

Failure: transient errors are retried (``retry.py``). A failure of the whole target (``errors.error_scope``
"target": credentials, permissions, a deleted table, ...) dead-letters nothing: the write is held and
retried through the process's ``TargetHealth`` until the target works, or until its record nears the
stream's retention (then it is dead-lettered with its content). A record that cannot be written (a transform
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

from replicator.core.errors import (
    RecordRejectedError,
    ReplicatorError,
    Scope,
    TargetUnavailableError,
    TransformError,
    failure_code,
)
from replicator.core.records import US_PER_S, ChangeRecord
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.logs import record_fields
from replicator.pipeline.target_health import RetentionReached, TargetHealth

if TYPE_CHECKING:
    # Annotations only: the Lambda handler imports this module for PoisonRecordError, and its
    # configuration, AWS and pipeline modules load in its environment set-up (runtime/wiring.py).
    from replicator.observe.metrics import Metrics
    from replicator.pipeline.stages import Pipeline
    from replicator.sink.deadletter import DeadLetterSink
    from replicator.sink.ratelimit import WriteGate
    from replicator.sink.writer import ConditionalWriter, Write, WriteOutcome

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
        target: TargetHealth | None = None,
        stream_retention_s: float = 86400,
        dead_letter_before_retention_s: float = -1,
        write_gate: WriteGate | None = None,
    ) -> None:
        """Wire the parts; no I/O. ``source_writer``: also tombstone deletes in the source (active-active).

        ``target``: the process's one ``TargetHealth`` (shared by every shard's processor).
        ``dead_letter_before_retention_s`` (-1: never): a write held by an unavailable target goes to the
        destination this long before its record leaves the stream (``stream_retention_s`` after it was
        written), so no record ages out unreplicated while the destination works.
        """
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
        self.target = target or TargetHealth(metrics=metrics)
        self.stream_retention_s = stream_retention_s
        self.dead_letter_before_retention_s = dead_letter_before_retention_s
        # Every target write attempt (retries too) passes the worker's shared gate: throttling cuts them all.
        self._gate = write_gate

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
            while True:
                try:
                    async with self.target.turn(deadline_s=self._hold_deadline_s(write.record)):
                        outcome = await self._send(write)
                except RetentionReached:
                    # Held so long the stream is about to drop the record: keep its content at least.
                    code = self.target.unavailable_code or "TargetUnavailable"
                    log.error(  # noqa: TRY400 - no traceback: nothing failed here, the wait ran out
                        "near_retention_while_target_unavailable", shard_id=write.record.shard_id, code=code
                    )
                    await self._dead_letter(write.record, TargetUnavailableError(code), 1, result)
                    return False
                except Exception as exc:  # noqa: BLE001 - classified below; _write_failed re-raises the rest
                    scope = self.target.scope(exc, write.record.key_id)
                    self.target.counted(scope, exc)
                    if scope == "target":
                        # Nobody's record: hold it (and so the checkpoint) and probe until the target is fixed.
                        self.target.failed(exc)
                        continue
                    return await self._write_failed(write, exc, scope, result)
                self.target.succeeded()
                break
        result.outcomes[outcome] += 1
        if outcome == "replicated":
            self.metrics.replication_latency.observe(
                max(0.0, self._clock() - write.record.approximate_creation_time_us / US_PER_S)
            )
        else:
            self.metrics.conflicts.inc()
        return False

    async def _send(self, write: Write) -> WriteOutcome:
        outcome = await retrying(
            "PutItem" if write.item is not None else "DeleteItem",
            lambda: self._gated_write(write),
            policy=self.retry_policy,
            metrics=self.metrics,
        )
        if self.source_writer is not None and write.item is None:
            await self._tombstone_source(write, self.source_writer)
        elif self.source_writer is not None:
            await self._revive_source(write, self.source_writer)
        return outcome

    async def _write_failed(self, write: Write, exc: Exception, scope: Scope, result: BatchResult) -> bool:
        """A write failed for this record alone (record scope), or transiently past the retry policy.

        True when the target refused this change (dead-lettered): the key's next change may be written.
        """
        if isinstance(exc, RecordRejectedError):
            await self._dead_letter(write.record, exc, 1, result)
            return True
        if scope == "transient":
            # Retries ran out (only with a finite failure.maximum_retry_attempts): as Lambda
            # does, the record goes to the destination and the shard moves on.
            if self.retry_policy.max_attempts is None:
                raise exc
            await self._dead_letter(write.record, exc, self.retry_policy.max_attempts + 1, result)
            return False
        if scope != "record" or not self.bisect_on_error:
            raise exc
        await self._dead_letter(write.record, exc, 1, result)
        return False

    def _hold_deadline_s(self, record: ChangeRecord) -> float | None:
        """Seconds a held write of ``record`` may wait before it goes to the destination; None: no limit."""
        if self.dead_letters is None or self.dead_letter_before_retention_s < 0:
            return None
        created_s = record.approximate_creation_time_us / US_PER_S
        return created_s + self.stream_retention_s - self.dead_letter_before_retention_s - self._clock()

    async def _gated_write(self, write: Write) -> WriteOutcome:
        if self._gate is None:
            return await self.writer.write(write)
        return await self._gate.run(lambda: self.writer.write(write))

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

    async def dead_letter_all(self, records: Sequence[ChangeRecord], error: BaseException) -> BatchResult:
        """Send every record to the dead-letter destination with ``error``, counted ``dead_lettered``.

        For a fan-out target set aside at a shard's end (``runtime/shard_fanout.py``): its records are
        kept, with their content, for ``redrive`` instead of held. Raises PoisonRecordError without a
        destination (the configuration requires one for that policy).
        """
        result = BatchResult()
        for record in records:
            await self._dead_letter(record, error, 0, result)
        self._account(result, records)
        return result

    async def _dead_letter(
        self, record: ChangeRecord, error: BaseException, attempts: int, result: BatchResult
    ) -> None:
        if self.dead_letters is None:
            raise PoisonRecordError(record, error) from error
        await self.dead_letters.send(record, error=error, attempts=attempts)
        # record_fields: keys and images only when logging.log_item_contents is true.
        log.error("dead_lettered", **record_fields(record), error=type(error).__name__, code=failure_code(error))
        self.metrics.dead_letters.inc()
        result.outcomes["dead_lettered"] += 1

    def _account(self, result: BatchResult, records: Sequence[ChangeRecord]) -> None:
        for outcome, count in result.outcomes.items():
            self.metrics.records.labels(outcome=outcome).inc(count)
        self.metrics.batch_size.observe(len(records))
        if result.total != len(records):
            # Every record read must end in exactly one outcome; a mismatch is a bug worth shouting about.
            log.error("accounting_mismatch", records=len(records), accounted=result.total)
