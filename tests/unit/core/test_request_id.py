"""core.errors.request_id and the retry log line: the AWS request id reaches the logs."""

from __future__ import annotations

from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from replicator.core.errors import TransientError, request_id
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics


def _error(request: str | None) -> ClientError:
    meta: dict[str, object] = {"HTTPStatusCode": 500}
    if request:
        meta["RequestId"] = request
    return ClientError({"Error": {"Code": "InternalServerError", "Message": "m"}, "ResponseMetadata": meta}, "PutItem")  # type: ignore[arg-type]


def test_request_id_of_a_client_error_and_of_a_wrapped_one() -> None:
    """The id comes from ResponseMetadata.RequestId, also through a ReplicatorError's cause; None without one."""
    assert request_id(_error("REQ1")) == "REQ1"
    wrapped = TransientError("wrapped")
    wrapped.__cause__ = _error("REQ2")
    assert request_id(wrapped) == "REQ2"
    assert request_id(_error(None)) is None
    assert request_id(ValueError("x")) is None


async def test_the_retry_line_carries_code_and_request_id() -> None:
    """The 'retrying' warning names the AWS error code and request id (never the message)."""
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise _error("REQ9")
        return "ok"

    async def no_sleep(_: float) -> None:
        return None

    with capture_logs() as logs:
        result = await retrying("PutItem", call, policy=RetryPolicy(), metrics=Metrics(), sleep=no_sleep)
    assert result == "ok"
    line = next(e for e in logs if e["event"] == "retrying")
    assert line["request_id"] == "REQ9"
    assert line["code"] == "InternalServerError"
    assert "m" not in {str(v) for v in line.values()}
