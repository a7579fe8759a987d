"""The entry point Lambda invokes for each batch of its event source mapping, and the batch's time budget.

Retries: transient errors are retried with the service's policy (``failure.maximum_retry_attempts``),
but never past the invocation's deadline: at ``get_remaining_time_in_millis()`` minus a margin, keys
still being retried are cancelled and reported failed, so the function answers instead of timing out
(a timeout would make Lambda retry, and with bisection split, the whole batch).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from replicator.core.errors import StreamConfigError
from replicator.core.stream_view import check_view_type
from replicator.observe.emf import counter_totals, summary_line, target_lines, target_totals
from replicator.runtime.lambda_function.batches import process_event
from replicator.runtime.lambda_function.environment import environment, is_warm

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from replicator.core.config import Config

log = structlog.get_logger(__name__)

DEADLINE_MARGIN_S = 3.0
"""Time kept back from the invocation's remaining time to cancel retries, log and answer."""

NO_CONTEXT_BUDGET_S = 900.0
"""Processing budget when invoked without a Lambda context (local runs): Lambda's longest timeout."""


class LambdaContext(Protocol):
    """The parts of Lambda's context object the handler reads."""

    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before Lambda stops the invocation."""
        ...


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, list[dict[str, str]]]:
    """Replicate one ESM batch; return ``batchItemFailures`` naming the first record to retry, if any.

    Raises (a function error: Lambda retries the whole batch) only when the configuration is invalid,
    the stream's view type cannot serve it, the event is not a DynamoDB Streams event, or the record to
    retry has no sequence number to name it.
    """
    started = time.monotonic()
    request_id = getattr(context, "aws_request_id", None) or "local"
    cold_start = not is_warm()
    # Bound before the set-up, so its log lines (client paths, config) carry both as well.
    with structlog.contextvars.bound_contextvars(aws_request_id=request_id, cold_start=cold_start):
        env = environment()
        raw_records = _records_of(event)
        check_view_types(raw_records, env.cfg)
        budget_s = invocation_budget_s(context)
        before = counter_totals(env.metrics)
        before_by_target = target_totals(env.metrics) if env.cfg.fan_out else {}
        outcome = env.loop.run_until_complete(process_event(env.event_processor(), raw_records, budget_s=budget_s))
        after = counter_totals(env.metrics)
        line = summary_line(
            outcome,
            function_name=_function_name(context),
            request_id=request_id,
            target_table=",".join(t.table for t in env.cfg.targets),
            retries=after["retries"] - before["retries"],
            throttles=after["throttles"] - before["throttles"],
            latency_sum_s=after["latency_sum"] - before["latency_sum"],
            latency_count=after["latency_count"] - before["latency_count"],
            duration_ms=(time.monotonic() - started) * 1000,
        )
        line["cold_start"] = cold_start
        if outcome.by_target:
            # Fan-out: the counts above are summed over targets; each target's are here.
            line["targets"] = {t: dict(counts) for t, counts in outcome.by_target.items()}
            if outcome.failed_target is not None:
                line["retry_for_target"] = outcome.failed_target
        lines = [line]
        if env.cfg.fan_out:
            # One more EMF document per target, with a Target dimension: CloudWatch graphs each target apart.
            lines += target_lines(
                before_by_target,
                target_totals(env.metrics),
                function_name=_function_name(context),
                request_id=request_id,
            )
        sys.stdout.write("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines))
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


def check_view_types(raw_records: Sequence[Mapping[str, Any]], cfg: Config) -> None:
    """Refuse the whole batch when a record's ``StreamViewType`` cannot serve ``cfg`` (the service's rule).

    Raised before any record is processed: nothing is written or dead-lettered, and Lambda retries the
    batch until the stream or the configuration is changed.
    """
    view_types = {raw.get("dynamodb", {}).get("StreamViewType") for raw in raw_records if isinstance(raw, dict)}
    for view_type in sorted(v for v in view_types if isinstance(v, str)):
        try:
            check_view_type(view_type, cfg)
        except StreamConfigError as exc:
            log.error("stream_view_type_refused", view_type=view_type, action=str(exc))  # noqa: TRY400 - the message says what to set; a traceback adds nothing
            raise


def _function_name(context: LambdaContext | None) -> str:
    name = getattr(context, "function_name", None) or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    return str(name or "local")
