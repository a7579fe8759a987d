"""Per-target metrics: each target's processor (build_processors) records under its own ``target`` label."""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import ClientError
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import OUTCOMES, Metrics
from replicator.pipeline.fanout import FanOut
from replicator.runtime.service import Replicator
from replicator.runtime.wiring import build_processor, build_processors

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"
CREATED_S = 1_767_225_600.0
NOW_S = CREATED_S + 10


def _record(key: str, seq: int, *, name: str = "MODIFY") -> ChangeRecord:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": CREATED_S + seq,
        "Keys": {"pk": {"S": key}},
        "NewImage": {"pk": {"S": key}, "v": {"N": str(seq)}},
        "SequenceNumber": f"{seq:021d}",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    event = {"eventID": f"e{seq}", "eventName": name, "eventSource": "aws:dynamodb", "eventSourceARN": ARN}
    return from_lambda_event({**event, "dynamodb": dynamodb}, shard_id="shardId-1")


class Target(RecordingTarget):
    """A target that answers scripted error codes: for some keys, or for every write while ``refuse`` is set."""

    def __init__(self, *, key_codes: dict[str, str] | None = None, next_codes: list[str] | None = None) -> None:
        """Succeed unless told otherwise."""
        super().__init__()
        self.key_codes = dict(key_codes or {})
        self.next_codes = list(next_codes or [])
        self.refuse: str | None = None

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Raise the scripted code, else record the write."""
        code = self.refuse or self.key_codes.get(params["Item"]["pk"]["S"])
        if code is None and self.next_codes:
            code = self.next_codes.pop(0)
        if code is not None:
            error = {"Error": {"Code": code, "Message": "scripted"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
            raise ClientError(error, "PutItem")  # type: ignore[arg-type]
        return await super().put_item(**params)


def _config(**overrides: Any) -> Config:
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": "src"},
        "targets": [
            {"name": "a", "region": "eu-west-1", "table": "dst"},
            # b replicates inserts only: its own filter
            {"name": "b", "region": "ap-south-1", "table": "dst", "filters": [{"eventName": ["INSERT"]}]},
        ],
        "metrics": {"enabled": False},
        "failure": {"target_unavailable_max_backoff_seconds": 0.1},
    }
    data.update(overrides)
    return Config(**data)


def _fan_out(cfg: Config, metrics: Metrics, **targets: Target) -> FanOut:
    clients = {name: TargetClient(target) for name, target in targets.items()}  # type: ignore[arg-type]
    processors = build_processors(cfg, target_clients=clients, metrics=metrics, dead_letters=None, clock=lambda: NOW_S)
    return FanOut(processors)


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_two_targets_count_outcomes_conflicts_and_latency_under_their_own_label() -> None:
    """Target a writes all three records; b filters one and loses one to a newer item: exact samples per target."""
    metrics = Metrics()
    a, b = Target(), Target(key_codes={"k2": "ConditionalCheckFailedException"})
    records = [_record("k1", 1, name="INSERT"), _record("k2", 2, name="INSERT"), _record("k3", 3)]
    await _fan_out(_config(), metrics, a=a, b=b).process(records)
    expected = {
        "a": {"replicated": 3},
        "b": {"replicated": 1, "superseded": 1, "filtered": 1},
    }
    for target, outcomes in expected.items():
        for outcome in OUTCOMES:
            value = _value(metrics, "replicator_records_total", target=target, outcome=outcome)
            assert value == outcomes.get(outcome, 0), (target, outcome)
    assert _value(metrics, "replicator_conflicts_total", target="a") == 0
    assert _value(metrics, "replicator_conflicts_total", target="b") == 1
    assert _value(metrics, "replicator_records_written_total", target="a", shard="shardId-1") == 3
    assert _value(metrics, "replicator_records_written_total", target="b", shard="shardId-1") == 1
    # Created 9, 8 and 7 s before the (fixed) clock's now; b wrote only k1.
    assert _value(metrics, "replicator_replication_latency_seconds_count", target="a") == 3
    assert _value(metrics, "replicator_replication_latency_seconds_sum", target="a") == 24
    assert _value(metrics, "replicator_replication_latency_seconds_count", target="b") == 1
    assert _value(metrics, "replicator_replication_latency_seconds_sum", target="b") == 9
    assert _value(metrics, "replicator_batch_records_count", target="a") == 1
    assert _value(metrics, "replicator_batch_records_sum", target="b") == 3
    assert _value(metrics, "replicator_dead_letters_total", target="a") == 0
    # The write gate of each target publishes its own limit.
    assert _value(metrics, "replicator_target_concurrency_limit", target="a") == 64
    assert _value(metrics, "replicator_target_concurrency_limit", target="b") == 64
    assert a.values_of("k3") == [3]
    assert b.values_of("k3") == []


async def test_one_target_unavailable_is_named_while_the_other_writes() -> None:
    """Target b refuses every write (AccessDenied): its gauge is 1, a has no such series; a's throttle is a's."""
    metrics = Metrics()
    a, b = Target(next_codes=["ProvisionedThroughputExceededException"]), Target()
    b.refuse = "AccessDeniedException"
    task = asyncio.create_task(_fan_out(_config(), metrics, a=a, b=b).process([_record("k1", 1, name="INSERT")]))
    async with asyncio.timeout(10):
        while not (  # noqa: ASYNC110 - polling the processors' own accounting, which has no event
            _value(metrics, "replicator_target_unavailable", target="b", code="AccessDeniedException") == 1
            and _value(metrics, "replicator_records_total", target="a", outcome="replicated") == 1
        ):
            await asyncio.sleep(0.01)
    assert _value(metrics, "replicator_target_unavailable", target="a", code="AccessDeniedException") is None
    assert (
        _value(metrics, "replicator_target_errors_total", target="a", scope="target", code="AccessDeniedException")
        is None
    )
    assert not task.done()
    b.refuse = None
    await asyncio.wait_for(task, 10)
    assert _value(metrics, "replicator_target_unavailable", target="b", code="AccessDeniedException") == 0
    errors = _value(metrics, "replicator_target_errors_total", target="b", scope="target", code="AccessDeniedException")
    assert errors is not None
    assert errors >= 1
    assert _value(metrics, "replicator_throttles_total", target="a", operation="PutItem") == 1
    assert _value(metrics, "replicator_retries_total", target="a", operation="PutItem") == 1
    assert _value(metrics, "replicator_throttles_total", target="b", operation="PutItem") is None
    assert _value(metrics, "replicator_records_total", target="b", outcome="replicated") == 1


async def test_single_target_is_labelled_with_its_region_or_name() -> None:
    """``target:`` (one table) records under target=<region>; with ``name`` under the name."""
    for target_cfg, label in (
        ({"region": "eu-west-1", "table": "dst"}, "eu-west-1"),
        ({"name": "eu-copy", "region": "eu-west-1", "table": "dst"}, "eu-copy"),
    ):
        metrics = Metrics()
        cfg = _config(targets=None, target=target_cfg)
        target = Target()
        processor = build_processor(
            cfg,
            target_client=TargetClient(target),
            metrics=metrics,
            dead_letters=None,  # type: ignore[arg-type]
        )
        await processor.process([_record("k1", 1)])
        assert _value(metrics, "replicator_records_total", target=label, outcome="replicated") == 1
        assert _value(metrics, "replicator_records_total", outcome="replicated") is None


def test_for_target_exports_the_targets_series_at_zero_and_the_worker_none() -> None:
    """A target's outcome, conflict and dead-letter series exist at 0 once bound; the worker's own has none."""
    metrics = Metrics()
    metrics.for_target("a")
    for outcome in OUTCOMES:
        assert _value(metrics, "replicator_records_total", target="a", outcome=outcome) == 0
    assert _value(metrics, "replicator_conflicts_total", target="a") == 0
    assert _value(metrics, "replicator_dead_letters_total", target="a") == 0
    assert _value(metrics, "replicator_replication_latency_seconds_count", target="a") == 0
    series = [s.labels for family in metrics.registry.collect() for s in family.samples]
    assert all(labels.get("target") == "a" for labels in series if "target" in labels)


async def test_calls_that_are_no_targets_retry_with_an_empty_target() -> None:
    """A GetRecords retry through the worker's own metrics has target="" (Prometheus drops it: no target)."""
    metrics = Metrics()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            error = {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}
            raise ClientError(error, "GetRecords")  # type: ignore[arg-type]
        return "ok"

    policy = RetryPolicy(base_delay_s=0.001)
    assert await retrying("GetRecords", flaky, policy=policy, metrics=metrics) == "ok"
    assert _value(metrics, "replicator_throttles_total", target="", operation="GetRecords") == 1


def test_closed_shard_drops_records_written_of_every_target() -> None:
    """After the grace period a closed shard's records_written series go for each target."""
    metrics = Metrics()
    for target in ("a", "b"):
        metrics.for_target(target).records_written.labels(shard="s1").inc()
    metrics.for_target("a").records_written.labels(shard="s2").inc()
    metrics.remove_shard_series("s1", counters=True)
    assert _value(metrics, "replicator_records_written_total", target="a", shard="s1") is None
    assert _value(metrics, "replicator_records_written_total", target="b", shard="s1") is None
    assert _value(metrics, "replicator_records_written_total", target="a", shard="s2") == 1


async def test_the_service_fans_out_and_each_target_counts_its_own() -> None:
    """A Replicator with two targets reads each record once and counts it once per target, under its name."""
    stream = ScriptedStream()
    stream.add_shard("s1")
    stream.put("s1", "k1", 1, event_name="INSERT")
    stream.put("s1", "k2", 2)
    stream.close("s1")
    a, b = Target(), Target()
    cfg = _config(
        checkpoint={"backend": "sqlite", "path": ":memory:"},
        reader={"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05},
    )
    clients = Clients(
        source=stream,  # type: ignore[arg-type]
        streams=stream,  # type: ignore[arg-type]
        target=TargetClient(a),  # type: ignore[arg-type]
        targets={"a": TargetClient(a), "b": TargetClient(b)},  # type: ignore[arg-type]
    )
    metrics = Metrics()
    replicator = Replicator(cfg, metrics=metrics, clients=clients)
    task = asyncio.create_task(replicator.run())
    try:
        async with asyncio.timeout(10):
            while (  # noqa: ASYNC110 - polling the worker's own accounting, which has no event
                _value(metrics, "replicator_records_total", target="b", outcome="filtered") != 1
            ):
                await asyncio.sleep(0.01)
    finally:
        replicator.stop()
        await task
    assert _value(metrics, "replicator_records_read_total", shard="s1") == 2
    assert _value(metrics, "replicator_records_total", target="a", outcome="replicated") == 2
    assert _value(metrics, "replicator_records_total", target="b", outcome="replicated") == 1
    assert _value(metrics, "replicator_records_written_total", target="a", shard="s1") == 2
    assert _value(metrics, "replicator_records_written_total", target="b", shard="s1") == 1
