"""The Lambda handler's metrics: one JSON line per invocation in CloudWatch Embedded Metric Format (EMF).

CloudWatch Logs turns the line into metrics (namespace ``Replicator``, dimension ``FunctionName``):
outcome counts, records to retry, retries, throttles, duration, average replication latency. Counts
and sequence numbers only, never item contents. Retries, throttles and latency come from the same
Prometheus collectors the service exports, as differences over the invocation (``counter_totals``).

By target (``target_totals``, ``target_lines``): one more line per target, dimensions ``FunctionName``
and ``Target`` (``TargetConfig.target_id``), with that target's outcome counts, retries, throttles and
average latency over the invocation, read from the collectors' ``target`` label.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from prometheus_client import Counter, Histogram
    from prometheus_client.samples import Sample

    from replicator.observe.metrics import Metrics
    from replicator.observe.target_metrics import TargetBound

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

TARGET_COUNT_METRICS = (
    "replicated",
    "superseded",
    "collapsed",
    "filtered",
    "echo_skipped",
    "ttl_skipped",
    "dead_lettered",
    "retries",
    "throttles",
)
"""What a target's line counts: its outcomes (one per record read, per target), its retries and throttles."""


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


def _samples(collector: TargetBound[Counter] | TargetBound[Histogram]) -> Iterator[Sample]:
    for family in collector.collect():
        yield from family.samples


def target_totals(metrics: Metrics) -> dict[str, dict[str, float]]:
    """Per target id: cumulative outcome counts, retries, throttles and latency sum/count (to take differences).

    Calls that are no target's (an empty ``target``: GetRecords, dead letters) are left out.
    """
    rows = [(s.labels["outcome"], s) for s in _samples(metrics.records) if s.name.endswith("_total")]
    rows += [
        (name, s)
        for name, collector in (("retries", metrics.retries), ("throttles", metrics.throttles))
        for s in _samples(collector)
        if s.name.endswith("_total")
    ]
    rows += [
        ("latency_" + s.name.rsplit("_", 1)[1], s)
        for s in _samples(metrics.replication_latency)
        if s.name.endswith(("_sum", "_count"))
    ]
    totals: dict[str, dict[str, float]] = {}
    for name, sample in rows:
        if sample.labels["target"]:
            mine = totals.setdefault(sample.labels["target"], {})
            mine[name] = mine.get(name, 0.0) + sample.value
    return totals


def target_lines(
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
    *,
    function_name: str,
    request_id: str,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """One EMF document per target (dimensions FunctionName and Target): its counts over the invocation.

    ``before`` and ``after``: ``target_totals`` at the invocation's start and end.
    """
    timestamp_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    lines: list[dict[str, Any]] = []
    for target in sorted(after):
        was = before.get(target, {})
        delta = {name: value - was.get(name, 0.0) for name, value in after[target].items()}
        values = {name: delta.get(name, 0.0) for name in TARGET_COUNT_METRICS}
        metrics = [{"Name": name, "Unit": "Count"} for name in values]
        line: dict[str, Any] = {
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [
                    {"Namespace": METRIC_NAMESPACE, "Dimensions": [["FunctionName", "Target"]], "Metrics": metrics}
                ],
            },
            "FunctionName": function_name,
            "Target": target,
            "event": "lambda_target_batch",
            "aws_request_id": request_id,
            **values,
        }
        latency_count = delta.get("latency_count", 0.0)
        if latency_count:
            line["replication_latency_avg_s"] = round(delta.get("latency_sum", 0.0) / latency_count, 3)
            metrics.append({"Name": "replication_latency_avg_s", "Unit": "Seconds"})
        lines.append(line)
    return lines
