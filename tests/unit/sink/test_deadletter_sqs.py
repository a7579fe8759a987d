"""SQS dead letters: bodies valid for SQS, ids stable across retries, duplicate parts, FIFO queues."""

from __future__ import annotations

import json
import random
from typing import Any

from replicator.core.errors import TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.core.retry import RetryPolicy
from replicator.sink import deadletter

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"
# What SQS accepts in a message body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
SQS_ALLOWED = ((0x9, 0x9), (0xA, 0xA), (0xD, 0xD), (0x20, 0xD7FF), (0xE000, 0xFFFD), (0x10000, 0x10FFFF))
AWKWARD = "a\ufffe b\uffff c\ud800 d\udfff e\x00\x1f\x7f \u2028 \U0001f600 é"


def _record(key: str, text: str = "v", seq: int = 1) -> ChangeRecord:
    event = {
        "eventID": f"e{seq}",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600.0 + seq,
            "Keys": {"pk": {"S": key}},
            "NewImage": {"pk": {"S": key}, "t": {"S": text}},
            "SequenceNumber": f"{seq:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    return from_lambda_event(event, shard_id="shardId-1")


def _doc(record: ChangeRecord, *, message: str = "t", now: float = 1_767_225_700.0) -> dict[str, Any]:
    context = deadletter.DeadLetterContext(source_table="src", clock=lambda: now)
    return context.document(record, error=TransformError(message), attempts=1)


def _sqs_valid(body: str) -> bool:
    return all(any(lo <= ord(c) <= hi for lo, hi in SQS_ALLOWED) for c in body)


def _incompressible(size: int) -> str:
    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


def test_bodies_hold_only_characters_sqs_accepts_and_round_trip() -> None:
    """U+FFFE, U+FFFF and lone surrogates are escaped: every body is valid for SQS and decodes to the same text."""
    for text in (AWKWARD, AWKWARD + _incompressible(600_000)):
        doc = _doc(_record("k\uffff", text))
        bodies = deadletter.encode_sqs_bodies(doc)
        assert all(_sqs_valid(b) for b in bodies)
        assembler = deadletter.SqsAssembler()
        (*_, (_, back)) = [assembler.add(b) for b in bodies]
        assert back is not None
        assert back["record"]["dynamodb"]["NewImage"]["t"]["S"] == text
        assert deadletter.record_from_document(back).keys == {"pk": {"S": "k\uffff"}}
    line = deadletter.dumps(_doc(_record("k", AWKWARD)))
    assert "é" in line  # other non-ASCII text stays readable
    assert json.loads(line)["record"]["dynamodb"]["NewImage"]["t"]["S"] == AWKWARD


def test_id_is_the_same_for_the_same_record_and_differs_between_records() -> None:
    """A record dead-lettered again (another time, another error) keeps its id; another record gets another."""
    first = _doc(_record("k"), message="first", now=1_767_225_700.0)
    again = _doc(_record("k"), message="again", now=1_767_229_999.0)
    assert first["id"] == again["id"]
    assert _doc(_record("k", seq=2))["id"] != first["id"]
    assert _doc(_record("other"))["id"] != first["id"]


def test_parts_sent_twice_make_one_letter() -> None:
    """Two sendings of one multi-part letter (a retry after a crash) interleaved: one document, never mixed."""
    record = _record("k", _incompressible(600_000))
    one = deadletter.encode_sqs_bodies(_doc(record, message="first"))
    two = deadletter.encode_sqs_bodies(_doc(record, message="second try"))
    assert len(one) == len(two) == 3
    assembler = deadletter.SqsAssembler()
    results = [assembler.add(b) for b in (one[0], two[1], one[1], two[0], two[2])]
    done = [doc for _, doc in results if doc is not None]
    assert len(done) == 1
    assert done[0]["error"]["message"] == "second try"
    assert assembler.incomplete == []
    # A late duplicate part of a letter already replayed: kept until the caller forgets the id.
    doc_id, doc = assembler.add(one[2])
    assert (doc_id, doc) == (done[0]["id"], None)
    assembler.forget(doc_id)
    assert assembler.incomplete == []


class FakeSqs:
    """Records SendMessageBatch requests."""

    def __init__(self) -> None:
        """Start empty."""
        self.entries: list[dict[str, str]] = []

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """Record the entries; all succeed."""
        assert QueueUrl
        self.entries.extend(Entries)
        return {"Successful": [], "Failed": []}


async def test_fifo_queue_gets_a_group_per_key_and_a_deduplication_id() -> None:
    """On a .fifo queue every message has a group (one per key) and a deduplication id; not on a standard queue."""
    fifo = FakeSqs()
    sink = deadletter.SqsDeadLetters(
        fifo, "https://sqs.us-west-2.amazonaws.com/1/dlq.fifo", retry_policy=RetryPolicy(base_delay_s=0)
    )
    await sink.send_document(_doc(_record("a", _incompressible(600_000))))
    await sink.send_document(_doc(_record("a", seq=2)))
    await sink.send_document(_doc(_record("b")))
    groups = [e["MessageGroupId"] for e in fifo.entries]
    assert len(groups) == 5
    assert len(set(groups[:4])) == 1
    assert groups[4] != groups[0]
    assert all(len(g) <= 128 for g in groups)
    dedup = [e["MessageDeduplicationId"] for e in fifo.entries]
    assert len(set(dedup)) == 5
    assert all(len(d) <= 128 for d in dedup)
    standard = FakeSqs()
    await deadletter.SqsDeadLetters(standard, "https://sqs.us-west-2.amazonaws.com/1/dlq").send_document(
        _doc(_record("a"))
    )
    assert set(standard.entries[0]) == {"Id", "MessageBody"}
