from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

from replicator.aws.clients import TargetClient
from replicator.core.config import Config
from replicator.core.errors import TransformError
from replicator.core.records import from_lambda_event
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.ops.redrive import redrive
from replicator.pipeline.processor import BatchProcessor, PoisonRecordError
from replicator.pipeline.stages import Pipeline
from replicator.sink import deadletter
from replicator.sink.writer import ConditionalWriter

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"


def _event(key: str, seq: int, *, image: dict[str, Any] | None = None) -> dict[str, Any]:
    new = image if image is not None else {"pk": {"S": key}, "v": {"N": str(seq)}}
    return {
        "eventID": f"e{seq}",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600.0 + seq,
            "Keys": {"pk": {"S": key}},
            "NewImage": new,
            "SequenceNumber": f"{seq:021d}",
            "SizeBytes": 20,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def _record(key: str, seq: int, **kw: Any):
    return from_lambda_event(_event(key, seq, **kw), shard_id="shardId-1")


def _cfg(**failure: Any) -> Config:
    return Config(
        source={"region": "us-east-1", "table": "src"},
        target={"region": "us-west-2", "table": "dst"},
        failure=failure,
        metrics={"enabled": False},
    )


class FakeTarget:
    """A target that accepts every write, or fails as scripted per key."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        """Start empty; ``fail`` maps keys to the error their writes raise."""
        self.items: dict[str, dict[str, Any]] = {}
        self.fail = fail or {}
        self.calls = 0

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Store the item, or raise the scripted error."""
        self.calls += 1
        key = params["Item"]["pk"]["S"]
        if key in self.fail:
            raise self.fail[key]
        self.items[key] = params["Item"]
        return {}

    async def delete_item(self, **params: Any) -> dict[str, Any]:
        """Remove the item."""
        self.items.pop(params["Key"]["pk"]["S"], None)
        return {}


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
    )


def _processor(cfg: Config, target: Any, sink: Any, *, policy: RetryPolicy | None = None, **kw: Any) -> BatchProcessor:
    writer = ConditionalWriter(
        target, table="dst", cfg=cfg.replication, origin_region="us-east-1", target_region="us-west-2"
    )
    return BatchProcessor(
        pipeline=Pipeline.from_config(cfg),
        writer=writer,
        metrics=Metrics(),
        retry_policy=policy or RetryPolicy(base_delay_s=0),
        max_concurrent_writes=8,
        dead_letters=sink,
        **kw,
    )


def test_document_round_trips_binary_attributes_and_names_everything() -> None:
    """A dead letter carries base64 for B/BS (nested too) and rebuilds the exact record."""
    image = {
        "pk": {"S": "k"},
        "b": {"B": b"\x00\xff"},
        "bs": {"BS": [b"a", b"\x01"]},
        "m": {"M": {"inner": {"L": [{"B": b"\x02"}, {"N": "1.50"}]}}},
    }
    record = _record("k", 7, image=image)
    ctx = deadletter.DeadLetterContext(
        source_region="us-east-1",
        source_table="src",
        target_region="us-west-2",
        target_table="dst",
        clock=lambda: 1_767_225_700.0,
    )
    try:
        raise TransformError("stage 0 failed") from ValueError("x")  # noqa: TRY301 - builds a chained error
    except TransformError as exc:
        doc = ctx.document(record, error=exc, attempts=3)
    text = deadletter.dumps(doc)
    parsed = json.loads(text)
    assert parsed["record"]["dynamodb"]["NewImage"]["b"] == {"B": "AP8="}
    assert parsed["error"] == {"type": "TransformError", "message": "stage 0 failed", "cause": "ValueError"}
    assert parsed["shardId"] == "shardId-1"
    assert parsed["sequenceNumber"] == f"{7:021d}"
    assert parsed["streamArn"] == ARN
    assert parsed["attempts"] == 3
    assert parsed["target"] == {"region": "us-west-2", "table": "dst"}
    assert parsed["recordAgeSeconds"] == 93.0
    back = deadletter.record_from_document(parsed)
    assert back.new_image == image
    assert back.sequence_number == record.sequence_number
    assert back.shard_id == "shardId-1"
    # The record's own event is not mutated by encoding.
    assert record.event["dynamodb"]["NewImage"]["b"] == {"B": b"\x00\xff"}


def test_record_from_document_refuses_other_json() -> None:
    """A document that is not a dead letter is refused, not replayed."""
    with pytest.raises(deadletter.DeadLetterError, match="not a replicator dead letter"):
        deadletter.record_from_document({"hello": 1})


async def test_jsonl_group_commits_concurrent_sends(tmp_path) -> None:
    """Concurrent sends share one fsync, and every document is on its own line."""
    sink = deadletter.JsonlDeadLetters(tmp_path / "dl" / "dead.jsonl")
    err = TransformError("boom")
    await asyncio.gather(*(sink.send(_record(f"k{i}", i), error=err, attempts=1) for i in range(5)))
    docs = deadletter.read_jsonl(tmp_path / "dl" / "dead.jsonl")
    assert sorted(d["sequenceNumber"] for d in docs) == [f"{i:021d}" for i in range(5)]
    assert sink.fsyncs == 1
    await sink.send(_record("k9", 9), error=err, attempts=1)
    assert sink.fsyncs == 2


async def test_jsonl_send_raises_when_not_stored(tmp_path) -> None:
    """A dead letter that cannot be written makes send raise (the checkpoint must not pass it)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = deadletter.JsonlDeadLetters(blocker / "dead.jsonl")
    with pytest.raises(deadletter.DeadLetterError, match="cannot append"):
        await sink.send(_record("k", 1), error=TransformError("t"), attempts=1)


def _big_doc(size: int, *, compressible: bool) -> dict[str, Any]:
    rng = random.Random(4)  # noqa: S311 - incompressible test data
    text = (
        "a" * size if compressible else "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))
    )
    record = _record("k", 1, image={"pk": {"S": "k"}, "blob": {"S": text}})
    return deadletter.DeadLetterContext().document(record, error=TransformError("t"), attempts=1)


@pytest.mark.parametrize(
    ("size", "compressible", "messages"), [(1000, True, 1), (400_000, True, 1), (700_000, False, 3)]
)
def test_sqs_bodies_fit_and_reassemble(size: int, compressible: bool, messages: int) -> None:  # noqa: FBT001 - parametrized
    """Large dead letters are compressed, then split; each body fits; the assembler restores the document."""
    doc = _big_doc(size, compressible=compressible)
    bodies = deadletter.encode_sqs_bodies(doc)
    assert len(bodies) == messages
    assert all(len(b.encode()) <= deadletter.SQS_MAX_MESSAGE_BYTES for b in bodies)
    assembler = deadletter.SqsAssembler()
    results = [assembler.add(b) for b in reversed(bodies)]
    assert [r[1] is not None for r in results] == [False] * (messages - 1) + [True]
    assert results[-1][1] == json.loads(deadletter.dumps(doc))
    assert assembler.incomplete == []


class FakeSqs:
    """Records SendMessageBatch requests; answers with scripted failures."""

    def __init__(self, failures: list[list[dict[str, Any]]] | None = None) -> None:
        """Script the Failed lists of successive calls."""
        self.requests: list[list[dict[str, str]]] = []
        self.failures = failures or []

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """Record the request."""
        assert QueueUrl == "https://sqs.us-west-2.amazonaws.com/1/dlq"
        self.requests.append(Entries)
        failed = self.failures.pop(0) if self.failures else []
        return {"Successful": [], "Failed": failed}


async def test_sqs_sends_parts_within_batch_limits_and_resends_server_failures() -> None:
    """Parts go in batches within SQS's size limit; entries failed on SQS's side are sent again."""
    sqs = FakeSqs(failures=[[{"Id": "0", "SenderFault": False, "Code": "InternalError"}]])
    sink = deadletter.SqsDeadLetters(
        sqs, "https://sqs.us-west-2.amazonaws.com/1/dlq", retry_policy=RetryPolicy(base_delay_s=0)
    )
    await sink.send_document(_big_doc(700_000, compressible=False))
    sizes = [sum(len(e["MessageBody"].encode()) for e in req) for req in sqs.requests]
    assert all(s <= deadletter.SQS_MAX_MESSAGE_BYTES for s in sizes)
    assert [e["Id"] for e in sqs.requests[1]] == ["0"]
    assert sum(len(r) for r in sqs.requests) == 4  # 3 parts + 1 resend


async def test_sqs_sender_fault_raises() -> None:
    """SQS refusing an entry as the sender's fault is not retried forever: send raises."""
    sqs = FakeSqs(failures=[[{"Id": "0", "SenderFault": True, "Code": "InvalidMessageContents"}]])
    sink = deadletter.SqsDeadLetters(sqs, "https://sqs.us-west-2.amazonaws.com/1/dlq")
    with pytest.raises(deadletter.DeadLetterError, match="InvalidMessageContents"):
        await sink.send(_record("k", 1), error=TransformError("t"), attempts=1)


def test_destination_parsing() -> None:
    """Queue URLs, file URLs and paths are told apart; the region comes from the queue URL."""
    assert deadletter.is_sqs_url("https://sqs.eu-west-1.amazonaws.com/123/q")
    assert deadletter.is_sqs_url("http://127.0.0.1:5000/123/q")
    assert not deadletter.is_sqs_url("/var/dl.jsonl")
    assert not deadletter.is_sqs_url("file:///var/dl.jsonl")
    assert str(deadletter.jsonl_path("file:///var/dl.jsonl")) == "/var/dl.jsonl"
    assert deadletter.sqs_region("https://sqs.eu-west-1.amazonaws.com/123/q", "x") == "eu-west-1"
    assert deadletter.sqs_region("http://127.0.0.1:5000/123/q", "us-west-2") == "us-west-2"


async def test_poison_record_among_100_is_isolated_and_accounted(tmp_path) -> None:
    """One record the target rejects goes to the destination; the 99 others are written; outcomes add up."""
    target = FakeTarget(fail={"k42": _client_error("ValidationException")})
    sink = deadletter.JsonlDeadLetters(tmp_path / "dl.jsonl")
    processor = _processor(_cfg(), target, sink)
    records = [_record(f"k{i}", i) for i in range(100)]
    result = await processor.process(records)
    assert result.outcomes == {"replicated": 99, "dead_lettered": 1}
    assert result.total == len(records)
    assert sorted(target.items) == sorted(f"k{i}" for i in range(100) if i != 42)
    (doc,) = deadletter.read_jsonl(tmp_path / "dl.jsonl")
    assert doc["record"]["dynamodb"]["Keys"] == {"pk": {"S": "k42"}}
    assert doc["error"]["type"] == "RecordRejectedError"
    samples = {
        s.labels["outcome"]: s.value
        for s in processor.metrics.records.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert sum(samples.values()) == 100


async def test_without_destination_a_poison_record_stops_the_batch() -> None:
    """No destination: PoisonRecordError, so the checkpoint cannot pass the record."""
    processor = _processor(_cfg(), FakeTarget(fail={"k1": _client_error("ValidationException")}), None)
    with pytest.raises(PoisonRecordError, match="sequence 000000000000000000001"):
        await processor.process([_record("k1", 1)])


async def test_exhausted_retries_dead_letter_with_finite_attempts(tmp_path) -> None:
    """With a finite maximum_retry_attempts a still-throttled write is dead-lettered after n+1 attempts."""
    target = FakeTarget(fail={"k1": _client_error("ThrottlingException")})
    sink = deadletter.JsonlDeadLetters(tmp_path / "dl.jsonl")
    processor = _processor(_cfg(), target, sink, policy=RetryPolicy(base_delay_s=0, max_attempts=2))
    result = await processor.process([_record("k1", 1), _record("k2", 2)])
    assert result.outcomes == {"replicated": 1, "dead_lettered": 1}
    assert target.calls == 4
    (doc,) = deadletter.read_jsonl(tmp_path / "dl.jsonl")
    assert doc["attempts"] == 3


async def test_bisect_flag_decides_unexpected_errors(tmp_path) -> None:
    """An unexpected error for one record is isolated with bisect on, and fails the batch with it off."""
    boom = RuntimeError("bug")
    sink = deadletter.JsonlDeadLetters(tmp_path / "dl.jsonl")
    on = _processor(_cfg(), FakeTarget(fail={"k1": boom}), sink, bisect_on_error=True)
    assert (await on.process([_record("k1", 1), _record("k2", 2)])).outcomes == {
        "dead_lettered": 1,
        "replicated": 1,
    }
    off = _processor(_cfg(), FakeTarget(fail={"k1": boom}), sink, bisect_on_error=False)
    with pytest.raises(RuntimeError, match="bug"):
        await off.process([_record("k1", 1), _record("k2", 2)])


async def test_records_past_maximum_age_are_dead_lettered(tmp_path) -> None:
    """Records older than maximum_record_age_s skip the target and land in the destination."""
    sink = deadletter.JsonlDeadLetters(tmp_path / "dl.jsonl")
    target = FakeTarget()
    processor = _processor(_cfg(), target, sink, maximum_record_age_s=60, clock=lambda: 1_767_225_600.0 + 100)
    result = await processor.process([_record("old", 1), _record("new", 90)])
    assert result.outcomes == {"dead_lettered": 1, "replicated": 1}
    assert list(target.items) == ["new"]


async def test_redrive_jsonl_replays_and_rewrites_failures(tmp_path) -> None:
    """Redrive writes fixed dead letters, puts still-failing ones in a new file, leaves the source alone."""
    path = tmp_path / "dl.jsonl"
    sink = deadletter.JsonlDeadLetters(path)
    for i in range(3):
        await sink.send(_record(f"k{i}", i + 1), error=TransformError("t"), attempts=1)
    before = path.read_bytes()
    target = FakeTarget(fail={"k2": _client_error("ValidationException")})
    report = await redrive(_cfg(), source=str(path), target=TargetClient(target), clock=lambda: 0.0)
    assert report.read == 3
    assert report.outcomes == {"replicated": 2}
    assert report.failed_again == 1
    assert sorted(target.items) == ["k0", "k1"]
    assert path.read_bytes() == before
    assert report.failed_path is not None
    (again,) = deadletter.read_jsonl(report.failed_path)
    assert again["record"]["dynamodb"]["Keys"] == {"pk": {"S": "k2"}}
    assert again["error"]["type"] == "RecordRejectedError"
    assert again["previousErrors"][0]["type"] == "TransformError"
    assert not report.ok


async def test_redrive_dry_run_writes_nothing(tmp_path) -> None:
    """A dry run reports what would happen and touches no target."""
    path = tmp_path / "dl.jsonl"
    await deadletter.JsonlDeadLetters(path).send(_record("k", 1), error=TransformError("t"), attempts=1)
    report = await redrive(_cfg(), source=str(path), dry_run=True)
    assert report.outcomes == {"would_write": 1}
    assert report.failed_path is None
    assert [p.name for p in tmp_path.iterdir()] == ["dl.jsonl"]
    assert path.stat().st_size > 0
