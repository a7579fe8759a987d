"""Redrive with ``targets:``: each letter goes to the target it names, never to another; the rest is left."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from replicator.aws.clients import TargetClient
from replicator.cli.main import main
from replicator.core.config import Config
from replicator.core.errors import ConfigError, TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.ops.redrive import redrive, report_json
from replicator.sink import deadletter

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"
QUEUE = "https://sqs.us-west-2.amazonaws.com/1/dlq"
CONFIG = {
    "source": {"region": "us-east-1", "table": "src"},
    "targets": [
        {"name": "eu", "region": "eu-west-1", "table": "orders"},
        {"name": "ap", "region": "ap-south-1", "table": "orders"},
    ],
    "metrics": {"enabled": False},
}


class FakeTable:
    """A table that stores every put."""

    def __init__(self) -> None:
        """Start empty."""
        self.items: dict[str, dict[str, Any]] = {}

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Store the item."""
        self.items[params["Item"]["pk"]["S"]] = params["Item"]
        return {}


class FakeQueue:
    """An SQS queue in memory (standard): receive each message once, record deletes."""

    def __init__(self, bodies: list[str]) -> None:
        """Hold the bodies."""
        self.bodies = dict(enumerate(bodies))
        self.given: set[int] = set()
        self.deleted: set[int] = set()

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        """Every message not yet given, at most 10."""
        fresh = [i for i in self.bodies if i not in self.given][:10]
        self.given.update(fresh)
        return {"Messages": [{"MessageId": str(i), "ReceiptHandle": f"h{i}", "Body": self.bodies[i]} for i in fresh]}

    async def delete_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """Delete them all."""
        assert QueueUrl
        self.deleted.update(int(e["ReceiptHandle"][1:]) for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def _record(key: str, seq: int) -> ChangeRecord:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1_767_225_600.0 + seq,
        "Keys": {"pk": {"S": key}},
        "NewImage": {"pk": {"S": key}, "v": {"N": str(seq)}},
        "SequenceNumber": f"{seq:021d}",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    event = {"eventID": f"e{seq}", "eventName": "MODIFY", "eventSource": "aws:dynamodb", "eventSourceARN": ARN}
    return from_lambda_event({**event, "dynamodb": dynamodb}, shard_id="shardId-1")


def _doc(key: str, seq: int, target_id: str | None) -> dict[str, Any]:
    context = deadletter.DeadLetterContext(source_table="src", target_table="orders", target_id=target_id)
    return context.document(_record(key, seq), error=TransformError("t"), attempts=1)


def _file(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "dl.jsonl"
    path.write_text("".join(deadletter.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _tables() -> tuple[FakeTable, FakeTable, dict[str, TargetClient]]:
    eu, ap = FakeTable(), FakeTable()
    return eu, ap, {"eu": TargetClient(eu), "ap": TargetClient(ap)}  # type: ignore[arg-type]


async def test_each_letter_is_replayed_to_the_target_it_names_only(tmp_path: Path) -> None:
    """A letter for eu lands in eu alone, one for ap in ap alone; same key, same record: no crossing."""
    path = _file(tmp_path, _doc("k", 1, "eu"), _doc("j", 2, "ap"), _doc("k2", 3, "ap"))
    eu, ap, clients = _tables()
    report = await redrive(Config.model_validate(CONFIG), source=str(path), targets=clients)
    assert report.ok
    assert sorted(eu.items) == ["k"]
    assert sorted(ap.items) == ["j", "k2"]
    assert report.outcomes == {"replicated": 3}


async def test_a_letter_naming_a_target_not_in_the_config_is_reported_and_left(tmp_path: Path) -> None:
    """A letter for 'us' (not configured) is replayed nowhere, counted, named, and kept in the new file."""
    path = _file(tmp_path, _doc("k", 1, "eu"), _doc("x", 2, "us"))
    eu, ap, clients = _tables()
    report = await redrive(Config.model_validate(CONFIG), source=str(path), targets=clients, clock=lambda: 0.0)
    assert not report.ok
    assert sorted(eu.items) == ["k"]
    assert ap.items == {}
    assert report.unknown_targets == {"us": 1}
    assert any("not in the configuration" in line and "us x1" in line for line in report.lines())
    assert report.failed_path is not None
    (left,) = deadletter.read_jsonl(report.failed_path)
    assert left["target"]["id"] == "us"
    assert json.loads(report_json(report))["unknown_targets"] == {"us": 1}


async def test_an_old_letter_without_a_target_is_refused_with_several_targets_unless_told_where(
    tmp_path: Path,
) -> None:
    """No target id and two targets: refused, saying to pass --target; with target_name, replayed there only."""
    path = _file(tmp_path, _doc("old", 1, None))
    eu, ap, clients = _tables()
    cfg = Config.model_validate(CONFIG)
    report = await redrive(cfg, source=str(path), targets=clients, clock=lambda: 0.0)
    assert not report.ok
    assert report.without_target == 1
    assert eu.items == ap.items == {}
    assert any("--target NAME" in line for line in report.lines())

    report = await redrive(cfg, source=str(path), targets=clients, target_name="ap")
    assert report.ok
    assert sorted(ap.items) == ["old"]
    assert eu.items == {}


async def test_an_unknown_target_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """--target naming no configured target is bad input (ConfigError: exit 2)."""
    path = _file(tmp_path, _doc("old", 1, None))
    with pytest.raises(ConfigError, match="'nope'"):
        await redrive(Config.model_validate(CONFIG), source=str(path), target_name="nope")


async def test_old_letters_still_redrive_with_one_target(tmp_path: Path) -> None:
    """One target: a letter without a target id goes to it, as before letters named their target."""
    path = _file(tmp_path, _doc("old", 1, None))
    table = FakeTable()
    cfg = Config.model_validate({**CONFIG, "targets": CONFIG["targets"][:1]})
    report = await redrive(cfg, source=str(path), target=TargetClient(table))  # type: ignore[arg-type]
    assert report.ok
    assert sorted(table.items) == ["old"]


async def test_sqs_letters_for_an_unknown_target_stay_in_the_queue() -> None:
    """From SQS, the letter for an unknown target is not deleted; the one for eu is replayed and deleted."""
    queue = FakeQueue([deadletter.encode_sqs_bodies(d)[0] for d in (_doc("k", 1, "eu"), _doc("x", 2, "us"))])
    eu, ap, clients = _tables()
    report = await redrive(Config.model_validate(CONFIG), source=QUEUE, targets=clients, sqs=queue)  # type: ignore[arg-type]
    assert sorted(eu.items) == ["k"]
    assert ap.items == {}
    assert queue.deleted == {0}
    assert report.left_in_queue == 1
    assert not report.ok


def test_cli_exits_1_for_letters_left_and_2_for_an_unknown_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exit-code table: letters left (no target id, several targets) exit 1; --target nope exits 2."""
    for name in list(os.environ):
        if name.startswith("REPLICATOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(CONFIG), encoding="utf-8")
    path = _file(tmp_path, _doc("old", 1, None))
    args = ["redrive", "--config", str(config), "--source", str(path), "--no-progress"]
    left = CliRunner().invoke(main, args)
    assert left.exit_code == 1, left.output
    assert "--target NAME" in left.stdout
    bad = CliRunner().invoke(main, [*args, "--target", "nope"])
    assert bad.exit_code == 2, bad.output
    assert "nope" in bad.stderr


async def test_a_dry_run_routes_like_a_real_one_and_writes_nothing(tmp_path: Path) -> None:
    """Dry run: the letter for eu runs its pipeline; the unknown and the unnamed ones are counted as left."""
    path = _file(tmp_path, _doc("k", 1, "eu"), _doc("x", 2, "us"), _doc("old", 3, None))
    report = await redrive(Config.model_validate(CONFIG), source=str(path), dry_run=True)
    assert report.outcomes == {"would_write": 1}
    assert report.unknown_targets == {"us": 1}
    assert report.without_target == 1
    assert report.failed_path is None
