"""Kinesis source parts without a server: payload conversion, shard end, pacing, iterators."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from replicator.core.errors import ExpiredIteratorError, ShardGoneError, TransientError
from replicator.core.records import ChangeRecord
from replicator.observe.metrics import Metrics
from replicator.pipeline import version as versions
from replicator.pipeline.version import change_version
from replicator.source.api import ChangeSource, ShardIterator
from replicator.source.kinesis import KinesisSource, creation_time_s, creation_time_us, to_change_record

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
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


def _record(payload: object, shard_id: str = "shardId-000000000001") -> ChangeRecord:
    return to_change_record(json.dumps(payload).encode(), SEQ, shard_id=shard_id, stream_arn=ARN)


def test_payload_becomes_a_change_record_with_the_kinesis_sequence_number() -> None:
    """The documented payload converts to a record with ms time, bytes, and a 56-digit version tie-breaker."""
    record = _record(PAYLOAD)
    assert record.event_name == "MODIFY"
    assert record.sequence_number == SEQ
    assert record.shard_id == "shardId-000000000001"
    assert record.approximate_creation_time_us == 1700000000123000
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


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (1700000000123, 1700000000123000),
        (1700000000123456, 1700000000123456),
        ("1700000000123456", 1700000000123456),
        (1700000000, 1700000000000000),
    ],
)
def test_creation_time_in_us_is_exact(value: object, micros: int) -> None:
    """Millisecond and microsecond values become integer µs exactly, without passing through a float."""
    assert creation_time_us(value) == micros


def test_microsecond_precision_keeps_all_six_digits_in_the_version() -> None:
    """A MICROSECOND-precision change versions to the microsecond; its event still says epoch seconds."""
    payload: dict[str, Any] = {
        **PAYLOAD,
        "dynamodb": {**PAYLOAD["dynamodb"], "ApproximateCreationDateTime": 1700000000123457},
    }
    record = _record(payload)
    assert record.approximate_creation_time_us == 1700000000123457
    assert record.event["dynamodb"]["ApproximateCreationDateTime"] == 1700000000.123457
    version, _ = change_version(
        record, origin="us-east-1", version_attribute="_v", timestamp_attribute=None, timestamp_unit="ms"
    )
    assert version.startswith("01700000000123457#")


def test_event_is_the_lambda_shape_key_for_key() -> None:
    """The event filters match and dead letters carry: the Lambda shape, in the order it always had."""
    payload: dict[str, Any] = {**PAYLOAD, "userIdentity": {"type": "Service", "principalId": "x"}}
    event = _record(payload).event
    assert event == {
        "eventID": "0a1b",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "userIdentity": {"type": "Service", "principalId": "x"},
        "tableName": "Orders",
        "dynamodb": {
            "Keys": {"pk": {"S": "a"}},
            "SequenceNumber": SEQ,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "ApproximateCreationDateTime": 1700000000.123,
            "NewImage": {"pk": {"S": "a"}, "b": {"B": b"\x00\xff"}, "n": {"N": "1.50"}},
            "OldImage": {"pk": {"S": "a"}, "n": {"N": "1"}},
            "SizeBytes": 42,
        },
        "eventSourceARN": ARN,
    }
    assert list(event) == [
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "userIdentity",
        "tableName",
        "dynamodb",
        "eventSourceARN",
    ]
    assert list(event["dynamodb"]) == [
        "Keys",
        "SequenceNumber",
        "StreamViewType",
        "ApproximateCreationDateTime",
        "NewImage",
        "OldImage",
        "SizeBytes",
    ]


def test_a_ttl_delete_keeps_its_service_identity() -> None:
    """A REMOVE by DynamoDB's TTL (userIdentity Service) is recognised as a TTL delete."""
    payload: dict[str, Any] = {
        **PAYLOAD,
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
    }
    payload["dynamodb"] = {k: v for k, v in PAYLOAD["dynamodb"].items() if k != "NewImage"}
    record = _record(payload)
    assert record.is_ttl_delete
    assert record.new_image is None


def test_not_a_dynamodb_change_is_refused_by_name() -> None:
    """Foreign data in the stream raises ValueError naming the Kinesis sequence number."""
    with pytest.raises(ValueError, match=SEQ):
        to_change_record(b'{"hello": 1}', SEQ, shard_id="s", stream_arn=ARN)


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
    api = KinesisSource(fake, None, clock=lambda: now[0], sleep=sleep)
    await api.list_shards("arn")
    iterator: ShardIterator | None = await api.get_iterator("arn", "s", "TRIM_HORIZON")
    ends = []
    while iterator is not None:
        _, iterator = await api.get_records(iterator, 1000)
        ends.append(None if iterator is None else iterator.token)
    assert ends == ["it-1", "it-2", None]
    assert fake.calls[1] - fake.calls[0] >= 1.0  # 2 MB at 2 MB/s
    assert fake.calls[2] - fake.calls[1] >= 0.2 - 1e-9  # 5 calls/s


class _FlakyKinesis(_FakeKinesis):
    """Fails the first GetRecords with ``code``, then answers from the pages."""

    def __init__(self, pages: list[dict[str, Any]], clock: list[float], code: str) -> None:
        super().__init__(pages, clock)
        self.code = code
        self.tokens: list[str] = []

    async def get_records(self, **kwargs: Any) -> dict[str, Any]:
        self.tokens.append(kwargs["ShardIterator"])
        if self.code:
            code, self.code = self.code, ""
            raise ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {}}, "GetRecords")
        return await super().get_records(**kwargs)


async def _no_sleep(_: float) -> None:
    return None


async def test_a_failed_read_is_retried_with_the_same_iterator() -> None:
    """The iterator is not used up by a failure: the same object reads the page after a throttle."""
    now = [0.0]
    other = {**PAYLOAD, "tableName": "Other"}
    page = {
        "Records": [
            {"SequenceNumber": "1", "Data": json.dumps(PAYLOAD).encode()},
            {"SequenceNumber": "2", "Data": json.dumps(other).encode()},
        ],
        "NextShardIterator": "it-1",
    }
    fake = _FlakyKinesis([page], now, "KMSThrottlingException")
    source: ChangeSource = KinesisSource(fake, None, table="Orders", clock=lambda: now[0], sleep=_no_sleep)
    iterator = await source.get_iterator(ARN, "s", "AFTER_SEQUENCE_NUMBER", "0")
    with pytest.raises(TransientError, match="KMSThrottlingException"):
        await source.get_records(iterator, 100)
    records, after = await source.get_records(iterator, 100)
    assert fake.tokens == ["it-0", "it-0"]
    assert [(r.sequence_number, r.shard_id) for r in records] == [("1", "s")]  # the other table's is skipped
    assert after == ShardIterator(ARN, "s", "it-1", position="2")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("ExpiredIteratorException", ExpiredIteratorError),
        ("ResourceNotFoundException", ShardGoneError),
        ("ProvisionedThroughputExceededException", TransientError),
    ],
)
async def test_read_errors_keep_the_contract(code: str, error: type[Exception]) -> None:
    """Kinesis' error codes become the contract's errors."""
    fake = _FlakyKinesis([], [0.0], code)
    source = KinesisSource(fake, None, clock=lambda: 0.0, sleep=_no_sleep)
    with pytest.raises(error):
        await source.get_records(ShardIterator(ARN, "s", "it-0"), 100)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json at all", "Data is not JSON"),
        (b'{"hello": 1}', "no dynamodb object"),
        (json.dumps({**PAYLOAD, "eventSource": "my:app"}).encode(), "eventSource is not aws:dynamodb"),
    ],
)
async def test_a_record_that_is_not_a_change_is_skipped_counted_and_named(
    data: bytes, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A foreign record on a shared stream is skipped (metric, log with its sequence number), not a shard stop."""
    now = [0.0]
    good = json.dumps(PAYLOAD).encode()
    page = {
        "Records": [{"SequenceNumber": "1", "Data": data}, {"SequenceNumber": "2", "Data": good}],
        "NextShardIterator": "it-1",
    }
    metrics = Metrics()
    api = KinesisSource(_FakeKinesis([page], now), None, clock=lambda: now[0], sleep=_no_sleep, metrics=metrics)
    iterator = await api.get_iterator("arn", "s", "TRIM_HORIZON")
    records, _ = await api.get_records(iterator, 1000)
    assert [r.sequence_number for r in records] == ["2"]
    skipped = metrics.registry.get_sample_value(
        "replicator_source_records_skipped_total", {"reason": "not_a_dynamodb_change"}
    )
    assert skipped == 1
    out = capsys.readouterr().out
    assert "kinesis_record_skipped" in out
    assert reason in out
    assert "hello" not in out
    assert "not json at all" not in out


async def test_another_tables_change_is_skipped_and_counted() -> None:
    """A change of another table on a shared stream is skipped and counted with reason other_table."""
    now = [0.0]
    other = json.dumps({**PAYLOAD, "tableName": "Invoices"}).encode()
    page = {"Records": [{"SequenceNumber": "1", "Data": other}], "NextShardIterator": "it-1"}
    metrics = Metrics()
    api = KinesisSource(
        _FakeKinesis([page], now), None, table="Orders", clock=lambda: now[0], sleep=_no_sleep, metrics=metrics
    )
    records, _ = await api.get_records(await api.get_iterator("arn", "s", "TRIM_HORIZON"), 1000)
    assert records == []
    assert metrics.registry.get_sample_value("replicator_source_records_skipped_total", {"reason": "other_table"}) == 1


async def test_pacing_state_is_kept_only_for_listed_shards_and_dropped_at_shard_end() -> None:
    """_next_call does not grow with shards that ended or left the listing."""
    now = [0.0]
    data = json.dumps(PAYLOAD).encode()
    pages = [
        {"Records": [{"SequenceNumber": "1", "Data": data}], "NextShardIterator": "it-1"},
        {"Records": [{"SequenceNumber": "2", "Data": data}]},  # closed shard read to its end
    ]
    api = KinesisSource(_FakeKinesis(pages, now), None, clock=lambda: now[0], sleep=_no_sleep)
    await api.list_shards("arn")
    iterator: ShardIterator | None = await api.get_iterator("arn", "s", "TRIM_HORIZON")
    assert iterator is not None
    _, iterator = await api.get_records(iterator, 1000)
    api._next_call["gone"] = 5.0  # a shard read earlier, no longer listed
    assert iterator is not None
    _, iterator = await api.get_records(iterator, 1000)
    assert iterator is None
    assert "s" not in api._next_call
    await api.list_shards("arn")
    assert api._next_call == {}


@pytest.mark.parametrize("digits", [57, 80, 129])
def test_sequence_numbers_up_to_129_digits_make_versions_that_keep_numeric_order(digits: int) -> None:
    """A longer Kinesis sequence number encodes, sorts above every 56-digit one and in numeric order."""
    long_seq = "4" + "0" * (digits - 2) + "1"
    longer = str(int(long_seq) + 1)
    stored = versions.encode(1, "us-east-1", "9" * 56)  # the largest tie-breaker encodable before
    a, b = versions.encode(1, "us-east-1", long_seq), versions.encode(1, "us-east-1", longer)
    assert stored < a < b
    assert versions.encode(2, "us-east-1", "1") > b  # the timestamp still decides first
    assert versions.timestamp_of(a) == 1


def test_short_sequence_numbers_keep_their_stored_encoding() -> None:
    """Versions of sequence numbers of 56 digits or fewer are encoded exactly as before (stored ones compare)."""
    assert versions.encode(1, "r", SEQ) == f"{1:017d}#r#{SEQ}"
    assert versions.encode(1, "r", "123") == f"{1:017d}#r#{'123':0>56}"
    with pytest.raises(ValueError, match="129 digits"):
        versions.encode(1, "r", "1" * 130)
