"""The Lambda handler with ``targets:`` on DynamoDB Local: one event written to two tables, failures per target."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import plugins_for_tests
import pytest
import structlog
from lambda_support import FakeContext, live_items, stream_events
from replicator_dev.local.common import create_table

from replicator.runtime import lambda_function

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal


@pytest.fixture
def fan_out(
    monkeypatch: pytest.MonkeyPatch, region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name
) -> Iterator[tuple[str, str, str, str, Callable[..., None]]]:
    """A source with a stream, two target tables (``one``, ``two``: not created) and ``configure(two=..., **env)``."""
    source = unique_name("src")
    stream_arn = create_table(region_a.endpoint_url, source)["LatestStreamArn"]
    one, two = unique_name("one"), unique_name("two")
    create_table(region_b.endpoint_url, one, stream_view_type=None)

    def configure(two_extra: dict[str, Any] | None = None, **extra: str) -> None:
        lambda_function.reset()
        targets = [
            {"name": "one", "region": "us-west-2", "table": one, "endpoint_url": region_b.endpoint_url},
            {"name": "two", "region": "us-west-2", "table": two, "endpoint_url": region_b.endpoint_url}
            | (two_extra or {}),
        ]
        env = {
            "REPLICATOR_SOURCE__REGION": "us-east-1",
            "REPLICATOR_SOURCE__TABLE": source,
            "REPLICATOR_SOURCE__STREAM_ARN": stream_arn,
            "REPLICATOR_TARGETS": json.dumps(targets),
            "REPLICATOR_METRICS__ENABLED": "false",
            "REPLICATOR_LOGGING__FORMAT": "json",
            **extra,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    monkeypatch.setattr(plugins_for_tests, "POISON_ENABLED", True)
    yield source, stream_arn, one, two, configure
    lambda_function.reset()
    structlog.reset_defaults()


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.splitlines() if x.startswith("{") and '"_aws"' in x]


def _summary(out: str) -> dict[str, Any]:
    (line,) = [x for x in _emf(out) if x["event"] == "lambda_batch"]
    summary: dict[str, Any] = line
    return summary


def _writes(region_a: DynamoDBLocal, source: str) -> None:
    src = region_a.client()
    src.put_item(TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "1"}})  # 0
    src.put_item(TableName=source, Item={"pk": {"S": "p"}, "v": {"N": "1"}})  # 1
    src.put_item(TableName=source, Item={"pk": {"S": "p"}, "v": {"N": "2"}, "poison": {"BOOL": True}})  # 2
    src.put_item(TableName=source, Item={"pk": {"S": "b"}, "v": {"N": "1"}})  # 3
    src.delete_item(TableName=source, Key={"pk": {"S": "a"}})  # 4


def test_a_record_one_target_fails_is_retried_while_the_other_has_it(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, fan_out, capsys, monkeypatch
) -> None:
    """Target two's transform fails at record 2: Lambda retries from it; one has it; the retry converges both."""
    source, stream_arn, one, two, configure = fan_out
    create_table(region_b.endpoint_url, two, stream_view_type=None)
    _writes(region_a, source)
    events = stream_events(region_a, stream_arn, expected=5)
    poison = {"transforms": [{"type": "plugin", "function": "plugins_for_tests:poison_pill"}]}
    configure(two_extra=poison)

    response = lambda_function.handler({"Records": events}, FakeContext())

    poison_seq = events[2]["dynamodb"]["SequenceNumber"]
    assert response == {"batchItemFailures": [{"itemIdentifier": poison_seq}]}
    assert live_items(region_b, one) == live_items(region_a, source)
    assert live_items(region_b, two)["p"]["v"] == {"N": "1"}
    out = capsys.readouterr().out
    by_target = {x["Target"]: x for x in _emf(out) if x["event"] == "lambda_target_batch"}
    assert by_target["one"]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName", "Target"]]
    summary = _summary(out)
    for target in ("one", "two"):
        # Each target's own EMF document counts what the summary line's per-target counts say.
        assert by_target[target]["replicated"] == summary["targets"][target].get("replicated", 0)
    assert summary["retry_for_target"] == "two"
    assert summary["error"] == "PoisonRecordError"
    assert summary["target_table"] == f"{one},{two}"
    assert summary["targets"]["one"] == {"replicated": 3, "collapsed": 2}

    # Fixed: Lambda delivers record 2 and the rest again; one already has them (superseded), two catches up.
    monkeypatch.setattr(plugins_for_tests, "POISON_ENABLED", False)
    assert lambda_function.handler({"Records": events[2:]}, FakeContext()) == {"batchItemFailures": []}
    assert live_items(region_b, one) == live_items(region_a, source)
    assert live_items(region_b, two) == live_items(region_a, source)
    summary = _summary(capsys.readouterr().out)
    assert summary["targets"]["one"].get("replicated", 0) == 0
    assert summary["targets"]["one"]["superseded"] == 3


def test_an_unavailable_target_fails_the_batch_under_its_code_and_the_other_is_written(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, fan_out, capsys
) -> None:
    """Target two's table is missing: the batch fails from record 0 as ResourceNotFoundException within the budget."""
    source, stream_arn, one, two, configure = fan_out
    _writes(region_a, source)
    events = stream_events(region_a, stream_arn, expected=5)
    configure()

    response = lambda_function.handler({"Records": events}, FakeContext(remaining_ms=3000))

    assert response == {"batchItemFailures": [{"itemIdentifier": events[0]["dynamodb"]["SequenceNumber"]}]}
    assert live_items(region_b, one) == live_items(region_a, source)
    summary = _summary(capsys.readouterr().out)
    assert summary["error"] == "ResourceNotFoundException"
    assert summary["retry_for_target"] == "two"

    create_table(region_b.endpoint_url, two, stream_view_type=None)
    assert lambda_function.handler({"Records": events}, FakeContext()) == {"batchItemFailures": []}
    assert live_items(region_b, two) == live_items(region_a, source)
    assert live_items(region_b, one) == live_items(region_a, source)


def test_dead_letters_name_the_target_that_failed(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, fan_out, tmp_path: Path
) -> None:
    """With a destination, target two's poison record is dead-lettered naming two; nothing to retry."""
    source, stream_arn, one, two, configure = fan_out
    create_table(region_b.endpoint_url, two, stream_view_type=None)
    _writes(region_a, source)
    events = stream_events(region_a, stream_arn, expected=5)
    dead = tmp_path / "dead.jsonl"
    poison = {"transforms": [{"type": "plugin", "function": "plugins_for_tests:poison_pill"}]}
    configure(two_extra=poison, REPLICATOR_FAILURE__ON_FAILURE__DESTINATION=str(dead))

    assert lambda_function.handler({"Records": events}, FakeContext()) == {"batchItemFailures": []}

    (letter,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert letter["sequenceNumber"] == events[2]["dynamodb"]["SequenceNumber"]
    assert letter["target"] == {"id": "two", "region": "us-west-2", "table": two}
    assert live_items(region_b, one) == live_items(region_a, source)
