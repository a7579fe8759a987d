"""The Lambda handler on events built from real DynamoDB Local stream records, writing to another region."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import plugins_for_tests
import pytest
import structlog
from lambda_support import FakeContext, live_items, stream_events
from replicator_dev.local.common import create_table

from replicator.core.errors import StreamConfigError
from replicator.runtime import lambda_function

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

PRIVATE_VALUE = "secret-value-4711"
"""An attribute value that must never show up in the handler's output."""


@pytest.fixture
def tables(region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name) -> tuple[str, str, str]:
    """Create a source table with a stream in region A, a target in region B (GSI on g, a number)."""
    source = unique_name("src")
    stream_arn = create_table(region_a.endpoint_url, source)["LatestStreamArn"]
    target = unique_name("dst")
    region_b.client().create_table(
        TableName=target,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return source, stream_arn, target


@pytest.fixture
def configure(
    monkeypatch: pytest.MonkeyPatch, region_b: DynamoDBLocal, tables: tuple[str, str, str]
) -> Iterator[Callable[..., None]]:
    """Return ``configure(**extra_env)``: set REPLICATOR_* for the handler and drop its environment."""
    source, stream_arn, target = tables

    def apply(**extra: str) -> None:
        lambda_function.reset()
        env = {
            "REPLICATOR_SOURCE__REGION": "us-east-1",
            "REPLICATOR_SOURCE__TABLE": source,
            "REPLICATOR_SOURCE__STREAM_ARN": stream_arn,
            "REPLICATOR_TARGET__REGION": "us-west-2",
            "REPLICATOR_TARGET__TABLE": target,
            "REPLICATOR_TARGET__ENDPOINT_URL": region_b.endpoint_url,
            "REPLICATOR_METRICS__ENABLED": "false",
            "REPLICATOR_LOGGING__FORMAT": "json",
            **extra,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    monkeypatch.setattr(plugins_for_tests, "POISON_ENABLED", True)
    yield apply
    lambda_function.reset()
    structlog.reset_defaults()


def _summary(out: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert len(lines) == 1, out
    summary: dict[str, Any] = lines[0]
    return summary


def test_poison_transform_fails_at_its_record_and_reinvocation_converges(  # noqa: PLR0917 - fixtures
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, tables, configure, capsys, monkeypatch
) -> None:
    """A plugin raising for one change: Lambda is told to resume at it; earlier records are in the target."""
    source, stream_arn, target = tables
    src = region_a.client()
    src.put_item(TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "1"}, "blob": {"B": b"\x00\x01\xff"}})  # 0
    src.put_item(TableName=source, Item={"pk": {"S": "p"}, "v": {"N": "1"}})  # 1
    src.put_item(TableName=source, Item={"pk": {"S": "b"}, "s": {"S": PRIVATE_VALUE}, "bs": {"BS": [b"x", b"y"]}})  # 2
    src.put_item(TableName=source, Item={"pk": {"S": "p"}, "v": {"N": "2"}, "poison": {"BOOL": True}})  # 3
    src.put_item(TableName=source, Item={"pk": {"S": "c"}, "v": {"N": "1"}})  # 4
    src.put_item(TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "2"}, "blob": {"B": b"\xfe"}})  # 5
    src.delete_item(TableName=source, Key={"pk": {"S": "c"}})  # 6
    events = stream_events(region_a, stream_arn, expected=7)
    configure(REPLICATOR_TRANSFORMS=json.dumps([{"type": "plugin", "function": "plugins_for_tests:poison_pill"}]))

    response = lambda_function.handler({"Records": events}, FakeContext())

    poison_seq = events[3]["dynamodb"]["SequenceNumber"]
    assert response == {"batchItemFailures": [{"itemIdentifier": poison_seq}]}
    target_items = live_items(region_b, target)
    # Every record before the poison one took effect, including p's earlier change...
    assert target_items["p"] == {"pk": {"S": "p"}, "v": {"N": "1"}}
    assert target_items["b"]["bs"] == {"BS": [b"x", b"y"]}
    assert target_items["b"]["s"] == {"S": PRIVATE_VALUE}
    assert "a" in target_items
    summary = _summary(capsys.readouterr().out)
    assert summary["records"] == 7
    assert summary["records_to_retry"] == 4
    assert summary["retry_from_sequence_number"] == poison_seq
    assert summary["error"] == "PoisonRecordError"
    assert summary["FunctionName"] == "replicator-test"

    # The cause is fixed; Lambda delivers the failed record and those after it again.
    monkeypatch.setattr(plugins_for_tests, "POISON_ENABLED", False)
    response = lambda_function.handler({"Records": events[3:]}, FakeContext())

    assert response == {"batchItemFailures": []}
    assert live_items(region_b, target) == live_items(region_a, source)
    assert live_items(region_b, target)["a"]["blob"] == {"B": b"\xfe"}
    out = capsys.readouterr()
    assert PRIVATE_VALUE not in out.out + out.err
    assert _summary(out.out)["records_to_retry"] == 0


def test_target_rejection_fails_at_the_record_until_dead_lettered(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, tables, configure, tmp_path: Path
) -> None:
    """A key type the target's index rejects: failure reported at it; with a destination, dead-lettered."""
    source, stream_arn, target = tables
    src = region_a.client()
    src.put_item(TableName=source, Item={"pk": {"S": "a"}, "g": {"N": "1"}})  # 0
    src.put_item(TableName=source, Item={"pk": {"S": "b"}})  # 1
    src.put_item(TableName=source, Item={"pk": {"S": "x"}, "g": {"S": "not-a-number"}})  # 2: GSI key is N
    src.put_item(TableName=source, Item={"pk": {"S": "y"}, "g": {"S": "also-bad"}})  # 3
    src.put_item(TableName=source, Item={"pk": {"S": "c"}, "g": {"N": "3"}})  # 4
    events = stream_events(region_a, stream_arn, expected=5)
    configure()

    first = lambda_function.handler({"Records": events}, FakeContext())
    assert first == {"batchItemFailures": [{"itemIdentifier": events[2]["dynamodb"]["SequenceNumber"]}]}
    assert {"a", "b"} <= set(live_items(region_b, target))
    assert "x" not in live_items(region_b, target)
    # Retrying without a change fails at the same record again: the failure is stable.
    again = lambda_function.handler({"Records": events[2:]}, FakeContext())
    assert again == first

    dead = tmp_path / "dead.jsonl"
    configure(REPLICATOR_FAILURE__ON_FAILURE__DESTINATION=str(dead))
    final = lambda_function.handler({"Records": events[2:]}, FakeContext())

    assert final == {"batchItemFailures": []}
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(d["sequenceNumber"] for d in letters) == sorted(e["dynamodb"]["SequenceNumber"] for e in events[2:4])
    assert {d["shardId"] for d in letters} == {lambda_function.LAMBDA_SHARD_ID}
    expected = {k: v for k, v in live_items(region_a, source).items() if k not in {"x", "y"}}
    assert live_items(region_b, target) == expected


def test_replaying_a_whole_batch_is_idempotent(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, tables, configure, capsys
) -> None:
    """Lambda may deliver a batch twice: the second time every write is superseded, nothing changes."""
    source, stream_arn, target = tables
    src = region_a.client()
    for i in range(5):
        src.put_item(TableName=source, Item={"pk": {"S": f"k{i % 3}"}, "v": {"N": str(i)}})
    events = stream_events(region_a, stream_arn, expected=5)
    configure()
    assert lambda_function.handler({"Records": events}, FakeContext()) == {"batchItemFailures": []}
    before = region_b.client().scan(TableName=target, ConsistentRead=True)["Items"]
    capsys.readouterr()

    assert lambda_function.handler({"Records": events}, FakeContext()) == {"batchItemFailures": []}

    summary = _summary(capsys.readouterr().out)
    assert summary["superseded"] == 3
    assert summary["replicated"] == 0
    assert summary["collapsed"] == 2
    after = region_b.client().scan(TableName=target, ConsistentRead=True)["Items"]
    assert sorted(after, key=lambda i: i["pk"]["S"]) == sorted(before, key=lambda i: i["pk"]["S"])
    assert live_items(region_b, target) == live_items(region_a, source)


@pytest.mark.parametrize(
    ("view_type", "extra_env"),
    [
        ("KEYS_ONLY", {}),
        ("OLD_IMAGE", {}),
        ("NEW_IMAGE", {"REPLICATOR_REPLICATION__SKIP_ECHOES": "true"}),
    ],
)
def test_a_stream_view_type_that_cannot_serve_the_config_fails_the_whole_batch(  # noqa: PLR0917 - fixtures
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, tables, configure, tmp_path: Path, view_type, extra_env
) -> None:
    """Events of a stream whose view type cannot keep the promise: the batch fails, nothing is dead-lettered."""
    _, _, target = tables
    source = f"{target}-{view_type.lower().replace('_', '-')}"
    stream_arn = create_table(region_a.endpoint_url, source, stream_view_type=view_type)["LatestStreamArn"]
    src = region_a.client()
    src.put_item(TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    src.update_item(TableName=source, Key={"pk": {"S": "a"}}, UpdateExpression="SET v = :v",
                    ExpressionAttributeValues={":v": {"N": "2"}})  # fmt: skip
    events = stream_events(region_a, stream_arn, expected=2)
    assert {e["dynamodb"]["StreamViewType"] for e in events} == {view_type}
    dead = tmp_path / "dead.jsonl"
    configure(
        REPLICATOR_SOURCE__TABLE=source,
        REPLICATOR_SOURCE__STREAM_ARN=stream_arn,
        REPLICATOR_FAILURE__ON_FAILURE__DESTINATION=str(dead),
        **extra_env,
    )

    with pytest.raises(StreamConfigError, match=view_type):
        lambda_function.handler({"Records": events}, FakeContext())

    assert not dead.exists() or dead.read_text() == ""
    assert live_items(region_b, target) == {}


def test_log_lines_carry_cold_start_and_the_request_id(region_a: DynamoDBLocal, tables, configure, capsys) -> None:
    """Set-up lines and the summary carry aws_request_id and cold_start: true first, false when warm."""
    source, stream_arn, _ = tables
    region_a.client().put_item(TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    events = stream_events(region_a, stream_arn, expected=1)
    configure()

    lambda_function.handler({"Records": events}, FakeContext())
    captured = capsys.readouterr()
    assert _summary(captured.out)["cold_start"] is True
    both = captured.out + captured.err
    setup = [json.loads(line) for line in both.splitlines() if '"aws_client_path"' in line]
    assert setup, both
    assert all(line["aws_request_id"] == "req-test" and line["cold_start"] is True for line in setup)

    lambda_function.handler({"Records": events}, FakeContext())
    assert _summary(capsys.readouterr().out)["cold_start"] is False
