"""Lambda's Embedded Metric Format lines by target: one document per target, dimensions FunctionName and Target."""

from __future__ import annotations

import json
from typing import Any

from replicator.observe.emf import TARGET_COUNT_METRICS, counter_totals, target_lines, target_totals
from replicator.observe.metrics import Metrics


def _invocation(metrics: Metrics) -> None:
    """What two targets' processors record in one invocation (the same shape as BatchProcessor's calls)."""
    a, b = metrics.for_target("eu"), metrics.for_target("ap")
    a.records.labels(outcome="replicated").inc(3)
    a.replication_latency.observe(1.0)
    a.replication_latency.observe(2.0)
    a.replication_latency.observe(3.0)
    b.records.labels(outcome="replicated").inc(1)
    b.records.labels(outcome="superseded").inc(1)
    b.records.labels(outcome="filtered").inc(1)
    b.conflicts.inc()
    b.replication_latency.observe(4.0)
    b.throttles.labels(operation="PutItem").inc()
    b.retries.labels(operation="PutItem").inc()
    # A call that is no target's: counted in the invocation's line, in no target's.
    metrics.retries.labels(operation="SendMessageBatch").inc()


def _valid_emf(line: dict[str, Any]) -> None:
    """Every dimension and declared metric is a top-level key (a string, a number); the line is JSON."""
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Replicator"
    for dimension_set in directive["Dimensions"]:
        for key in dimension_set:
            assert isinstance(line[key], str), key
    names = [m["Name"] for m in directive["Metrics"]]
    assert len(names) == len(set(names))
    for name in names:
        assert isinstance(line[name], int | float), name
    json.dumps(line)


def test_one_line_per_target_with_its_counts_over_the_invocation() -> None:
    """Differences of the target-labelled collectors, per target; a second invocation counts only its own."""
    metrics = Metrics()
    before = target_totals(metrics)
    _invocation(metrics)
    lines = target_lines(before, target_totals(metrics), function_name="fn", request_id="r1", now_ms=1_700_000_000_000)
    assert [line["Target"] for line in lines] == ["ap", "eu"]
    for line in lines:
        _valid_emf(line)
        assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName", "Target"]]
        assert line["_aws"]["Timestamp"] == 1_700_000_000_000
        assert line["FunctionName"] == "fn"
        assert line["aws_request_id"] == "r1"
    ap, eu = ({name: line[name] for name in (*TARGET_COUNT_METRICS, "replication_latency_avg_s")} for line in lines)
    zero = dict.fromkeys(TARGET_COUNT_METRICS, 0.0)
    assert eu == {**zero, "replicated": 3, "replication_latency_avg_s": 2.0}
    assert ap == {
        **zero,
        "replicated": 1,
        "superseded": 1,
        "filtered": 1,
        "retries": 1,
        "throttles": 1,
        "replication_latency_avg_s": 4.0,
    }
    middle = target_totals(metrics)
    metrics.for_target("eu").records.labels(outcome="replicated").inc()
    eu_again, ap_again = (
        {
            line["Target"]: line
            for line in target_lines(middle, target_totals(metrics), function_name="fn", request_id="r2")
        }[t]
        for t in ("eu", "ap")
    )
    assert eu_again["replicated"] == 1
    assert "replication_latency_avg_s" not in eu_again  # no write acknowledged: no latency metric
    assert ap_again["replicated"] == 0


def test_invocation_totals_still_add_up_every_target() -> None:
    """counter_totals (the invocation's line) sums retries, throttles and latency over all targets and none."""
    metrics = Metrics()
    _invocation(metrics)
    assert counter_totals(metrics) == {"retries": 2.0, "throttles": 1.0, "latency_sum": 10.0, "latency_count": 4.0}
