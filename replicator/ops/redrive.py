"""Replay dead letters through the same pipeline, batch processor and conditional writer as the service.

Replaying is safe at any time and any number of times: every write is conditional on last-writer-wins,
so a dead letter older than what the target holds ends ``superseded`` and changes nothing.

- From a JSONL file: every dead letter is replayed; those that fail again are written to a new file next
  to it (``<name>.redrive-<UTC time>.jsonl``, named in the report). The source file is never modified.
  A line that is not a dead letter (torn by a crash mid-append, or garbled) is counted unreadable and
  named by its line number; the others are replayed.
- From an SQS queue (``redrive_sqs``): messages are received in chunks (invisible meanwhile) and deleted
  only after their record reached an outcome; one that fails again is left in the queue and reappears
  after its visibility timeout.

``maximum_record_age_seconds`` does not apply (a dead letter is old by nature), and an unlimited
``maximum_retry_attempts`` becomes ``REDRIVE_RETRY_ATTEMPTS``, so a run against a target that is down
ends with the records counted as failed again instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import time
from typing import TYPE_CHECKING, Any

import structlog

from replicator.observe.metrics import Metrics
from replicator.ops.progress import open_progress_bar
from replicator.ops.redrive_sqs import SqsRedrive
from replicator.pipeline.stages import Pipeline
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient

    from replicator.aws.clients import TargetClient
    from replicator.core.config import Config
    from replicator.core.records import ChangeRecord
    from replicator.pipeline.processor import BatchProcessor

log = structlog.get_logger(__name__)

REDRIVE_RETRY_ATTEMPTS = 10
SHOWN_LINES = 10


@dataclasses.dataclass(slots=True)
class RedriveReport:
    """What a redrive did."""

    source: str
    dry_run: bool
    read: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed_again: int = 0
    failure_types: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    unreadable: int = 0
    unreadable_lines: list[int] = dataclasses.field(default_factory=list)
    """JSONL line numbers that hold no dead letter (a torn or garbled line)."""
    failed_path: Path | None = None
    deleted_messages: int = 0
    left_in_queue: int = 0
    duplicates_deleted: int = 0
    """SQS messages of letters already replayed in this run (a letter sent twice), deleted."""
    not_deleted: int = 0
    """Replayed letters whose SQS messages SQS did not all delete: they reappear (and replay harmlessly)."""
    not_deleted_codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    not_released: int = 0
    """Messages a dry run could not make visible again: they reappear after the visibility timeout."""
    not_released_codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def ok(self) -> bool:
        """True when every dead letter reached an outcome other than failing again, and is gone from SQS."""
        return (
            self.failed_again == 0
            and self.unreadable == 0
            and self.left_in_queue == 0
            and self.not_deleted == 0
            and self.not_released == 0
        )

    def lines(self) -> list[str]:
        """Describe the run, for people."""
        mode = " (dry run: nothing written or deleted)" if self.dry_run else ""
        out = [f"redrive of {self.source}{mode}: {self.read} dead letters read"]
        out.extend(f"  {outcome}: {count}" for outcome, count in sorted(self.outcomes.items()))
        if self.failed_again:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(self.failure_types.items()))
            out.append(f"  failed again: {self.failed_again} ({kinds})")
        if self.unreadable:
            where = ""
            if self.unreadable_lines:
                shown = ", ".join(str(n) for n in self.unreadable_lines[:SHOWN_LINES])
                more = ", ..." if len(self.unreadable_lines) > SHOWN_LINES else ""
                where = f" (lines {shown}{more}: torn by a crash mid-append, or garbled)"
            out.append(f"  unreadable: {self.unreadable}{where}")
        if self.failed_path is not None:
            out.append(f"  dead letters that failed again were written to {self.failed_path}")
        if self.deleted_messages:
            out.append(f"  SQS messages deleted: {self.deleted_messages}")
        if self.duplicates_deleted:
            out.append(f"  duplicate messages deleted (a letter sent twice): {self.duplicates_deleted}")
        if self.left_in_queue:
            out.append(f"  left in the queue (reappear after the visibility timeout): {self.left_in_queue}")
        if self.not_deleted:
            codes = ", ".join(f"{k} x{v}" for k, v in sorted(self.not_deleted_codes.items()))
            out.append(
                f"  replayed but not deleted from the queue (reappear, replay again): {self.not_deleted} ({codes})"
            )
        if self.not_released:
            codes = ", ".join(f"{k} x{v}" for k, v in sorted(self.not_released_codes.items()))
            out.append(
                f"  not made visible again (reappear after the visibility timeout): {self.not_released} ({codes})"
            )
        return out


class _Collector:
    """A dead-letter sink that keeps what fails again, for the report and the new file."""

    def __init__(self) -> None:
        self.failures: dict[tuple[str, str], tuple[BaseException, int]] = {}

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        self.failures[(record.shard_id, record.sequence_number)] = (error, attempts)


def redrive_config(cfg: Config) -> Config:
    """Adapt the configuration for a redrive (no record age limit, bounded retries)."""
    attempts = cfg.failure.maximum_retry_attempts
    failure = cfg.failure.model_copy(
        update={
            "maximum_record_age_seconds": -1,
            "maximum_retry_attempts": attempts if attempts >= 0 else REDRIVE_RETRY_ATTEMPTS,
        }
    )
    return cfg.model_copy(update={"failure": failure})


def _sort_key(doc: dict[str, Any]) -> tuple[str, int]:
    seq = str(doc.get("sequenceNumber") or "0")
    return str(doc.get("shardId") or ""), int(seq) if seq.isdigit() else 0


class Redriver:
    """Replays dead-letter documents; one instance per run."""

    def __init__(
        self,
        cfg: Config,
        *,
        processor: BatchProcessor | None,
        collector: _Collector,
        report: RedriveReport,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Wire the parts; ``processor`` None means a dry run; ``on_progress(n)``: n more dead letters done."""
        self.cfg = cfg
        self.processor = processor
        self.collector = collector
        self.report = report
        self.pipeline = Pipeline.from_config(cfg)
        self.on_progress = on_progress or _no_progress

    async def replay(self, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replay documents (per shard, in sequence order); return the ones that failed again."""
        records: list[tuple[dict[str, Any], ChangeRecord]] = []
        failed: list[dict[str, Any]] = []
        for doc in sorted(docs, key=_sort_key):
            try:
                records.append((doc, deadletter.record_from_document(doc)))
            except deadletter.DeadLetterError as exc:
                self.report.unreadable += 1
                log.error("dead_letter_unreadable", id=doc.get("id"), error=str(exc))  # noqa: TRY400 - no traceback wanted
                failed.append(doc)
        self.report.read += len(docs)
        self.on_progress(len(failed))
        if self.processor is None:
            self._dry_run([r for _, r in records])
            self.on_progress(len(records))
            return failed
        size = self.cfg.failure.batch_size
        by_key = {(r.shard_id, r.sequence_number): d for d, r in records}
        for start in range(0, len(records), size):
            batch = [r for _, r in records[start : start + size]]
            result = await self.processor.process(batch)
            self.report.outcomes.update({k: v for k, v in result.outcomes.items() if k != "dead_lettered"})
            self.on_progress(len(batch))
        for key, (error, attempts) in self.collector.failures.items():
            original = by_key.get(key)
            if original is None:
                continue
            self.report.failed_again += 1
            self.report.failure_types[type(error).__name__] += 1
            failed.append(_failed_again(original, error, attempts))
        self.collector.failures.clear()
        return failed

    def _dry_run(self, records: Sequence[ChangeRecord]) -> None:
        for record in records:
            try:
                decision = self.pipeline.run(record)
            except Exception as exc:  # noqa: BLE001 - a dry run reports every failure, whatever it is
                self.report.failed_again += 1
                self.report.failure_types[type(exc).__name__] += 1
                continue
            self.report.outcomes[decision if isinstance(decision, str) else "would_write"] += 1


def _no_progress(_n: int) -> None:
    pass


def _advance_all(advances: tuple[Callable[[int], None] | None, ...], n: int) -> None:
    for advance in advances:
        if advance is not None:
            advance(n)


def _failed_again(doc: dict[str, Any], error: BaseException, attempts: int) -> dict[str, Any]:
    history = [*doc.get("previousErrors", []), doc.get("error")]
    return {
        **doc,
        "error": {
            "type": type(error).__name__,
            "message": str(error),
            "cause": None if error.__cause__ is None else type(error.__cause__).__name__,
        },
        "previousErrors": history,
        "attempts": int(doc.get("attempts") or 0) + attempts,
        "redrivenAt": dt.datetime.now(tz=dt.UTC).isoformat(),
    }


def failed_file_for(path: Path, clock: Callable[[], float] = time.time) -> Path:
    """Name the file a redrive of ``path`` writes its failures to: beside it, by the run's UTC time."""
    stamp = dt.datetime.fromtimestamp(clock(), tz=dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return path.with_name(f"{path.stem}.redrive-{stamp}.jsonl")


async def redrive(
    cfg: Config,
    *,
    source: str | None = None,
    dry_run: bool = False,
    metrics: Metrics | None = None,
    target: TargetClient | None = None,
    source_client: DynamoDBClient | None = None,
    sqs: SQSClient | None = None,
    clock: Callable[[], float] = time.time,
    show_progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> RedriveReport:
    """Replay the dead letters in ``source`` (default: ``failure.on_failure.destination``).

    ``target``, ``source_client`` and ``sqs`` may be ready clients (tests); otherwise they are opened here
    (the source's only when the config tombstones deletes in the source). ``show_progress``: a progress
    bar on the terminal; ``on_progress(n)`` is told of every n more dead letters done.
    Raises DeadLetterError when there is no source.
    """
    src = source or cfg.failure.on_failure.destination
    if not src:
        raise deadletter.DeadLetterError("no dead-letter source: pass --source or set failure.on_failure.destination")
    rcfg = redrive_config(cfg)
    metrics = metrics or Metrics()
    report = RedriveReport(source=src, dry_run=dry_run)
    collector = _Collector()
    async with contextlib.AsyncExitStack() as stack:
        processor = None
        if not dry_run:
            from replicator.runtime import wiring  # noqa: PLC0415 - service imports much; CLI start-up

            if target is None:
                from replicator.aws.clients import open_target_client  # noqa: PLC0415 - only when not injected

                target = await open_target_client(stack, rcfg)
            if source_client is None and wiring.needs_source_client(rcfg):
                # Active-active: a replayed delete is tombstoned in the source too, as ``run`` does.
                source_client = await wiring.open_source_client(stack, rcfg)
            processor = wiring.build_processor(
                rcfg, target_client=target, metrics=metrics, dead_letters=collector, source_client=source_client
            )
        redriver = Redriver(rcfg, processor=processor, collector=collector, report=report)

        def progress(total: int | None) -> None:
            # Called once the total is known (or guessed): the bar needs it when it opens.
            bar = open_progress_bar(stack, "redrive", src, total=total) if show_progress else None
            redriver.on_progress = functools.partial(_advance_all, (on_progress, bar))

        if deadletter.is_sqs_url(src):
            sqs = sqs or await deadletter.open_sqs_client(stack, rcfg, src)
            run = SqsRedrive(redriver, sqs, src, report, dry_run=dry_run)
            # The queue's approximate count: a guide for the bar (parts are messages too).
            progress(await run.approximate_messages() if show_progress else None)
            await run.run()
        else:
            await _redrive_jsonl(
                redriver, deadletter.jsonl_path(src), report, dry_run=dry_run, clock=clock, progress=progress
            )
    log.info("redrive_done", source=src, read=report.read, failed_again=report.failed_again, dry_run=dry_run)
    return report


async def _redrive_jsonl(
    redriver: Redriver,
    path: Path,
    report: RedriveReport,
    *,
    dry_run: bool,
    clock: Callable[[], float],
    progress: Callable[[int | None], None],
) -> None:
    contents = await asyncio.to_thread(deadletter.scan_jsonl, path)
    for number, why in contents.unreadable:
        # Counted and named, never skipped silently (the line itself may hold item data: not logged).
        report.unreadable += 1
        report.unreadable_lines.append(number)
        log.error("dead_letter_unreadable", path=str(path), line=number, error=why)
    progress(len(contents.documents))
    failed = await redriver.replay(contents.documents)
    if failed and not dry_run:
        out = failed_file_for(path, clock)
        sink = deadletter.JsonlDeadLetters(out)
        for doc in failed:
            await sink.send_document(doc)
        report.failed_path = out


def report_json(report: RedriveReport) -> str:
    """Render the report as one JSON object (for scripts)."""
    return json.dumps(
        {
            "source": report.source,
            "dry_run": report.dry_run,
            "read": report.read,
            "outcomes": dict(report.outcomes),
            "failed_again": report.failed_again,
            "unreadable": report.unreadable,
            "failed_path": None if report.failed_path is None else str(report.failed_path),
            "deleted_messages": report.deleted_messages,
            "left_in_queue": report.left_in_queue,
            "unreadable_lines": report.unreadable_lines,
            "duplicates_deleted": report.duplicates_deleted,
            "not_deleted": report.not_deleted,
            "not_deleted_codes": dict(report.not_deleted_codes),
            "not_released": report.not_released,
            "not_released_codes": dict(report.not_released_codes),
        }
    )
