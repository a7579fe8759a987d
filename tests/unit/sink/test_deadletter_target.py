"""Dead letters name the target they were going to: with fan-out, each target's processor stamps its own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from support import sample

from replicator.aws.clients import TargetClient
from replicator.core.config import Config
from replicator.core.errors import TargetDetachedError, TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.runtime.wiring import build_processors
from replicator.sink import deadletter

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"


class Target:
    """A fake target table refusing every item flagged ``reject``."""

    def __init__(self, *, rejects: bool) -> None:  # noqa: D107 - test double
        self.rejects = rejects
        self.items: dict[str, dict[str, Any]] = {}

    async def put_item(self, **params: Any) -> dict[str, Any]:  # noqa: D102 - the client call it fakes
        await asyncio.sleep(0)
        if self.rejects:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                "PutItem",
            )
        self.items[params["Item"]["pk"]["S"]] = params["Item"]
        return {}


class FakeSqs:
    """Records SendMessageBatch entries."""

    def __init__(self) -> None:  # noqa: D107 - test double
        self.entries: list[dict[str, str]] = []

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """Record the entries; all succeed."""
        assert QueueUrl
        self.entries.extend(Entries)
        return {"Successful": [], "Failed": []}


def _record(key: str, seq: int = 1) -> ChangeRecord:
    event = {
        "eventID": f"e{seq}",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": time.time() - 5,
            "Keys": {"pk": {"S": key}},
            "NewImage": {"pk": {"S": key}},
            "SequenceNumber": f"{seq:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    return from_lambda_event(event, shard_id="shardId-1")


def _config() -> Config:
    return Config.model_validate(
        {
            "source": {"region": "us-east-1", "table": "src"},
            "targets": [
                {"name": "eu", "region": "eu-west-1", "table": "orders-eu"},
                {"region": "ap-south-1", "table": "orders-ap"},
            ],
        }
    )


async def test_each_targets_letters_name_it_in_a_shared_jsonl_file(tmp_path: Path) -> None:
    """Both targets refuse the record: the one file holds one letter per target, each naming its own."""
    cfg = _config()
    sink = deadletter.JsonlDeadLetters(tmp_path / "dead.jsonl", context=deadletter.DeadLetterContext.from_config(cfg))
    targets = {"eu": Target(rejects=True), "ap-south-1": Target(rejects=True)}
    clients = {name: TargetClient(t) for name, t in targets.items()}  # type: ignore[arg-type]
    processors = build_processors(cfg, target_clients=clients, metrics=Metrics(), dead_letters=sink)
    for processor in processors.values():
        await processor.process([_record("k")])
    letters = deadletter.read_jsonl(tmp_path / "dead.jsonl")
    assert sorted((d["target"] for d in letters), key=lambda t: t["id"]) == [
        {"id": "ap-south-1", "region": "ap-south-1", "table": "orders-ap"},
        {"id": "eu", "region": "eu-west-1", "table": "orders-eu"},
    ]
    assert {d["source"]["table"] for d in letters} == {"src"}


async def test_sqs_letters_name_their_target_and_fifo_groups_are_per_target() -> None:
    """On a FIFO queue one key's letters for two targets are two groups (each target's order holds)."""
    cfg = _config()
    sqs = FakeSqs()
    sink = deadletter.SqsDeadLetters(
        sqs,  # type: ignore[arg-type]
        "https://sqs.us-east-1.amazonaws.com/1/dlq.fifo",
        context=deadletter.DeadLetterContext.from_config(cfg),
        retry_policy=RetryPolicy(base_delay_s=0),
    )
    for target in cfg.targets:
        view = deadletter.for_target(sink, target)
        assert view is not None
        await view.send(_record("k"), error=TransformError("t"), attempts=1)
        await view.send(_record("k", seq=2), error=TransformError("t"), attempts=1)
    bodies = [json.loads(e["MessageBody"]) for e in sqs.entries]
    assert [b["target"]["id"] for b in bodies] == ["eu", "eu", "ap-south-1", "ap-south-1"]
    groups = [e["MessageGroupId"] for e in sqs.entries]
    assert groups[0] == groups[1]
    assert groups[2] == groups[3]
    assert groups[0] != groups[2]


def test_a_letter_without_a_target_id_keeps_its_old_fifo_group() -> None:
    """Letters written before targets had ids keep the group they had (source table and key only)."""
    old = deadletter.DeadLetterContext(source_table="src").document(_record("k"), error=TransformError("t"), attempts=1)
    assert "id" not in old["target"]
    new = deadletter.DeadLetterContext(source_table="src", target_id="eu").document(
        _record("k"), error=TransformError("t"), attempts=1
    )
    assert deadletter.message_group_id(old) != deadletter.message_group_id(new)
    identity = json.dumps(["src", old["record"]["dynamodb"]["Keys"]], sort_keys=True, separators=(",", ":"))
    assert deadletter.message_group_id(old) == hashlib.sha256(identity.encode()).hexdigest()


async def test_a_target_set_aside_at_shard_end_dead_letters_with_its_name_and_why(tmp_path: Path) -> None:
    """``dead_letter_all`` (fan-out, shard end): each record is a letter naming the target, counted dead_lettered."""
    cfg = _config()
    sink = deadletter.JsonlDeadLetters(tmp_path / "dead.jsonl", context=deadletter.DeadLetterContext.from_config(cfg))
    targets = {"eu": Target(rejects=False), "ap-south-1": Target(rejects=False)}
    clients = {name: TargetClient(t) for name, t in targets.items()}  # type: ignore[arg-type]
    metrics = Metrics()
    processors = build_processors(cfg, target_clients=clients, metrics=metrics, dead_letters=sink)
    result = await processors["eu"].dead_letter_all(
        [_record("k", 1), _record("j", 2)], TargetDetachedError("eu", "shardId-1")
    )
    assert result.outcomes == {"dead_lettered": 2}
    assert targets["eu"].items == {}
    letters = deadletter.read_jsonl(tmp_path / "dead.jsonl")
    assert [d["target"]["id"] for d in letters] == ["eu", "eu"]
    assert [d["record"]["dynamodb"]["SequenceNumber"] for d in letters] == [f"{1:021d}", f"{2:021d}"]
    assert {d["error"]["type"] for d in letters} == {"TargetDetachedError"}
    assert sample(metrics, "replicator_records_total", target="eu", outcome="dead_lettered") == 2
