from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from replicator.core.errors import RecordRejectedError, TransientError, is_throttle, is_transient
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics


def _error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
    )


def _value(metrics: Metrics, name: str, operation: str) -> float:
    value = metrics.registry.get_sample_value(name, {"target": metrics.target, "operation": operation})
    return value or 0.0


def test_full_jitter_bounds() -> None:
    """The delay is uniform in [0, min(max, base * 2**attempt)]: rng 0 gives 0, rng 1 the cap."""
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=5.0)
    assert policy.delay_s(3, rng=lambda: 0.0) == 0.0
    assert policy.delay_s(3, rng=lambda: 1.0) == pytest.approx(0.8)
    assert policy.delay_s(10, rng=lambda: 1.0) == 5.0
    assert policy.delay_s(10_000, rng=lambda: 1.0) == 5.0  # no overflow on very long outages


@pytest.mark.parametrize(
    ("exc", "transient", "throttle"),
    [
        (_error("ThrottlingException", 400), True, True),
        (_error("ProvisionedThroughputExceededException", 400), True, True),
        (_error("InternalServerError", 500), True, False),
        (_error("SomethingNew", 503), True, False),
        (_error("ValidationException", 400), False, False),
        (_error("ConditionalCheckFailedException", 400), False, False),
        (EndpointConnectionError(endpoint_url="http://x"), True, False),
        (ReadTimeoutError(endpoint_url="http://x"), True, False),
        (ConnectionResetError(), True, False),
        (TransientError("x"), True, False),
        (RecordRejectedError("x"), False, False),
        (ValueError("x"), False, False),
    ],
)
def test_classification(exc: BaseException, transient: bool, throttle: bool) -> None:  # noqa: FBT001 - parametrized
    """Throttling, 5xx, connection failures and timeouts are transient; validation errors are not."""
    assert is_transient(exc) is transient
    assert is_throttle(exc) is throttle


async def test_retries_transient_errors_until_success_and_counts_them() -> None:
    """Two throttles and a reset, then success: three sleeps, retries 3, throttles 2."""
    failures = [
        _error("ThrottlingException", 400),
        _error("ThrottlingException", 400),
        ConnectionResetError(),
    ]
    sleeps: list[float] = []

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    metrics = Metrics()
    result = await retrying(
        "PutItem", call, policy=RetryPolicy(base_delay_s=1, max_delay_s=100), metrics=metrics, sleep=sleep
    )
    assert result == "ok"
    assert len(sleeps) == 3
    assert all(0 <= d <= 2**i for i, d in enumerate(sleeps, start=1))
    assert _value(metrics, "replicator_retries_total", "PutItem") == 3
    assert _value(metrics, "replicator_throttles_total", "PutItem") == 2


async def test_non_transient_errors_are_not_retried() -> None:
    """A validation error surfaces at once, with no sleep."""
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise _error("ValidationException", 400)

    async def sleep(_delay: float) -> None:
        raise AssertionError("must not sleep")

    with pytest.raises(ClientError):
        await retrying("PutItem", call, policy=RetryPolicy(), metrics=Metrics(), sleep=sleep)
    assert calls == 1


async def test_max_attempts_bounds_retries_and_unlimited_keeps_going() -> None:
    """max_attempts=2 gives three calls then the error; None retries past a hundred failures."""
    calls = 0

    async def always_throttled() -> None:
        nonlocal calls
        calls += 1
        raise _error("ThrottlingException", 400)

    async def sleep(_delay: float) -> None:
        return None

    with pytest.raises(ClientError):
        await retrying(
            "GetRecords", always_throttled, policy=RetryPolicy(max_attempts=2), metrics=Metrics(), sleep=sleep
        )
    assert calls == 3

    remaining = 150

    async def eventually() -> str:
        nonlocal remaining
        remaining -= 1
        if remaining > 0:
            raise TransientError("still down")
        return "up"

    assert await retrying("GetRecords", eventually, policy=RetryPolicy(), metrics=Metrics(), sleep=sleep) == "up"
