"""The Lambda handler with several targets: every target gets the event; a record failed by any is retried."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from botocore.exceptions import ClientError

from replicator.aws.clients import TargetClient
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.runtime.lambda_function import process_event
from replicator.runtime.wiring import build_processors

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2024-01-01T00:00:00.000"


def _error(code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem"
    )


class Target:
    """A fake target table: refuses keys in ``rejects``; fails every write with ``down`` (a code) when set."""

    def __init__(self, *, rejects: frozenset[str] = frozenset(), down: str | None = None) -> None:  # noqa: D107 - test double
        self.items: dict[str, dict[str, Any]] = {}
        self.rejects, self.down = rejects, down

    async def put_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - the client call it fakes
        await asyncio.sleep(0)
        item = params["Item"]
        if self.down is not None:
            raise _error(self.down)
        if item["pk"]["S"] in self.rejects:
            raise _error("ValidationException")
        self.items[item["pk"]["S"]] = item
        return {}

    async def delete_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - same
        raise AssertionError(params)


def _raw(index: int, pk: str) -> dict[str, Any]:
    return {
        "eventID": f"id-{index}",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": time.time() - 5 + index * 0.001,
            "Keys": {"pk": {"S": pk}},
            "NewImage": {"pk": {"S": pk}, "n": {"N": str(index)}},
            "SequenceNumber": f"{1000 + index:021d}",
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def _processors(targets: dict[str, Target], **top: Any) -> dict[str, Any]:
    """One processor per fake target (``targets`` by name; a value's ``filters`` key is the target's own)."""
    entries = [
        {"name": name, "region": f"r-{name}", "table": f"t-{name}", **top.pop(f"{name}_extra", {})} for name in targets
    ]
    cfg = Config.model_validate({"source": {"region": "us-east-1", "table": "src"}, "targets": entries, **top})
    clients = {name: TargetClient(target) for name, target in targets.items()}  # type: ignore[arg-type]
    return dict(build_processors(cfg, target_clients=clients, metrics=Metrics(), dead_letters=None))


def _seq(raws: list[dict[str, Any]], index: int) -> str:
    return str(raws[index]["dynamodb"]["SequenceNumber"])


async def test_every_target_gets_every_record() -> None:
    """A clean event: both targets hold every key; outcomes are counted per target and summed."""
    a, b = Target(), Target()
    raws = [_raw(0, "x"), _raw(1, "y"), _raw(2, "z")]
    outcome = await process_event(_processors({"a": a, "b": b}), raws, budget_s=5)
    assert outcome.failed_index is None
    assert set(a.items) == set(b.items) == {"x", "y", "z"}
    assert outcome.outcomes == {"replicated": 6}
    assert outcome.by_target == {"a": {"replicated": 3}, "b": {"replicated": 3}}


async def test_a_record_failed_by_one_target_is_retried_though_the_other_wrote_it() -> None:
    """Target b refuses y (no destination): Lambda retries from y; a has y and everything after it."""
    a, b = Target(), Target(rejects=frozenset({"y"}))
    raws = [_raw(0, "x"), _raw(1, "y"), _raw(2, "z")]
    outcome = await process_event(_processors({"a": a, "b": b}), raws, budget_s=5)
    assert outcome.failed_index == 1
    assert outcome.failed_sequence_number == _seq(raws, 1)
    assert outcome.error == "PoisonRecordError"
    assert outcome.failed_target == "b"
    assert set(a.items) == {"x", "y", "z"}
    assert "x" in b.items
    assert "y" not in b.items

    # Fixed, Lambda delivers y and what follows again: both write them (a real table finds a's superseded).
    b.rejects = frozenset()
    again = await process_event(_processors({"a": a, "b": b}), raws[1:], budget_s=5)
    assert again.failed_index is None
    assert set(b.items) == {"x", "y", "z"}
    assert again.by_target == {"a": {"replicated": 2}, "b": {"replicated": 2}}


async def test_the_smallest_failed_position_over_targets_is_reported() -> None:
    """Target a fails at index 2, b at index 1: Lambda resumes at 1, for every target."""
    a, b = Target(rejects=frozenset({"z"})), Target(rejects=frozenset({"y"}))
    raws = [_raw(0, "x"), _raw(1, "y"), _raw(2, "z"), _raw(3, "w")]
    outcome = await process_event(_processors({"a": a, "b": b}), raws, budget_s=5)
    assert outcome.failed_index == 1
    assert outcome.failed_target == "b"
    assert outcome.target_failures == {"a": 2, "b": 1}


async def test_an_unavailable_target_fails_the_batch_under_its_own_code_within_the_shared_budget() -> None:
    """Target b is down (AccessDenied): the batch fails from record 0 named by b's code; a wrote everything in time."""
    a, b = Target(), Target(down="AccessDeniedException")
    raws = [_raw(0, "x"), _raw(1, "y"), _raw(2, "x")]
    with structlog.testing.capture_logs() as logs:
        outcome = await asyncio.wait_for(process_event(_processors({"a": a, "b": b}), raws, budget_s=0.3), timeout=30)
    assert outcome.failed_index == 0
    assert outcome.error == "AccessDeniedException"
    assert outcome.failed_target == "b"
    assert set(a.items) == {"x", "y"}
    assert b.items == {}
    (deadline,) = [e for e in logs if e["event"] == "lambda_deadline_reached"]
    assert deadline["target"] == "b"
    (failed,) = [e for e in logs if e["event"] == "lambda_batch_partially_failed"]
    assert failed["target"] == "b"


async def test_each_target_applies_its_own_filters() -> None:
    """Target a keeps only pk x (its own filter); b has none: b gets every key, a only x, and nothing fails."""
    a, b = Target(), Target()
    processors = _processors({"a": a, "b": b}, a_extra={"filters": [{"dynamodb": {"Keys": {"pk": {"S": ["x"]}}}}]})
    raws = [_raw(0, "x"), _raw(1, "y")]
    outcome = await process_event(processors, raws, budget_s=5)
    assert outcome.failed_index is None
    assert set(a.items) == {"x"}
    assert set(b.items) == {"x", "y"}
    assert outcome.by_target["a"] == {"replicated": 1, "filtered": 1}
