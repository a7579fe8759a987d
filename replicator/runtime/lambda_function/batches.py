"""One event's records through the processor, key by key; which record Lambda must retry from.

- Shard id: an ESM event names the stream (``eventSourceARN``) and a per-record ``eventID``, never the
  shard. Records get the shard id ``"lambda"`` (``LAMBDA_SHARD_ID``): it only labels logs and dead
  letters, and the sequence number alone identifies a record to Lambda. Versions do not involve it, so
  a key replicated by the service and then by Lambda (or back) keeps one version order.
- Failures (``ReportBatchItemFailures``): records are grouped by key and each key's records go through
  ``process`` as one batch; keys run concurrently, as in the service. A failed key fails from its first
  record in the batch, except for a poison record (``PoisonRecordError``: a transform raised or the target
  refused the record, with no dead-letter destination): then the key's earlier records are written and
  the key fails at the poison record itself. The earliest failed record in event order is the one to
  retry; everything before it has been written, so Lambda resumes exactly there. Records after it may
  have been written too: replaying them is harmless, as the conditional write finds their version
  already in the target (``superseded``).
- A record without ``ApproximateCreationDateTime`` (optional in the API; some test events omit it) takes
  the greatest time of the records before it in the event, else the least after it, else the invocation's
  clock: never 0, which would make a later change of a key lose to an earlier one of the same batch. A tie
  with the record before goes to the sequence number, so source order holds.
- Several targets (``targets:``): each target's processor takes the whole event, key by key as above,
  all targets concurrently and within the one budget. The record reported is the earliest any target
  failed (with that target's reason): Lambda delivers it and every later record again to every target,
  and a target that already has them finds their versions there (``superseded``).
- The budget: keys still being retried when it runs out are cancelled and reported failed, so the
  function answers instead of timing out (handler.py sets the budget from the invocation's deadline).
  Writes held because the whole target refuses them (target scope, ``pipeline/target_health.py``) end
  the same way: the batch fails from its first unprocessed record, named by the AWS error code.
- Binary attributes: Lambda's JSON carries B/BS values as base64 text; they are decoded to bytes before
  anything else, as GetRecords (via botocore) yields them to the service. Left as text, botocore would
  base64-encode them a second time on the way to the target.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from replicator.core.codec import decode_event
from replicator.core.errors import failure_code
from replicator.core.records import US_PER_S, ChangeRecord, epoch_us, from_lambda_event
from replicator.observe.logs import error_text
from replicator.pipeline.processor import PoisonRecordError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from replicator.pipeline.processor import BatchProcessor

log = structlog.get_logger(__name__)

LAMBDA_SHARD_ID = "lambda"
"""Shard id given to records from a Lambda event (which does not name the shard)."""


@dataclasses.dataclass(slots=True)
class EventOutcome:
    """What became of one event's records."""

    records: int
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed_index: int | None = None
    """Index (in event order) of the first record that was not processed; None: all were."""
    failed_sequence_number: str | None = None
    error: str | None = None
    """Type name of the error that failed that record (never its message: it may quote contents)."""
    failed_target: str | None = None
    """Fan-out: the target whose failure is the one reported (None with one target)."""
    by_target: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    """Fan-out: each target's outcomes (``outcomes`` sums them); empty with one target."""
    target_failures: dict[str, int] = dataclasses.field(default_factory=dict)
    """Fan-out: each failing target's first failed index."""

    @property
    def records_to_retry(self) -> int:
        """Records Lambda delivers again: the failed one and every later one."""
        return 0 if self.failed_index is None else self.records - self.failed_index


@dataclasses.dataclass(slots=True)
class _KeyResult:
    outcomes: collections.Counter[str]
    failed_index: int | None = None
    error: BaseException | None = None


async def process_event(
    processor: BatchProcessor | Mapping[str, BatchProcessor], raw_records: Sequence[dict[str, Any]], *, budget_s: float
) -> EventOutcome:
    """Run the records of one event through ``processor``; find the first record that must be retried.

    ``processor``: one target's, or every target's by target id (fan-out): each target processes the whole
    event concurrently within the one budget, and the first record to retry is the earliest that any
    target failed (see the module docstring).
    """
    outcome = EventOutcome(records=len(raw_records))
    records: list[ChangeRecord] = []
    failures: list[tuple[int, str]] = []
    by_key: dict[tuple[tuple[str, str, str], ...], list[int]] = {}
    created = _creation_times_us(raw_records, now_us=int(time.time() * US_PER_S))
    for index, raw in enumerate(raw_records):
        try:
            record = from_lambda_event(decode_event(raw), shard_id=LAMBDA_SHARD_ID, created_us=created[index])
            key = record.key_id
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # Malformed: it can never succeed. Records after it wait (Lambda delivers them again).
            log.error(  # noqa: TRY400 - a traceback could quote item contents
                "lambda_record_malformed", index=index, error=type(exc).__name__, reason=error_text(exc)
            )
            failures.append((index, type(exc).__name__))
            break
        records.append(record)
        by_key.setdefault(key, []).append(index)

    failed_target: dict[tuple[int, str], str] = {}
    # One deadline for every target: they share the invocation's budget.
    deadline_s = asyncio.get_running_loop().time() + budget_s
    if isinstance(processor, Mapping):
        runs = await asyncio.gather(
            *(_run_target(p, records, by_key, budget_s, deadline_s, target_id=t) for t, p in processor.items())
        )
        for target_id, (target_failures, counts) in zip(processor, runs, strict=True):
            outcome.outcomes.update(counts)
            outcome.by_target[target_id] = counts
            if target_failures:
                first = min(target_failures)
                outcome.target_failures[target_id] = first[0]
                failed_target.setdefault(first, target_id)
            failures.extend(target_failures)
    else:
        target_failures, counts = await _run_target(processor, records, by_key, budget_s, deadline_s, target_id=None)
        outcome.outcomes.update(counts)
        failures.extend(target_failures)

    if failures:
        index, error = min(failures)
        outcome.failed_index = index
        outcome.error = error
        outcome.failed_target = failed_target.get((index, error))
        ddb = raw_records[index].get("dynamodb") if isinstance(raw_records[index], dict) else None
        sequence_number = ddb.get("SequenceNumber") if isinstance(ddb, dict) else None
        outcome.failed_sequence_number = str(sequence_number) if sequence_number else None
        fields = {} if outcome.failed_target is None else {"target": outcome.failed_target}
        log.warning(
            "lambda_batch_partially_failed",
            first_failed_index=index,
            sequence_number=outcome.failed_sequence_number,
            error=error,
            records_to_retry=outcome.records_to_retry,
            **fields,
        )
    return outcome


async def _run_target(
    processor: BatchProcessor,
    records: Sequence[ChangeRecord],
    by_key: Mapping[tuple[tuple[str, str, str], ...], list[int]],
    budget_s: float,
    deadline_s: float,
    *,
    target_id: str | None,
) -> tuple[list[tuple[int, str]], collections.Counter[str]]:
    """One target's processing of the event, key by key, until ``deadline_s`` (loop time; ``budget_s`` from start).

    Returns the (index, error) of each failed key and the outcomes. ``target_id``: set with fan-out, and
    then bound to every log line of this target's keys.
    """
    failures: list[tuple[int, str]] = []
    counts: collections.Counter[str] = collections.Counter()
    bound = {} if target_id is None else {"target": target_id}
    with structlog.contextvars.bound_contextvars(**bound):
        # Tasks copy the context as it is now: their log lines carry this target's id.
        tasks = {asyncio.create_task(_process_key(processor, records, indexes)): indexes for indexes in by_key.values()}
        if not tasks:
            return failures, counts
        remaining_s = max(0.0, deadline_s - asyncio.get_running_loop().time())
        _, pending = await asyncio.wait(set(tasks), timeout=remaining_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("lambda_deadline_reached", keys_unfinished=len(pending), budget_s=round(budget_s, 3), **bound)
    # Keys held by an unavailable target (target scope) are still waiting when the budget ends: the
    # batch fails from its first unprocessed record under the target's error code, and the mapping
    # (unlimited retries, bounded by record age) delivers it again; nothing is dead-lettered for it.
    unfinished = processor.target.unavailable_code or "DeadlineExceeded"
    for task, indexes in tasks.items():
        if task in pending:
            failures.append((indexes[0], unfinished))
            continue
        result = task.result()
        counts.update(result.outcomes)
        if result.failed_index is not None:
            failures.append((result.failed_index, type(result.error).__name__))
    return failures, counts


def _creation_times_us(raw_records: Sequence[dict[str, Any]], *, now_us: int) -> list[int | None]:
    """Each record's creation time (µs), with a fallback for records that lack one (see the module doc).

    None leaves a malformed time to ``from_lambda_event``, which names the field.
    """
    given: list[int | None] = []
    for raw in raw_records:
        ddb = raw.get("dynamodb") if isinstance(raw, dict) else None
        value = ddb.get("ApproximateCreationDateTime") if isinstance(ddb, dict) else None
        try:
            given.append(None if value is None else epoch_us(value))
        except ValueError:
            given.append(None)
    present = [t for t in given if t is not None]
    # Records before any timed one: the least time after them (a tie goes to the sequence number).
    latest = min(present) if present else now_us
    out: list[int | None] = []
    for raw, value in zip(raw_records, given, strict=True):
        ddb = raw.get("dynamodb") if isinstance(raw, dict) else None
        if value is None and isinstance(ddb, dict) and "ApproximateCreationDateTime" in ddb:
            out.append(None)  # present but malformed: from_lambda_event reports it
            continue
        latest = latest if value is None else max(latest, value)
        out.append(latest if value is None else value)
    return out


async def _process_key(processor: BatchProcessor, records: Sequence[ChangeRecord], indexes: list[int]) -> _KeyResult:
    """Process one key's records; on a poison record, write the records before it and fail at it."""
    result = _KeyResult(collections.Counter())
    end = len(indexes)
    while end > 0:
        batch = [records[i] for i in indexes[:end]]
        try:
            done = await processor.process(batch)
        except PoisonRecordError as exc:
            position = _position(batch, exc.record)
            result.failed_index, result.error = indexes[position], exc
            log.error(  # noqa: TRY400 - the cause's traceback could quote item contents
                "lambda_poison_record",
                sequence_number=exc.record.sequence_number,
                error=type(exc.__cause__ or exc).__name__,
                # AWS error messages may quote item values: withheld unless log_item_contents is on.
                reason=error_text(exc),
            )
            # The key's records before the poison one are retried on their own, so Lambda resumes
            # at the poison record and not before it.
            end = position
            continue
        except Exception as exc:  # noqa: BLE001 - any failure fails the key; the batch answers regardless
            # Transient errors past the retry policy, a dead-letter destination that is down, or a bug:
            # which of the key's records got written is unknown, so the key fails from its first record.
            log.error(  # noqa: TRY400 - same
                "lambda_key_failed",
                sequence_number=batch[0].sequence_number,
                error=type(exc).__name__,
                code=failure_code(exc),
            )
            result.failed_index, result.error = indexes[0], exc
            return result
        result.outcomes.update(done.outcomes)
        return result
    return result


def _position(batch: Sequence[ChangeRecord], record: ChangeRecord) -> int:
    """Where ``record`` (possibly a transformed copy) sits in ``batch``; 0 when it cannot be found."""
    for position, candidate in enumerate(batch):
        if candidate.sequence_number == record.sequence_number:
            return position
    return 0
