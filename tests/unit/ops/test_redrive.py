"""Redrive: unreadable JSONL lines, SQS per-entry failures and duplicates, the source client, progress."""

from __future__ import annotations

import io
import random
from typing import TYPE_CHECKING, Any

import pytest
from rich.console import Console

from replicator.aws.clients import TargetClient
from replicator.core.config import Config
from replicator.core.errors import TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.ops import redrive_sqs
from replicator.ops.progress import ProgressBar
from replicator.ops.redrive import redrive
from replicator.sink import deadletter

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"
QUEUE = "https://sqs.us-west-2.amazonaws.com/1/dlq"


def _record(key: str, seq: int, *, name: str = "MODIFY", text: str = "v") -> ChangeRecord:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1_767_225_600.0 + seq,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{seq:021d}",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if name != "REMOVE":
        dynamodb["NewImage"] = {"pk": {"S": key}, "v": {"N": str(seq)}, "t": {"S": text}}
    event = {"eventID": f"e{seq}", "eventName": name, "eventSource": "aws:dynamodb", "eventSourceARN": ARN}
    return from_lambda_event({**event, "dynamodb": dynamodb}, shard_id="shardId-1")


def _doc(record: ChangeRecord, message: str = "t") -> dict[str, Any]:
    return deadletter.DeadLetterContext().document(record, error=TransformError(message), attempts=1)


def _cfg(**replication: Any) -> Config:
    return Config(
        source={"region": "us-east-1", "table": "src"},
        target={"region": "us-west-2", "table": "dst"},
        metrics={"enabled": False},
        replication=replication,
    )


class FakeTable:
    """A table that stores every put (tombstones too)."""

    def __init__(self) -> None:
        """Start empty."""
        self.items: dict[str, dict[str, Any]] = {}

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Store the item."""
        self.items[params["Item"]["pk"]["S"]] = params["Item"]
        return {}


class FakeQueue:
    """An SQS queue in memory; Delete/ChangeMessageVisibility entries fail as scripted per body index."""

    def __init__(
        self,
        bodies: list[str],
        *,
        delete_failures: dict[int, list[dict[str, Any]]] | None = None,
        per_receive: int = 10,
    ) -> None:
        """Hold the bodies; ``delete_failures[i]``: the failures of successive deletes of message i."""
        self.per_receive = per_receive
        self.bodies = dict(enumerate(bodies))
        self.visible = set(self.bodies)
        self.delete_failures = delete_failures or {}
        self.visibility_failures: dict[int, list[dict[str, Any]]] = {}
        self.delete_calls = 0

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        """Return up to 10 visible messages, making them invisible."""
        taken = sorted(self.visible)[: self.per_receive]
        self.visible -= set(taken)
        return {"Messages": [{"MessageId": str(i), "ReceiptHandle": f"h{i}", "Body": self.bodies[i]} for i in taken]}

    def _batch(
        self, entries: list[dict[str, Any]], failures: dict[int, list[dict[str, Any]]]
    ) -> tuple[list[int], list[dict[str, Any]]]:
        done, failed = [], []
        for entry in entries:
            index = int(entry["ReceiptHandle"][1:])
            script = failures.get(index) or []
            if script:
                failed.append({"Id": entry["Id"], **script.pop(0)})
            else:
                done.append(index)
        return done, failed

    async def delete_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """Delete the entries, except scripted failures."""
        assert QueueUrl == QUEUE
        self.delete_calls += 1
        done, failed = self._batch(Entries, self.delete_failures)
        for index in done:
            self.bodies.pop(index, None)
        return {"Successful": [], "Failed": failed}

    async def change_message_visibility_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """Make the entries visible again, except scripted failures."""
        assert QueueUrl == QUEUE
        done, failed = self._batch(Entries, self.visibility_failures)
        self.visible |= set(done)
        return {"Successful": [], "Failed": failed}

    async def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        """The message count."""
        return {"Attributes": {"ApproximateNumberOfMessages": str(len(self.bodies))}}


async def test_jsonl_with_torn_and_garbled_lines_redrives_the_rest(tmp_path: Path) -> None:
    """Lines that are not dead letters are counted and named by number; every other letter is replayed."""
    path = tmp_path / "dl.jsonl"
    lines = [deadletter.dumps(_doc(_record("k1", 1))), '{"format": "replicator.dead_let', "\x00garbage"]
    lines.append(deadletter.dumps(_doc(_record("k2", 2))))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = FakeTable()
    report = await redrive(_cfg(), source=str(path), target=TargetClient(target))  # type: ignore[arg-type]
    assert sorted(target.items) == ["k1", "k2"]
    assert report.outcomes == {"replicated": 2}
    assert report.unreadable == 2
    assert report.unreadable_lines == [2, 3]
    assert any("lines 2, 3" in line for line in report.lines())
    assert not report.ok


async def test_active_active_config_tombstones_the_source_on_redrive(tmp_path: Path) -> None:
    """With replication.source_tombstones a redriven delete is tombstoned in the source too, as run does."""
    path = tmp_path / "dl.jsonl"
    path.write_text(deadletter.dumps(_doc(_record("gone", 3, name="REMOVE"))) + "\n", encoding="utf-8")
    target, source = FakeTable(), FakeTable()
    cfg = _cfg(source_tombstones=True, timestamp_attribute="updatedAt")  # active-active needs it
    report = await redrive(cfg, source=str(path), target=TargetClient(target), source_client=source)  # type: ignore[arg-type]
    assert report.ok
    assert cfg.replication.tombstone_attribute in target.items["gone"]
    assert cfg.replication.tombstone_attribute in source.items["gone"]


async def test_delete_failures_are_retried_then_reported_never_counted_done() -> None:
    """A delete SQS failed on its side is retried; one it refuses is counted as not deleted; the run is not ok."""
    bodies = [deadletter.encode_sqs_bodies(_doc(_record(f"k{i}", i)))[0] for i in range(3)]
    queue = FakeQueue(
        bodies,
        delete_failures={
            0: [{"Code": "InternalError", "SenderFault": False}],
            2: [{"Code": "ReceiptHandleIsInvalid", "SenderFault": True}],
        },
    )
    target = FakeTable()
    report = await redrive(_cfg(), source=QUEUE, target=TargetClient(target), sqs=queue)  # type: ignore[arg-type]
    assert sorted(target.items) == ["k0", "k1", "k2"]
    assert report.deleted_messages == 2
    assert report.not_deleted == 1
    assert report.not_deleted_codes == {"ReceiptHandleIsInvalid": 1}
    assert sorted(queue.bodies) == [2]
    assert not report.ok
    assert any("not deleted" in line and "ReceiptHandleIsInvalid" in line for line in report.lines())


async def test_dry_run_reports_messages_it_could_not_release() -> None:
    """A dry run makes what it received visible again; a message SQS refuses to release is reported."""
    bodies = [deadletter.encode_sqs_bodies(_doc(_record(f"k{i}", i)))[0] for i in range(2)]
    queue = FakeQueue(bodies)
    queue.visibility_failures = {1: [{"Code": "ReceiptHandleIsInvalid", "SenderFault": True}]}
    report = await redrive(_cfg(), source=QUEUE, sqs=queue, dry_run=True)  # type: ignore[arg-type]
    assert queue.visible == {0}
    assert report.not_released == 1
    assert not report.ok


def _incompressible(size: int) -> str:
    rng = random.Random(3)  # noqa: S311 - test data, not secrets
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


async def test_a_letter_sent_twice_is_replayed_once_and_every_part_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of one letter sent twice (a retry after a crash) are all deleted; nothing is left as incomplete."""
    monkeypatch.setattr(redrive_sqs, "SQS_CHUNK_DOCUMENTS", 1)
    big = _record("big", 1, text=_incompressible(600_000))
    first = deadletter.encode_sqs_bodies(_doc(big, "first"))
    second = deadletter.encode_sqs_bodies(_doc(big, "second"))
    small = deadletter.encode_sqs_bodies(_doc(_record("small", 2)))
    # The first sending crashed after two parts; a later letter; then the whole retry and a stray part.
    for per_receive, duplicates in ((10, 0), (2, 1)):
        queue = FakeQueue([first[0], first[1], *small, *second, first[2]], per_receive=per_receive)
        target = FakeTable()
        report = await redrive(_cfg(), source=QUEUE, target=TargetClient(target), sqs=queue)  # type: ignore[arg-type]
        assert sorted(target.items) == ["big", "small"]
        assert queue.bodies == {}
        assert report.left_in_queue == 0
        assert report.duplicates_deleted == duplicates
        assert report.ok, report.lines()


async def test_progress_counts_every_dead_letter(tmp_path: Path) -> None:
    """The progress callback is told of every dead letter, replayed or unreadable."""
    path = tmp_path / "dl.jsonl"
    lines = [deadletter.dumps(_doc(_record(f"k{i}", i))) for i in range(5)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen: list[int] = []
    cfg = _cfg().model_copy(update={"failure": _cfg().failure.model_copy(update={"batch_size": 2})})
    report = await redrive(cfg, source=str(path), target=TargetClient(FakeTable()), on_progress=seen.append)  # type: ignore[arg-type]
    assert sum(seen) == report.read == 5
    assert len([n for n in seen if n]) == 3  # batches of 2, 2, 1


def test_progress_bar_counts_and_renders() -> None:
    """The shared bar (backfill and redrive) shows command, description and done/total."""
    out = io.StringIO()
    with ProgressBar("redrive", "dl.jsonl", total=4, console=Console(file=out, width=100)) as bar:
        bar.advance(3)
        bar.advance(1)
        assert bar.completed == 4
    assert "redrive" in out.getvalue()
    assert "4/4" in out.getvalue()
