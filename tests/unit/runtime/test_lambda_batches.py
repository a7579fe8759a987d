"""The Lambda handler's batch logic against a fake target: which record Lambda is told to retry from."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from replicator.aws.clients import TargetClient
from replicator.core.config import load_config
from replicator.observe.metrics import Metrics
from replicator.runtime import lambda_function
from replicator.runtime.lambda_function import (
    EventOutcome,
    invocation_budget_s,
    process_event,
    summary_line,
)
from replicator.runtime.wiring import build_processor

if TYPE_CHECKING:
    from replicator.core.records import ChangeRecord

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2024-01-01T00:00:00.000"


def _error(code: str) -> ClientError:
    status = 400 if code != "InternalServerError" else 500
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
    )


class FakeTarget:
    """Records every successful PutItem; rejects items flagged ``reject``; throttles keys in ``throttled``."""

    def __init__(self, *, throttled: frozenset[str] = frozenset()) -> None:  # noqa: D107 - a test double
        self.items: dict[str, dict[str, Any]] = {}
        self.throttled = throttled
        self.calls = 0

    async def put_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - the client call it fakes
        self.calls += 1
        item = params["Item"]
        pk = item["pk"]["S"]
        await asyncio.sleep(0)
        if pk in self.throttled:
            raise _error("ProvisionedThroughputExceededException")
        if "reject" in item:
            raise _error("ValidationException")
        self.items[pk] = item
        return {}

    async def delete_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - same
        raise AssertionError(f"tombstones are puts, got a delete for {params['Key']}")


def _record(index: int, pk: str, **attrs: dict[str, Any]) -> dict[str, Any]:
    """One record in Lambda's event shape (as JSON: B values as base64 text)."""
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
            "NewImage": {"pk": {"S": pk}, "n": {"N": str(index)}, **attrs},
            "SequenceNumber": f"{1000 + index:021d}",
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def _processor(target: FakeTarget, dead_letters: Any = None, **env: str) -> Any:
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
    return build_processor(cfg, target_client=TargetClient(target), metrics=Metrics(), dead_letters=dead_letters)


def _seq(records: list[dict[str, Any]], index: int) -> str:
    return str(records[index]["dynamodb"]["SequenceNumber"])


async def test_all_records_written_reports_no_failure() -> None:
    """A clean batch: every key written once with its latest change, nothing to retry."""
    target = FakeTarget()
    records = [_record(0, "a"), _record(1, "b"), _record(2, "a"), _record(3, "c")]
    outcome = await process_event(_processor(target), records, budget_s=5)
    assert outcome.failed_index is None
    assert outcome.records_to_retry == 0
    assert outcome.outcomes == {"replicated": 3, "collapsed": 1}
    assert target.items["a"]["n"] == {"N": "2"}
    assert set(target.items) == {"a", "b", "c"}


async def test_rejected_record_fails_at_itself_after_its_keys_earlier_change() -> None:
    """The target refuses a's 2nd change: a's 1st change is written, and Lambda resumes at the refused one."""
    target = FakeTarget()
    records = [
        _record(0, "x"),
        _record(1, "a"),
        _record(2, "y"),
        _record(3, "a", reject={"BOOL": True}),
        _record(4, "z"),
        _record(5, "a"),
    ]
    # Record 5 supersedes 3 within the batch; the collapsed write of 5 succeeds, so nothing fails.
    outcome = await process_event(_processor(target), records, budget_s=5)
    assert outcome.failed_index is None

    target = FakeTarget()
    outcome = await process_event(_processor(target), records[:5], budget_s=5)
    assert outcome.failed_index == 3
    assert outcome.failed_sequence_number == _seq(records, 3)
    assert outcome.error == "PoisonRecordError"
    assert outcome.records_to_retry == 2
    # Everything before the failed record is in the target, including a's earlier change.
    assert target.items["a"]["n"] == {"N": "1"}
    assert {"x", "y"} <= set(target.items)


async def test_earliest_failure_in_event_order_wins() -> None:
    """Two keys fail; the one whose failing record comes first in the event is reported."""
    target = FakeTarget()
    records = [
        _record(0, "a"),
        _record(1, "b", reject={"BOOL": True}),
        _record(2, "c", reject={"BOOL": True}),
    ]
    outcome = await process_event(_processor(target), list(reversed(records)), budget_s=5)
    assert outcome.failed_index == 0
    outcome = await process_event(_processor(FakeTarget()), records, budget_s=5)
    assert outcome.failed_index == 1
    assert outcome.failed_sequence_number == _seq(records, 1)


async def test_dead_letter_destination_absorbs_rejected_record() -> None:
    """With a dead-letter sink the refused record is dead-lettered and nothing is retried."""

    class Sink:
        def __init__(self) -> None:
            self.sent: list[ChangeRecord] = []

        async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
            del error, attempts
            self.sent.append(record)

    sink = Sink()
    records = [_record(0, "a"), _record(1, "b", reject={"BOOL": True}), _record(2, "c")]
    outcome = await process_event(_processor(FakeTarget(), dead_letters=sink), records, budget_s=5)
    assert outcome.failed_index is None
    assert outcome.outcomes["dead_lettered"] == 1
    assert [r.sequence_number for r in sink.sent] == [_seq(records, 1)]


async def test_unending_throttling_stops_at_the_deadline() -> None:
    """Unlimited retries are cut at the budget: the throttled key fails from its first record, others land."""
    target = FakeTarget(throttled=frozenset({"slow"}))
    records = [_record(0, "a"), _record(1, "slow"), _record(2, "b"), _record(3, "slow")]
    started = time.monotonic()
    outcome = await process_event(_processor(target), records, budget_s=0.3)
    assert time.monotonic() - started < 1.5
    assert outcome.failed_index == 1
    assert outcome.error == "DeadlineExceeded"
    assert set(target.items) == {"a", "b"}


async def test_bounded_retries_fail_the_key_before_the_deadline() -> None:
    """With failure.maximum_retry_attempts the key fails once retries run out, well before the budget."""
    target = FakeTarget(throttled=frozenset({"slow"}))
    records = [_record(0, "a"), _record(1, "b"), _record(2, "slow")]
    processor = _processor(target, REPLICATOR_FAILURE__MAXIMUM_RETRY_ATTEMPTS="2")
    started = time.monotonic()
    outcome = await process_event(processor, records, budget_s=30)
    assert time.monotonic() - started < 2
    assert outcome.failed_index == 2
    # The processor turns a write whose retries ran out into a poison record (Lambda's own policy).
    assert outcome.error == "PoisonRecordError"
    assert target.calls == 2 + 3


async def test_malformed_record_fails_at_itself_and_later_records_wait() -> None:
    """A record without Keys never succeeds: earlier records are written, later ones wait for the retry."""
    target = FakeTarget()
    records = [_record(0, "a"), _record(1, "b"), _record(2, "c"), _record(3, "d")]
    del records[2]["dynamodb"]["Keys"]
    outcome = await process_event(_processor(target), records, budget_s=5)
    assert outcome.failed_index == 2
    assert outcome.error == "ValueError"
    assert set(target.items) == {"a", "b"}


def test_budget_keeps_a_margin_from_the_remaining_time() -> None:
    """3 s are kept from a long remaining time, a fifth from a short one; no context: Lambda's maximum."""

    class Context:
        def __init__(self, ms: int) -> None:
            self.ms = ms

        def get_remaining_time_in_millis(self) -> int:
            return self.ms

    assert invocation_budget_s(Context(60_000)) == pytest.approx(57.0)
    assert invocation_budget_s(Context(1_000)) == pytest.approx(0.8)
    assert invocation_budget_s(Context(0)) == 0
    assert invocation_budget_s(None) == lambda_function.NO_CONTEXT_BUDGET_S


def test_summary_is_embedded_metric_format_without_contents() -> None:
    """Every metric declared in the _aws block is a top-level number; sequence numbers but no item values."""
    outcome = EventOutcome(records=5, failed_index=3, failed_sequence_number="000123", error="PoisonRecordError")
    outcome.outcomes.update({"replicated": 2, "collapsed": 1})
    line = summary_line(
        outcome,
        function_name="fn",
        request_id="req-1",
        target_table="dst",
        retries=4,
        throttles=1,
        latency_sum_s=3.0,
        latency_count=2,
        duration_ms=12.34,
        now_ms=1_700_000_000_000,
    )
    block = line["_aws"]
    assert block["Timestamp"] == 1_700_000_000_000
    (directive,) = block["CloudWatchMetrics"]
    assert directive["Namespace"] == "Replicator"
    assert directive["Dimensions"] == [["FunctionName"]]
    assert line["FunctionName"] == "fn"
    names = [m["Name"] for m in directive["Metrics"]]
    assert len(names) == len(set(names))
    for name in names:
        assert isinstance(line[name], int | float), name
    assert line["replicated"] == 2
    assert line["superseded"] == 0
    assert line["records_to_retry"] == 2
    assert line["retries"] == 4
    assert line["replication_latency_avg_s"] == 1.5
    assert line["retry_from_sequence_number"] == "000123"
    json.dumps(line)


def test_prewarm_only_for_provisioned_concurrency() -> None:
    """The environment is built at import only when Lambda initialises ahead of traffic."""
    assert lambda_function.prewarm_requested({"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"})
    assert not lambda_function.prewarm_requested({"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"})
    assert not lambda_function.prewarm_requested({})


async def test_record_without_creation_time_does_not_lose_to_an_earlier_change() -> None:
    """A MODIFY lacking ApproximateCreationDateTime is written over the INSERT before it in the batch."""
    target = FakeTarget()
    records = [_record(0, "a"), _record(1, "a"), _record(2, "b")]
    del records[1]["dynamodb"]["ApproximateCreationDateTime"]
    records[1]["eventName"] = "MODIFY"
    del records[2]["dynamodb"]["ApproximateCreationDateTime"]
    outcome = await process_event(_processor(target), records, budget_s=5)
    assert outcome.failed_index is None
    assert outcome.outcomes == {"replicated": 2, "collapsed": 1}
    assert target.items["a"]["n"] == {"N": "1"}
    # Its version's time is the record before it, not the epoch.
    assert target.items["a"]["_rep_version"]["S"] > "00000000000000000#"
    first_us = int(records[0]["dynamodb"]["ApproximateCreationDateTime"] * 1_000_000)
    assert int(target.items["b"]["_rep_version"]["S"][:17]) >= first_us - 1


async def test_event_without_any_creation_time_uses_the_invocation_clock() -> None:
    """No record has ApproximateCreationDateTime: versions take the time of the invocation, never 0."""
    target = FakeTarget()
    records = [_record(0, "a")]
    del records[0]["dynamodb"]["ApproximateCreationDateTime"]
    before_us = int(time.time()) * 1_000_000
    await process_event(_processor(target), records, budget_s=5)
    assert int(target.items["a"]["_rep_version"]["S"][:17]) >= before_us


async def test_poison_winner_of_a_collapse_falls_back_to_the_keys_last_good_change() -> None:
    """Item 5: the collapsed-away good changes of a key are not lost when its latest change is refused."""

    class Sink:
        def __init__(self) -> None:
            self.sent: list[ChangeRecord] = []

        async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
            del error, attempts
            self.sent.append(record)

    sink = Sink()
    target = FakeTarget()
    records = [_record(0, "a"), _record(1, "a"), _record(2, "a", reject={"BOOL": True})]
    outcome = await process_event(_processor(target, dead_letters=sink), records, budget_s=5)
    assert outcome.failed_index is None
    assert target.items["a"]["n"] == {"N": "1"}
    assert outcome.outcomes == {"replicated": 1, "collapsed": 1, "dead_lettered": 1}
    assert [r.sequence_number for r in sink.sent] == [_seq(records, 2)]
