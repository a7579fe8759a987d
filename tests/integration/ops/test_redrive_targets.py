"""Redrive with ``targets:`` on DynamoDB Local: letters from a fan-out function replay to their own target only."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import plugins_for_tests
import pytest
import structlog
from lambda_support import FakeContext, live_items, stream_events
from replicator_dev.local.common import create_table

from replicator.core.config import load_config
from replicator.ops.redrive import redrive
from replicator.runtime import lambda_function
from replicator.sink import deadletter

if TYPE_CHECKING:
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal


def test_letters_of_a_fan_out_function_replay_to_their_target_only(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Target two dead-letters p; redrive writes p to two, not to one; a letter for a gone target is left."""
    source, one, two = unique_name("src"), unique_name("one"), unique_name("two")
    stream_arn = create_table(region_a.endpoint_url, source)["LatestStreamArn"]
    for table in (one, two):
        create_table(region_b.endpoint_url, table, stream_view_type=None)
    src = region_a.client()
    src.put_item(TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    src.put_item(TableName=source, Item={"pk": {"S": "p"}, "v": {"N": "1"}, "poison": {"BOOL": True}})
    events = stream_events(region_a, stream_arn, expected=2)
    dead = tmp_path / "dead.jsonl"
    target = {"region": "us-west-2", "endpoint_url": region_b.endpoint_url}
    poison = [{"type": "plugin", "function": "plugins_for_tests:poison_pill"}]
    env = {
        "REPLICATOR_SOURCE__REGION": "us-east-1",
        "REPLICATOR_SOURCE__TABLE": source,
        "REPLICATOR_TARGETS": json.dumps(
            [{"name": "one", "table": one, **target}, {"name": "two", "table": two, "transforms": poison, **target}]
        ),
        "REPLICATOR_FAILURE__ON_FAILURE__DESTINATION": str(dead),
        "REPLICATOR_METRICS__ENABLED": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(plugins_for_tests, "POISON_ENABLED", True)
    lambda_function.reset()
    try:
        assert lambda_function.handler({"Records": events}, FakeContext()) == {"batchItemFailures": []}
    finally:
        lambda_function.reset()
        structlog.reset_defaults()
    (letter,) = deadletter.read_jsonl(dead)
    assert letter["target"]["id"] == "two"
    assert "p" not in live_items(region_b, two)
    # Were the letter replayed to one too, p would come back there.
    region_b.client().delete_item(TableName=one, Key={"pk": {"S": "p"}})
    gone = {**letter, "id": "other", "target": {**letter["target"], "id": "gone"}}
    dead.write_text(deadletter.dumps(letter) + "\n" + deadletter.dumps(gone) + "\n", encoding="utf-8")

    monkeypatch.setattr(plugins_for_tests, "POISON_ENABLED", False)
    # The handler runs its own event loop: this test is synchronous, the redrive gets one of its own.
    report = asyncio.run(redrive(load_config(None), source=str(dead)))

    assert report.outcomes == {"replicated": 1}
    assert live_items(region_b, two)["p"]["v"] == {"N": "1"}
    assert "p" not in live_items(region_b, one)
    assert report.unknown_targets == {"gone": 1}
    assert report.failed_path is not None
    assert [d["target"]["id"] for d in deadletter.read_jsonl(report.failed_path)] == ["gone"]
