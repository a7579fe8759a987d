"""Kinesis source parts without a server: payload conversion, merge lineage, shard end, pacing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from replicator.checkpoint import Checkpoint
from replicator.core.records import from_stream_record
from replicator.pipeline.version import change_version
from replicator.source.kinesis import KinesisAPI, creation_time_s, to_stream_record
from replicator.source.shards import Shard, ShardTree

PAYLOAD = {
    "awsRegion": "us-east-1",
    "eventID": "0a1b",
    "eventName": "MODIFY",
    "userIdentity": None,
    "recordFormat": "application/json",
    "tableName": "Orders",
    "dynamodb": {
        "ApproximateCreationDateTime": 1700000000123,
        "Keys": {"pk": {"S": "a"}},
        "NewImage": {
            "pk": {"S": "a"},
            "b": {"B": base64.b64encode(b"\x00\xff").decode()},
            "n": {"N": "1.50"},
        },
        "OldImage": {"pk": {"S": "a"}, "n": {"N": "1"}},
        "SizeBytes": 42,
    },
    "eventSource": "aws:dynamodb",
}
SEQ = "49650000000000000000000000000000000000000000000000000001"  # 56 digits


def test_payload_becomes_a_change_record_with_the_kinesis_sequence_number() -> None:
    """The documented payload converts to a record with ms time, bytes, and a 56-digit version tie-breaker."""
    raw = to_stream_record(json.dumps(PAYLOAD).encode(), SEQ)
    record = from_stream_record(raw, shard_id="shardId-000000000001", stream_arn="arn:aws:kinesis:x")
    assert record.event_name == "MODIFY"
    assert record.sequence_number == SEQ
    assert record.approximate_creation_time_s == pytest.approx(1700000000.123)
    assert record.new_image is not None
    assert record.new_image["b"] == {"B": b"\x00\xff"}
    assert record.new_image["n"] == {"N": "1.50"}
    assert record.old_image == {"pk": {"S": "a"}, "n": {"N": "1"}}
    version, _ = change_version(
        record, origin="us-east-1", version_attribute="_v", timestamp_attribute=None, timestamp_unit="ms"
    )
    assert version == f"{1700000000123000:017d}#us-east-1#{SEQ}"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(1700000000123, 1700000000.123), (1700000000123456, 1700000000.123456), (1700000000, 1.7e9)],
)
def test_creation_time_in_ms_or_us_is_told_apart_by_magnitude(value: int, seconds: float) -> None:
    """Milliseconds (default precision), microseconds (MICROSECOND) and seconds all become epoch seconds."""
    assert creation_time_s(value) == pytest.approx(seconds, abs=1e-6)


def test_a_ttl_delete_keeps_its_service_identity() -> None:
    """A REMOVE by DynamoDB's TTL (userIdentity Service) is recognised as a TTL delete."""
    payload: dict[str, Any] = {
        **PAYLOAD,
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
    }
    payload["dynamodb"] = {k: v for k, v in PAYLOAD["dynamodb"].items() if k != "NewImage"}
    record = from_stream_record(to_stream_record(json.dumps(payload), SEQ), shard_id="s", stream_arn="a")
    assert record.is_ttl_delete
    assert record.new_image is None


def test_not_a_dynamodb_change_is_refused_by_name() -> None:
    """Foreign data in the stream raises ValueError naming the Kinesis sequence number."""
    with pytest.raises(ValueError, match=SEQ):
        to_stream_record(b'{"hello": 1}', SEQ)


def test_a_merged_shard_waits_for_both_parents() -> None:
    """A child of a merge starts only when its parent AND its adjacent parent are read to the end."""
    tree = ShardTree()
    tree.update(
        [
            Shard.from_api(
                {
                    "ShardId": "p1",
                    "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "5"},
                }
            ),
            Shard.from_api(
                {
                    "ShardId": "p2",
                    "SequenceNumberRange": {"StartingSequenceNumber": "2", "EndingSequenceNumber": "6"},
                }
            ),
            Shard.from_api(
                {
                    "ShardId": "c",
                    "ParentShardId": "p1",
                    "AdjacentParentShardId": "p2",
                    "SequenceNumberRange": {"StartingSequenceNumber": "7"},
                }
            ),
        ]
    )
    one_done = {"p1": Checkpoint("p1", "5", shard_end=True, updated_at_s=0)}
    assert [s.shard_id for s in tree.ready(one_done, [])] == ["p2"]
    both_done = {**one_done, "p2": Checkpoint("p2", "6", shard_end=True, updated_at_s=0)}
    assert [s.shard_id for s in tree.ready(both_done, [])] == ["c"]


class _FakeKinesis:
    """Returns scripted GetRecords pages; records the time of each call."""

    def __init__(self, pages: list[dict[str, Any]], clock: list[float]) -> None:
        self.pages = pages
        self.clock = clock
        self.calls: list[float] = []

    async def get_shard_iterator(self, **_: Any) -> dict[str, str]:
        return {"ShardIterator": "it-0"}

    async def get_records(self, **_: Any) -> dict[str, Any]:
        self.calls.append(self.clock[0])
        return self.pages.pop(0)

    async def list_shards(self, **_: Any) -> dict[str, Any]:
        return {
            "Shards": [
                {
                    "ShardId": "s",
                    "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "2"},
                }
            ]
        }


async def test_get_records_is_paced_per_shard_and_a_read_closed_shard_ends() -> None:
    """Calls on one shard are >= 0.2 s apart (5/s), 2 MB costs a second, reading past the end gives None."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    data = json.dumps(PAYLOAD).encode()
    big = {
        "Records": [{"SequenceNumber": "1", "Data": data + b" " * (2 * 1024 * 1024)}],
        "NextShardIterator": "it-1",
    }
    small = {"Records": [{"SequenceNumber": "2", "Data": data}], "NextShardIterator": "it-2"}
    empty: dict[str, Any] = {"Records": [], "NextShardIterator": "it-3"}  # moto never says the shard ended
    fake = _FakeKinesis([big, small, empty], now)
    api = KinesisAPI(fake, None, clock=lambda: now[0], sleep=sleep)
    await api.list_shards("arn")
    iterator: str | None = await api.get_iterator("arn", "s", "TRIM_HORIZON")
    ends = []
    while iterator is not None:
        _, iterator = await api.get_records(iterator, 1000)
        ends.append(iterator)
    assert ends == ["it-1", "it-2", None]
    assert fake.calls[1] - fake.calls[0] >= 1.0  # 2 MB at 2 MB/s
    assert fake.calls[2] - fake.calls[1] >= 0.2 - 1e-9  # 5 calls/s
