"""The Lambda handler's metrics: one JSON line per invocation in CloudWatch Embedded Metric Format (EMF).

CloudWatch Logs turns the line into metrics (namespace ``Replicator``, dimension ``FunctionName``):
outcome counts, records to retry, retries, throttles, duration, average replication latency. Counts
and sequence numbers only, never item contents. Retries, throttles and latency come from the same
Prometheus collectors the service exports, as differences over the invocation (``counter_totals``).
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from replicator.observe.metrics import Metrics

METRIC_NAMESPACE = "Replicator"

COUNT_METRICS = (
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


class InvocationOutcome(Protocol):
    """What became of one invocation's records (the Lambda handler's ``EventOutcome``)."""

    records: int
    outcomes: collections.Counter[str]
    failed_index: int | None
    failed_sequence_number: str | None
    error: str | None

    @property
    def records_to_retry(self) -> int:
        """Records Lambda delivers again."""
        ...


def counter_totals(metrics: Metrics) -> dict[str, float]:
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
    outcome: InvocationOutcome,
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
    values: dict[str, float] = dict.fromkeys(COUNT_METRICS, 0)
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
