"""Failures at their true scope: a whole-target failure holds every write (nothing dead-lettered)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import structlog
from botocore.exceptions import ClientError

from replicator.aws.clients import TargetClient
from replicator.core.config import load_config
from replicator.core.errors import (
    RecordRejectedError,
    ShardGoneError,
    TargetUnavailableError,
    TransformError,
    TrimmedDataError,
    error_scope,
)
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.pipeline.target_health import TargetHealth
from replicator.runtime.lambda_function import process_event
from replicator.runtime.wiring import build_processor

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2024-01-01T00:00:00.000"
FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.005)


def _error(code: str, status: int = 400, message: str = "m") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
    )


@pytest.mark.parametrize(
    ("exc", "scope"),
    [
        (_error("ThrottlingException"), "transient"),
        (_error("InternalServerError", 500), "transient"),
        (_error("HTTP429", 429), "transient"),
        (_error("AccessDeniedException"), "target"),
        (_error("UnrecognizedClientException"), "target"),
        (_error("ExpiredTokenException"), "target"),
        (_error("InvalidSignatureException"), "target"),
        (_error("ResourceNotFoundException"), "target"),
        (_error("KMSDisabledException"), "target"),
        (_error("KMSAccessDeniedException"), "target"),
        (_error("HTTP403", 403), "target"),
        (
            _error("ValidationException", message="One or more parameter values were invalid: Missing the key id"),
            "target",
        ),
        (_error("ValidationException", message="Type mismatch for key pk expected: N actual: S"), "target"),
        (_error("ValidationException", message="Item size has exceeded the maximum allowed size"), "ambiguous"),
        (_error("ItemCollectionSizeLimitExceededException"), "record"),
        (_error("SomethingNew"), "ambiguous"),
        (TransformError("x"), "record"),
        (RecordRejectedError("older than 5 s"), "record"),
        (TargetUnavailableError("AccessDeniedException"), "target"),
        (TrimmedDataError("x"), "shard"),
        (ShardGoneError("x"), "shard"),
        (ConnectionResetError(), "transient"),
        (KeyError("bug"), "ambiguous"),
    ],
)
def test_error_scope_classifies_in_one_place(exc: BaseException, scope: str) -> None:
    """Each failure maps to the scope it reaches: transient, record, shard, target, or ambiguous."""
    assert error_scope(exc) == scope


class Target:
    """A fake target: fails every write with ``failing`` (by key: None for all) while ``failures`` > 0."""

    def __init__(self, code: str | None = None, *, failures: int = 0, status: int = 400, message: str = "m") -> None:  # noqa: D107 - test double
        self.code, self.failures, self.status, self.message = code, failures, status, message
        self.items: dict[str, dict[str, Any]] = {}
        self.calls = 0

    async def put_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - the client call it fakes
        self.calls += 1
        await asyncio.sleep(0)
        item = params["Item"]
        if "reject" in item:
            raise _error("ValidationException", message="Item size has exceeded the maximum allowed size")
        if self.code is not None and self.failures > 0:
            self.failures -= 1
            raise _error(self.code, self.status, self.message)
        self.items[item["pk"]["S"]] = item
        return {}

    async def delete_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - same
        raise AssertionError(params)


class Sink:
    """Collects dead letters with their error."""

    def __init__(self) -> None:  # noqa: D107 - test double
        self.sent: list[tuple[ChangeRecord, BaseException]] = []

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:  # noqa: D102
        del attempts
        self.sent.append((record, error))


def _raw(index: int, pk: str, age_s: float = 5, **attrs: Any) -> dict[str, Any]:
    return {
        "eventID": f"id-{index}",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": time.time() - age_s + index * 0.001,
            "Keys": {"pk": {"S": pk}},
            "NewImage": {"pk": {"S": pk}, "n": {"N": str(index)}, **attrs},
            "SequenceNumber": f"{1000 + index:021d}",
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def _records(*raws: dict[str, Any]) -> list[ChangeRecord]:
    return [from_lambda_event(r, shard_id="shard-1") for r in raws]


def _processor(target: Target, sink: Sink | None, metrics: Metrics, **env: str) -> Any:
    cfg = load_config(
        None,
        environ={
            "REPLICATOR_SOURCE__REGION": "us-east-1",
            "REPLICATOR_SOURCE__TABLE": "src",
            "REPLICATOR_TARGET__REGION": "us-west-2",
            "REPLICATOR_TARGET__TABLE": "dst",
            **env,
        },
    )
    processor = build_processor(cfg, target_client=TargetClient(target), metrics=metrics, dead_letters=sink)
    processor.target = TargetHealth(metrics=processor.metrics, policy=FAST)
    return processor


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    # Every metric read here is the target's: under its region (target.region, no name).
    return metrics.registry.get_sample_value(name, {"target": "us-west-2", **labels}) or 0.0


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDeniedException", 400),
        ("UnrecognizedClientException", 400),
        ("ExpiredTokenException", 400),
        ("InvalidSignatureException", 400),
        ("ResourceNotFoundException", 400),
        ("KMSDisabledException", 400),
        ("HTTP403", 403),
    ],
)
async def test_target_scope_holds_writes_and_dead_letters_nothing(code: str, status: int) -> None:
    """Five writes refused for a target-wide reason: held and retried until it works; no dead letter."""
    metrics, sink = Metrics(), Sink()
    target = Target(code, failures=5, status=status)
    processor = _processor(target, sink, metrics)
    held: list[float] = []
    put = target.put_item

    async def watched(**params: Any) -> dict[str, Any]:
        # The alert's gauge as each call (the first, then the probes) reaches the target.
        held.append(_value(metrics, "replicator_target_unavailable", code=code))
        return await put(**params)

    target.put_item = watched  # type: ignore[method-assign]
    result = await processor.process(_records(*(_raw(i, f"k{i}") for i in range(5))))
    assert sink.sent == []
    assert result.outcomes == {"replicated": 5}
    assert set(target.items) == {f"k{i}" for i in range(5)}
    assert 1.0 in held
    assert _value(metrics, "replicator_target_unavailable", code=code) == 0
    assert _value(metrics, "replicator_target_errors_total", scope="target", code=code) == 5
    assert _value(metrics, "replicator_dead_letters_total") == 0


async def test_one_probe_at_a_time_while_the_target_is_unavailable() -> None:
    """While held, writes of many keys reach the target one at a time, not all at once."""
    metrics = Metrics()
    target = Target("AccessDeniedException", failures=30)
    processor = _processor(target, Sink(), metrics)
    inflight, peak = 0, 0
    put = target.put_item

    async def counting(**params: Any) -> dict[str, Any]:
        nonlocal inflight, peak
        if processor.target.unavailable_code is None:
            # The first wave, sent before any failure was seen, overlaps by design.
            return await put(**params)
        inflight += 1
        peak = max(peak, inflight)
        try:
            await asyncio.sleep(0.001)
            return await put(**params)
        finally:
            inflight -= 1

    target.put_item = counting  # type: ignore[method-assign]
    await processor.process(_records(*(_raw(i, f"k{i}") for i in range(20))))
    assert len(target.items) == 20
    assert peak == 1


async def test_ambiguous_errors_trip_the_breaker_within_a_few_keys() -> None:
    """ValidationException on distinct keys with no success between: the first keys dead-lettered, then held."""
    metrics, sink = Metrics(), Sink()
    # Every write fails the same way for a while (a cause the message does not reveal), then works.
    target = Target("ValidationException", failures=12)
    processor = _processor(target, sink, metrics, REPLICATOR_TARGET__MAX_CONCURRENT_WRITES="1")
    result = await processor.process(_records(*(_raw(i, f"k{i}") for i in range(10))))
    assert len(sink.sent) == 2
    assert len(sink.sent) <= 4
    assert result.outcomes == {"replicated": 8, "dead_lettered": 2}
    assert _value(metrics, "replicator_target_errors_total", scope="record", code="ValidationException") == 2


async def test_a_record_sized_rejection_among_successes_is_record_scope() -> None:
    """Oversized items between successful ones are each dead-lettered; the breaker never trips."""
    metrics, sink = Metrics(), Sink()
    target = Target()
    processor = _processor(target, sink, metrics, REPLICATOR_TARGET__MAX_CONCURRENT_WRITES="1")
    raws = [_raw(i, f"k{i}", **({"reject": {"BOOL": True}} if i % 2 else {})) for i in range(10)]
    result = await processor.process(_records(*raws))
    assert result.outcomes == {"replicated": 5, "dead_lettered": 5}
    assert _value(metrics, "replicator_target_unavailable", code="ValidationException") == 0


async def test_a_held_record_near_retention_is_dead_lettered_with_its_content() -> None:
    """Held by an unavailable target, a record within the margin of the stream's retention goes to the sink."""
    metrics, sink = Metrics(), Sink()
    target = Target("AccessDeniedException", failures=10**9)
    processor = _processor(
        target,
        sink,
        metrics,
        REPLICATOR_FAILURE__STREAM_RETENTION_SECONDS="86400",
        REPLICATOR_FAILURE__DEAD_LETTER_BEFORE_RETENTION_SECONDS="3600",
    )
    old = _raw(0, "old", age_s=86400 - 3600 + 0.5, payload={"S": "kept"})
    result = await asyncio.wait_for(processor.process(_records(old)), timeout=60)
    assert result.outcomes == {"dead_lettered": 1}
    ((record, error),) = sink.sent
    assert record.new_image is not None
    assert record.new_image["payload"] == {"S": "kept"}
    assert isinstance(error, TargetUnavailableError)
    assert error.code == "AccessDeniedException"


async def test_without_a_destination_a_held_record_is_never_given_up() -> None:
    """No destination: a record past the margin stays held (nothing to keep it in); it lands when fixed."""
    metrics = Metrics()
    target = Target("AccessDeniedException", failures=20)
    processor = _processor(target, None, metrics)
    old = _raw(0, "old", age_s=86400 - 60)
    result = await processor.process(_records(old))
    assert result.outcomes == {"replicated": 1}


async def test_lambda_target_scope_fails_the_batch_from_its_first_record() -> None:
    """In the handler a target-wide failure is reported as batchItemFailures, under its code; no dead letter."""
    metrics, sink = Metrics(), Sink()
    target = Target("AccessDeniedException", failures=10**9)
    processor = _processor(target, sink, metrics)
    raws = [_raw(0, "a"), _raw(1, "b"), _raw(2, "a"), _raw(3, "c")]
    outcome = await process_event(processor, raws, budget_s=0.3)
    assert outcome.failed_index == 0
    assert outcome.records_to_retry == 4
    assert outcome.error == "AccessDeniedException"
    assert sink.sent == []
    assert target.items == {}


async def test_dead_lettered_log_line_names_the_aws_error_code() -> None:
    """The dead_lettered line carries the AWS code of the rejection (not its message)."""
    metrics, sink = Metrics(), Sink()
    processor = _processor(Target(), sink, metrics)
    with structlog.testing.capture_logs() as logs:
        await processor.process(_records(_raw(0, "a", reject={"BOOL": True})))
    (line,) = [e for e in logs if e["event"] == "dead_lettered"]
    assert line["code"] == "ValidationException"
    assert "maximum allowed size" not in repr(line)
