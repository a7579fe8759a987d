"""The fault matrix in the Lambda handler: target-wide failures fail the batch, never dead-letter it.

Events are built from real DynamoDB Local stream records; the target is DynamoDB Local (its table
deleted), or ``faults.FaultProxy`` answering with a 403 page in front of it; dead letters go to SQS on
moto's server; libfaketime puts the source's records near the stream's retention.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from faults import FaultProxy
from replicator_dev.local.common import create_table, local_client

from replicator.core.records import to_lambda_event
from replicator.runtime import lambda_function
from replicator.sink.deadletter.document import SqsAssembler

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

MARKERS = frozenset({"_rep_version", "_rep_origin", "_rep_deleted", "_rep_expires", "_rep_ts"})


class FakeContext:
    """The parts of Lambda's context the handler reads."""

    aws_request_id = "req-fault"
    function_name = "replicator-fault"

    def get_remaining_time_in_millis(self) -> int:
        """Four seconds left: the handler keeps a fifth back to answer."""
        return 4000


def _events(ddb: DynamoDBLocal, stream_arn: str, expected: int) -> list[dict[str, Any]]:
    streams = ddb.client("dynamodbstreams")
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    raw: list[dict[str, Any]] = []
    for shard in shards:
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator and len(raw) < expected:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            raw.extend(page["Records"])
            iterator = page.get("NextShardIterator") if page["Records"] else None
    assert len(raw) == expected
    return [json.loads(json.dumps(to_lambda_event(r, event_source_arn=stream_arn))) for r in raw]


def _items(ddb: DynamoDBLocal, table: str) -> dict[str, dict[str, Any]]:
    return {
        item["pk"]["S"]: {k: v for k, v in item.items() if k not in MARKERS}
        for item in ddb.client().scan(TableName=table, ConsistentRead=True)["Items"]
        if "_rep_deleted" not in item
    }


def _queued(moto_server: Any, url: str) -> list[dict[str, Any]]:
    sqs = moto_server.client("sqs")
    assembler, docs = SqsAssembler(), []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return docs
        for message in messages:
            _, doc = assembler.add(message["Body"])
            if doc is not None:
                docs.append(doc)


@pytest.fixture
def setup(
    monkeypatch: pytest.MonkeyPatch, moto_server: Any, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., tuple[str, str]]]:
    """Return ``setup(source, target_endpoint, table)``: a dead-letter queue and the handler's REPLICATOR_*."""
    url = moto_server.client("sqs").create_queue(QueueName=unique_name("dlq"))["QueueUrl"]

    def apply(source: DynamoDBLocal, target_endpoint: str, table: str) -> tuple[str, str]:
        s = unique_name("src")
        stream_arn = create_table(source.endpoint_url, s)["LatestStreamArn"]
        lambda_function.reset()
        env = {
            "REPLICATOR_SOURCE__REGION": "us-east-1",
            "REPLICATOR_SOURCE__TABLE": s,
            "REPLICATOR_SOURCE__STREAM_ARN": stream_arn,
            "REPLICATOR_TARGET__REGION": "us-west-2",
            "REPLICATOR_TARGET__TABLE": table,
            "REPLICATOR_TARGET__ENDPOINT_URL": target_endpoint,
            "REPLICATOR_METRICS__ENABLED": "false",
            "REPLICATOR_LOGGING__FORMAT": "json",
            "REPLICATOR_FAILURE__ON_FAILURE__DESTINATION": url,
            "REPLICATOR_FAILURE__ON_FAILURE__ENDPOINT_URL": moto_server.endpoint_url,
            "REPLICATOR_FAILURE__ON_FAILURE__REGION": moto_server.region_name,
            "REPLICATOR_FAILURE__TARGET_UNAVAILABLE_MAX_BACKOFF_SECONDS": "0.5",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return s, stream_arn

    apply.queue_url = url  # type: ignore[attr-defined]
    yield apply
    lambda_function.reset()
    structlog.reset_defaults()


def _write(ddb: DynamoDBLocal, table: str, count: int) -> None:
    client = local_client("dynamodb", ddb.endpoint_url)
    for i in range(count):
        client.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})


def _drop(ddb: DynamoDBLocal, table: str) -> None:
    with contextlib.suppress(Exception):
        ddb.client().delete_table(TableName=table)


@pytest.mark.parametrize("broken", ["table_deleted", "403_html"])
def test_target_wide_failure_fails_the_batch_then_resumes(  # noqa: PLR0917 - pytest fixtures
    broken: str, region_a, region_b, unique_name, setup, moto_server, capsys
) -> None:
    """No table, or a 403 page: batchItemFailures from the first record, nothing dead-lettered; then it lands."""
    t = unique_name("dst")
    create_table(region_b.endpoint_url, t, stream_view_type=None)
    proxy = FaultProxy(region_b.endpoint_url).start()
    try:
        if broken == "403_html":
            proxy.fault = "403_html"
        else:
            _drop(region_b, t)
        s, stream_arn = setup(region_a, proxy.url, t)
        _write(region_a, s, 5)
        events = _events(region_a, stream_arn, 5)

        response = lambda_function.handler({"Records": events}, FakeContext())

        first = events[0]["dynamodb"]["SequenceNumber"]
        assert response == {"batchItemFailures": [{"itemIdentifier": first}]}
        assert _queued(moto_server, setup.queue_url) == []
        code = "HTTP403" if broken == "403_html" else "ResourceNotFoundException"
        summary = next(json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x)
        assert summary["error"] == code
        assert summary["records_to_retry"] == 5

        # Fixed: the mapping delivers the batch again and it lands; nothing was dead-lettered.
        proxy.fault = None
        if broken == "table_deleted":
            create_table(region_b.endpoint_url, t, stream_view_type=None)
        assert lambda_function.handler({"Records": events}, FakeContext()) == {"batchItemFailures": []}
        assert _items(region_b, t) == _items(region_a, s)
        assert _queued(moto_server, setup.queue_url) == []
    finally:
        proxy.close()


def test_records_near_retention_are_dead_lettered_by_the_handler(
    ddb_local_factory, region_b, unique_name, setup, moto_server
) -> None:
    """Records 23 h 59 min old (libfaketime) and no target table: each goes to SQS with its content."""
    source = ddb_local_factory(faketime=f"-{86400 - 60}")
    t = unique_name("dst")
    s, stream_arn = setup(source, region_b.endpoint_url, t)
    _write(source, s, 4)
    events = _events(source, stream_arn, 4)
    assert time.time() - events[0]["dynamodb"]["ApproximateCreationDateTime"] > 86400 - 3600

    response = lambda_function.handler({"Records": events}, FakeContext())

    assert response == {"batchItemFailures": []}
    letters = _queued(moto_server, setup.queue_url)
    assert sorted(d["record"]["dynamodb"]["NewImage"]["v"]["N"] for d in letters) == ["0", "1", "2", "3"]
    assert {d["error"]["type"] for d in letters} == {"TargetUnavailableError"}
