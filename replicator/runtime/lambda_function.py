"""AWS Lambda entry point: a DynamoDB Streams event source mapping (ESM) invokes ``handler``.

The handler runs the service's own code on each batch: ``build_processor`` (filters, transforms,
markers, last-writer-wins conditional writes) and ``BatchProcessor.process``. The ESM reads the stream
and keeps the positions, so there is no checkpoint store, no shard discovery and no HTTP endpoint here.

- Configuration comes from ``REPLICATOR_*`` environment variables only (``load_config(None)``; same keys
  as the service). It, the target client, the processor and one asyncio event loop are created on the
  first invocation and reused by every later one in the same execution environment: aiobotocore
  clients are bound to the loop that created them, so each invocation is ``run_until_complete`` on it.
- Shard id: an ESM event names the stream (``eventSourceARN``) and a per-record ``eventID``, never the
  shard. Records get the shard id ``"lambda"`` (``LAMBDA_SHARD_ID``): it only labels logs and dead
  letters, and the sequence number alone identifies a record to Lambda. Versions do not involve it, so
  a key replicated by the service and then by Lambda (or back) keeps one version order.
- Failures (``ReportBatchItemFailures``): records are grouped by key and each key's records go through
  ``process`` as one batch; keys run concurrently, as in the service. A failed key fails from its first
  record in the batch, except for a poison record (``PoisonRecordError``: a transform raised or the target
  refused the record, with no dead-letter destination): then the key's earlier records are written and
  the key fails at the poison record itself. The handler reports the earliest failed record in event
  order; everything before it has been written, so Lambda resumes exactly there. Records after it may
  have been written too: replaying them is harmless, as the conditional write finds their version
  already in the target (``superseded``).
- Retries: transient errors are retried with the service's policy (``failure.maximum_retry_attempts``),
  but never past the invocation's deadline: at ``get_remaining_time_in_millis()`` minus a margin, keys
  still being retried are cancelled and reported failed, so the function answers instead of timing out
  (a timeout would make Lambda retry, and with bisection split, the whole batch).
- Metrics: one JSON line per invocation on stdout, in CloudWatch Embedded Metric Format (namespace
  ``Replicator``, dimension ``FunctionName``): outcome counts, records to retry, retries, throttles,
  duration. Counts and sequence numbers only, never item contents.
- Binary attributes: Lambda's JSON carries B/BS values as base64 text; they are decoded to bytes before
  anything else, as GetRecords (via botocore) yields them to the service. Left as text, botocore would
  base64-encode them a second time on the way to the target.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.observe.logs import error_text
from replicator.pipeline.processor import PoisonRecordError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from replicator.core.config import Config
    from replicator.observe.metrics import Metrics
    from replicator.pipeline.processor import BatchProcessor

log = structlog.get_logger(__name__)

LAMBDA_SHARD_ID = "lambda"
"""Shard id given to records from a Lambda event (which does not name the shard)."""

DEADLINE_MARGIN_S = 3.0
"""Time kept back from the invocation's remaining time to cancel retries, log and answer."""

NO_CONTEXT_BUDGET_S = 900.0
"""Processing budget when invoked without a Lambda context (local runs): Lambda's longest timeout."""

METRIC_NAMESPACE = "Replicator"

_IMAGES = ("Keys", "NewImage", "OldImage")
_COUNT_METRICS = (
    "records",
    "replicated",
    "superseded",
    "collapsed",
    "filtered",
    "echo_skipped",
    "ttl_skipped",
    "dead_lettered",
    "records_to_retry",
    "retries",
    "throttles",
)


class LambdaContext(Protocol):
    """The parts of Lambda's context object the handler reads."""

    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before Lambda stops the invocation."""
        ...


# --------------------------------------------------------------------------------------------------
# Execution environment: created on the first invocation, reused until Lambda discards it
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Environment:
    """Everything an invocation needs that outlives it."""

    cfg: Config
    loop: asyncio.AbstractEventLoop
    stack: contextlib.AsyncExitStack
    metrics: Metrics
    processor: BatchProcessor

    @classmethod
    def create(cls) -> Environment:
        """Load the configuration from the environment, open the target client, build the processor."""
        # Imported here, not at module level: ``import replicator.runtime.lambda_function`` stays cheap for tools
        # that only inspect it, and a configuration error surfaces in the invocation's log with its key.
        from aiobotocore.session import get_session  # noqa: PLC0415

        from replicator.aws.clients import client_config, open_target_client  # noqa: PLC0415
        from replicator.core.config import load_config  # noqa: PLC0415
        from replicator.observe import logs  # noqa: PLC0415
        from replicator.observe.metrics import Metrics  # noqa: PLC0415
        from replicator.runtime.wiring import build_processor  # noqa: PLC0415
        from replicator.sink import deadletter  # noqa: PLC0415

        cfg = load_config(None)
        logs.configure(cfg.logging.level, cfg.logging.format, log_item_contents=cfg.logging.log_item_contents)
        loop = asyncio.new_event_loop()
        stack = contextlib.AsyncExitStack()
        metrics = Metrics()

        async def open_() -> BatchProcessor:
            client = await open_target_client(stack, cfg)
            source_client = None
            if cfg.replication.source_tombstones:
                # Deletes are tombstoned in the source too (active-active); nothing else reads the source.
                source_client = await stack.enter_async_context(
                    get_session().create_client(
                        "dynamodb",
                        region_name=cfg.source.region,
                        endpoint_url=cfg.source.endpoint_url,
                        config=client_config(),
                    )
                )
            dead_letters = await deadletter.from_config(cfg, stack, metrics=metrics)
            return build_processor(
                cfg,
                target_client=client,
                metrics=metrics,
                dead_letters=dead_letters,
                source_client=source_client,
            )

        try:
            processor = loop.run_until_complete(open_())
        except BaseException:
            loop.run_until_complete(stack.aclose())
            loop.close()
            raise
        log.info(
            "lambda_environment_ready",
            target_region=cfg.target.region,
            target_table=cfg.target.table,
            dead_letters=processor.dead_letters is not None,
        )
        return cls(cfg=cfg, loop=loop, stack=stack, metrics=metrics, processor=processor)

    def close(self) -> None:
        """Close the clients and the loop (Lambda never calls this; tests and local runs do)."""
        try:
            self.loop.run_until_complete(self.stack.aclose())
        finally:
            self.loop.close()


_environment: Environment | None = None


def environment() -> Environment:
    """Return the execution environment's singleton, created on first use (retried after a failure)."""
    global _environment  # noqa: PLW0603 - one per Lambda execution environment, by design
    if _environment is None:
        _environment = Environment.create()
    return _environment


def prewarm_requested(environ: Mapping[str, str]) -> bool:
    """Tell whether Lambda initialises this environment ahead of traffic (provisioned concurrency)."""
    return environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency"


def reset() -> None:
    """Close and forget the environment, so the next invocation reads the configuration afresh."""
    global _environment
    env, _environment = _environment, None
    if env is not None:
        env.close()


# --------------------------------------------------------------------------------------------------
# The handler
# --------------------------------------------------------------------------------------------------


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, list[dict[str, str]]]:
    """Replicate one ESM batch; return ``batchItemFailures`` naming the first record to retry, if any.

    Raises (a function error: Lambda retries the whole batch) only when the configuration is invalid,
    the event is not a DynamoDB Streams event, or the record to retry has no sequence number to name it.
    """
    started = time.monotonic()
    env = environment()
    raw_records = _records_of(event)
    budget_s = invocation_budget_s(context)
    request_id = getattr(context, "aws_request_id", None) or "local"
    before = _counter_totals(env.metrics)
    with structlog.contextvars.bound_contextvars(aws_request_id=request_id):
        outcome = env.loop.run_until_complete(process_event(env.processor, raw_records, budget_s=budget_s))
        after = _counter_totals(env.metrics)
        line = summary_line(
            outcome,
            function_name=_function_name(context),
            request_id=request_id,
            target_table=env.cfg.target.table,
            retries=after["retries"] - before["retries"],
            throttles=after["throttles"] - before["throttles"],
            latency_sum_s=after["latency_sum"] - before["latency_sum"],
            latency_count=after["latency_count"] - before["latency_count"],
            duration_ms=(time.monotonic() - started) * 1000,
        )
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        if outcome.failed_index is None:
            return {"batchItemFailures": []}
        sequence_number = outcome.failed_sequence_number
        if not sequence_number:
            # Lambda could not resume from an unnamed record; a function error retries the whole batch.
            raise ValueError(f"record {outcome.failed_index} of the event failed and has no dynamodb.SequenceNumber")
        return {"batchItemFailures": [{"itemIdentifier": sequence_number}]}


def invocation_budget_s(context: LambdaContext | None) -> float:
    """Seconds the batch may take: the remaining time less a margin (a fifth of it for short timeouts)."""
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return NO_CONTEXT_BUDGET_S
    remaining_s = context.get_remaining_time_in_millis() / 1000
    return max(0.0, remaining_s - min(DEADLINE_MARGIN_S, remaining_s / 5))


def _records_of(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    records = event.get("Records")
    if not isinstance(records, list):
        raise TypeError("the event has no Records list: is this function invoked by a DynamoDB Streams mapping?")
    for index, raw in enumerate(records):
        source = raw.get("eventSource") if isinstance(raw, dict) else None
        if source is not None and source != "aws:dynamodb":
            raise ValueError(f"record {index} comes from {source!r}, not a DynamoDB stream")
    return records


def _function_name(context: LambdaContext | None) -> str:
    name = getattr(context, "function_name", None) or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    return str(name or "local")


# --------------------------------------------------------------------------------------------------
# Processing one event
# --------------------------------------------------------------------------------------------------


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
    processor: BatchProcessor, raw_records: Sequence[dict[str, Any]], *, budget_s: float
) -> EventOutcome:
    """Run the records of one event through ``processor``; find the first record that must be retried."""
    outcome = EventOutcome(records=len(raw_records))
    records: list[ChangeRecord] = []
    failures: list[tuple[int, str]] = []
    by_key: dict[tuple[tuple[str, str, str], ...], list[int]] = {}
    for index, raw in enumerate(raw_records):
        try:
            record = from_lambda_event(decode_binary(raw), shard_id=LAMBDA_SHARD_ID)
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

    tasks = {asyncio.create_task(_process_key(processor, records, indexes)): indexes for indexes in by_key.values()}
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=budget_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("lambda_deadline_reached", keys_unfinished=len(pending), budget_s=round(budget_s, 3))
        for task, indexes in tasks.items():
            if task in pending:
                failures.append((indexes[0], "DeadlineExceeded"))
                continue
            result = task.result()
            outcome.outcomes.update(result.outcomes)
            if result.failed_index is not None:
                failures.append((result.failed_index, type(result.error).__name__))

    if failures:
        index, error = min(failures)
        outcome.failed_index = index
        outcome.error = error
        ddb = raw_records[index].get("dynamodb") if isinstance(raw_records[index], dict) else None
        sequence_number = ddb.get("SequenceNumber") if isinstance(ddb, dict) else None
        outcome.failed_sequence_number = str(sequence_number) if sequence_number else None
        log.warning(
            "lambda_batch_partially_failed",
            first_failed_index=index,
            sequence_number=outcome.failed_sequence_number,
            error=error,
            records_to_retry=outcome.records_to_retry,
        )
    return outcome


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
                "lambda_key_failed", sequence_number=batch[0].sequence_number, error=type(exc).__name__
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


# --------------------------------------------------------------------------------------------------
# Binary attributes
# --------------------------------------------------------------------------------------------------


def decode_binary(raw: dict[str, Any]) -> dict[str, Any]:
    """Return the record with B/BS values (base64 text on Lambda's wire) decoded to bytes, at any depth."""
    ddb = raw.get("dynamodb")
    if not isinstance(ddb, dict):
        return raw
    decoded = dict(ddb)
    for name in _IMAGES:
        image = ddb.get(name)
        if isinstance(image, dict):
            decoded[name] = {attr: _decode_value(value) for attr, value in image.items()}
    return {**raw, "dynamodb": decoded}


def _decode_value(value: Any) -> Any:  # noqa: ANN401 - an AttributeValue as JSON
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((type_, scalar),) = value.items()
    if type_ == "B" and isinstance(scalar, str):
        return {"B": base64.b64decode(scalar, validate=True)}
    if type_ == "BS" and isinstance(scalar, list):
        return {"BS": [base64.b64decode(b, validate=True) if isinstance(b, str) else b for b in scalar]}
    if type_ == "M" and isinstance(scalar, dict):
        return {"M": {k: _decode_value(v) for k, v in scalar.items()}}
    if type_ == "L" and isinstance(scalar, list):
        return {"L": [_decode_value(v) for v in scalar]}
    return value


# --------------------------------------------------------------------------------------------------
# The per-invocation summary (CloudWatch Embedded Metric Format)
# --------------------------------------------------------------------------------------------------


def _counter_totals(metrics: Metrics) -> dict[str, float]:
    """Cumulative retries, throttles and latency sum/count, to take per-invocation differences."""
    totals = {"retries": 0.0, "throttles": 0.0, "latency_sum": 0.0, "latency_count": 0.0}
    for name, collector in (("retries", metrics.retries), ("throttles", metrics.throttles)):
        for family in collector.collect():
            totals[name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    for family in metrics.replication_latency.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                totals["latency_sum"] += sample.value
            elif sample.name.endswith("_count"):
                totals["latency_count"] += sample.value
    return totals


def summary_line(
    outcome: EventOutcome,
    *,
    function_name: str,
    request_id: str,
    target_table: str,
    retries: float,
    throttles: float,
    latency_sum_s: float,
    latency_count: float,
    duration_ms: float,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Build the invocation's one-line summary: a CloudWatch EMF document (counts only, no item contents)."""
    values: dict[str, float] = dict.fromkeys(_COUNT_METRICS, 0)
    values["records"] = outcome.records
    for name, count in outcome.outcomes.items():
        values[name] = values.get(name, 0) + count
    values["records_to_retry"] = outcome.records_to_retry
    values["retries"] = retries
    values["throttles"] = throttles
    metrics = [{"Name": name, "Unit": "Count"} for name in values]
    metrics.append({"Name": "duration_ms", "Unit": "Milliseconds"})
    line: dict[str, Any] = {
        "_aws": {
            "Timestamp": now_ms if now_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": METRIC_NAMESPACE, "Dimensions": [["FunctionName"]], "Metrics": metrics}
            ],
        },
        "FunctionName": function_name,
        "event": "lambda_batch",
        "aws_request_id": request_id,
        "target_table": target_table,
        **values,
        "duration_ms": round(duration_ms, 1),
    }
    if latency_count:
        line["replication_latency_avg_s"] = round(latency_sum_s / latency_count, 3)
        metrics.append({"Name": "replication_latency_avg_s", "Unit": "Seconds"})
    if outcome.failed_index is not None:
        line["retry_from_index"] = outcome.failed_index
        line["retry_from_sequence_number"] = outcome.failed_sequence_number
        line["error"] = outcome.error
    return line


if prewarm_requested(os.environ):
    # Provisioned concurrency runs the module's initialisation ahead of traffic: do the ~0.6 s of
    # imports, configuration and client creation then, not in the first invocation.
    environment()
