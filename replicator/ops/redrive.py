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

Targets: every letter names the target it was going to (``target.id``). Each is replayed to that target
only, through that target's processor (its own filters and transforms). A letter naming a target the
configuration does not have is reported and left (in the new file, or in the queue); so is a letter
without a target id (written before letters named one) when the configuration has several targets,
unless ``--target NAME`` (``target_name``) says where such letters go. With one target, letters without
an id go to it.

``maximum_record_age_seconds`` does not apply (a dead letter is old by nature), and an unlimited
``maximum_retry_attempts`` becomes ``REDRIVE_RETRY_ATTEMPTS``, so a run against a target that is down
ends with the records counted as failed again instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from typing import TYPE_CHECKING, Any

import structlog

from replicator.core.errors import ConfigError
from replicator.observe.metrics import Metrics
from replicator.ops.progress import open_progress_bar
from replicator.ops.redrive_report import RedriveReport, report_json
from replicator.ops.redrive_sqs import SqsRedrive
from replicator.pipeline.stages import Pipeline
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient

    from replicator.aws.clients import TargetClient
    from replicator.core.config import Config
    from replicator.core.records import ChangeRecord
    from replicator.pipeline.processor import BatchProcessor

log = structlog.get_logger(__name__)

__all__ = ["REDRIVE_RETRY_ATTEMPTS", "RedriveReport", "Redriver", "failed_file_for", "redrive", "report_json"]

REDRIVE_RETRY_ATTEMPTS = 10


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
    """Replays dead-letter documents, each to the target it names; one instance per run."""

    def __init__(
        self,
        cfg: Config,
        *,
        processors: Mapping[str, BatchProcessor] | None,
        collectors: Mapping[str, _Collector],
        report: RedriveReport,
        on_progress: Callable[[int], None] | None = None,
        target_name: str | None = None,
    ) -> None:
        """Wire the parts; ``processors`` (by target id) None means a dry run; ``on_progress(n)``: n more done.

        ``target_name``: where letters naming no target go (``--target``); needed only with several targets.
        """
        self.cfg = cfg
        self.processors = processors
        self.collectors = collectors
        self.report = report
        self.pipelines = {t.target_id: Pipeline.from_config(cfg.for_target(t)) for t in cfg.targets}
        self.on_progress = on_progress or _no_progress
        self.target_name = target_name

    def route(self, doc: dict[str, Any]) -> str | None:
        """The target id ``doc`` is replayed to; None (counted in the report) when it must be left."""
        named = deadletter.letter_target_id(doc)
        if named is None:
            if self.target_name is not None:
                return self.target_name
            if not self.cfg.fan_out:
                return self.cfg.target.target_id
            self.report.without_target += 1
            log.error("dead_letter_names_no_target", id=doc.get("id"), action="pass --target NAME")
            return None
        if named in self.pipelines:
            return named
        self.report.unknown_targets[named] += 1
        log.error("dead_letter_target_unknown", id=doc.get("id"), target=named, targets=list(self.pipelines))
        return None

    async def replay(self, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replay documents (per target, per shard, in sequence order); return the ones not done.

        Not done: failed again, unreadable, or left because of the target they name (or lack).
        """
        by_target: dict[str, list[tuple[dict[str, Any], ChangeRecord]]] = {}
        failed: list[dict[str, Any]] = []
        for doc in sorted(docs, key=_sort_key):
            try:
                record = deadletter.record_from_document(doc)
            except deadletter.DeadLetterError as exc:
                self.report.unreadable += 1
                log.error("dead_letter_unreadable", id=doc.get("id"), error=str(exc))  # noqa: TRY400 - no traceback wanted
                failed.append(doc)
                continue
            target_id = self.route(doc)
            if target_id is None:
                failed.append(doc)
                continue
            by_target.setdefault(target_id, []).append((doc, record))
        self.report.read += len(docs)
        self.on_progress(len(failed))
        for target_id, records in by_target.items():
            if self.processors is None:
                self._dry_run(self.pipelines[target_id], [r for _, r in records])
                self.on_progress(len(records))
                continue
            failed.extend(await self._replay_to(target_id, records))
        return failed

    async def _replay_to(
        self, target_id: str, records: Sequence[tuple[dict[str, Any], ChangeRecord]]
    ) -> list[dict[str, Any]]:
        assert self.processors is not None  # noqa: S101 - replay() calls this only outside a dry run
        processor, collector = self.processors[target_id], self.collectors[target_id]
        failed: list[dict[str, Any]] = []
        size = self.cfg.failure.batch_size
        by_key = {(r.shard_id, r.sequence_number): d for d, r in records}
        for start in range(0, len(records), size):
            batch = [r for _, r in records[start : start + size]]
            result = await processor.process(batch)
            self.report.outcomes.update({k: v for k, v in result.outcomes.items() if k != "dead_lettered"})
            self.on_progress(len(batch))
        for key, (error, attempts) in collector.failures.items():
            original = by_key.get(key)
            if original is None:
                continue
            self.report.failed_again += 1
            self.report.failure_types[type(error).__name__] += 1
            failed.append(_failed_again(original, error, attempts))
        collector.failures.clear()
        return failed

    def _dry_run(self, pipeline: Pipeline, records: Sequence[ChangeRecord]) -> None:
        for record in records:
            try:
                decision = pipeline.run(record)
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
    targets: Mapping[str, TargetClient] | None = None,
    target_name: str | None = None,
) -> RedriveReport:
    """Replay the dead letters in ``source`` (default: ``failure.on_failure.destination``).

    ``target`` (the first target's), ``targets`` (by target id), ``source_client`` and ``sqs`` may be ready
    clients (tests); otherwise they are opened here (the source's only when the config tombstones deletes
    in the source). ``target_name``: the target letters naming none are replayed to (``--target``).
    ``show_progress``: a progress bar on the terminal; ``on_progress(n)`` is told of every n more dead
    letters done. Raises DeadLetterError when there is no source, ConfigError for an unknown ``target_name``.
    """
    src = source or cfg.failure.on_failure.destination
    if not src:
        raise deadletter.DeadLetterError("no dead-letter source: pass --source or set failure.on_failure.destination")
    ids = [t.target_id for t in cfg.targets]
    if target_name is not None and target_name not in ids:
        raise ConfigError(f"--target {target_name!r}: the configuration has no such target; its targets: {ids}")
    rcfg = redrive_config(cfg)
    metrics = metrics or Metrics()
    report = RedriveReport(source=src, dry_run=dry_run)
    collectors = {target_id: _Collector() for target_id in ids}
    async with contextlib.AsyncExitStack() as stack:
        processors = None
        if not dry_run:
            from replicator.runtime import wiring  # noqa: PLC0415 - service imports much; CLI start-up

            clients = dict(targets or {})
            if target is not None:
                clients.setdefault(rcfg.target.target_id, target)
            for each in rcfg.targets:
                if each.target_id not in clients:
                    from replicator.aws.clients import open_target_client  # noqa: PLC0415 - only when not injected

                    clients[each.target_id] = await open_target_client(stack, rcfg.for_target(each))
            if source_client is None and wiring.needs_source_client(rcfg):
                # Active-active: a replayed delete is tombstoned in the source too, as ``run`` does.
                source_client = await wiring.open_source_client(stack, rcfg)
            processors = {
                each.target_id: wiring.build_processor(
                    rcfg.for_target(each),
                    target_client=clients[each.target_id],
                    metrics=metrics,
                    dead_letters=collectors[each.target_id],
                    source_client=source_client,
                )
                for each in rcfg.targets
            }
        redriver = Redriver(rcfg, processors=processors, collectors=collectors, report=report, target_name=target_name)

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
