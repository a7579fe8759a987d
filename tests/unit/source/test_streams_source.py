"""source.streams against the scripted stream: discovery, ChangeRecords as Lambda events, the error contract."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.exceptions import ClientError
from scripted_stream import ScriptedStream

from replicator.core.errors import ExpiredIteratorError, ShardGoneError, TransientError, TrimmedDataError
from replicator.core.records import to_lambda_event
from replicator.source.api import ChangeSource, ShardIterator
from replicator.source.streams import StreamsSource


async def test_paginated_discovery_lists_every_shard() -> None:
    """DescribeStream is followed past its 100-shard pages until every shard is listed."""
    stream = ScriptedStream()
    parent = None
    for i in range(250):
        stream.add_shard(f"shardId-{i:05d}", parent)
        stream.close(f"shardId-{i:05d}")
        parent = f"shardId-{i:05d}"
    api = StreamsSource(stream, stream)
    shards = await api.list_shards(stream.arn)
    assert [s.shard_id for s in shards] == [f"shardId-{i:05d}" for i in range(250)]
    assert stream.describe_calls == 3
    assert all(s.closed for s in shards)


async def test_records_come_as_change_records_with_the_lambda_event() -> None:
    """Each record is built once by the source: its event is exactly the Lambda shape of the raw record."""
    stream = ScriptedStream()
    stream.add_shard("a")
    stream.put("a", "k1", 1)
    stream.put("a", "k2", 2, event_name="REMOVE")
    created = dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC)
    stream.shards["a"].records[0]["dynamodb"]["ApproximateCreationDateTime"] = created
    stream.close("a")
    source: ChangeSource = StreamsSource(stream, stream)
    iterator = await source.get_iterator(stream.arn, "a", "TRIM_HORIZON")
    records, after = await source.get_records(iterator, 1)
    raw = stream.shards["a"].records[0]
    assert records[0].event == to_lambda_event(raw, event_source_arn=stream.arn)
    assert list(records[0].event) == [*[k for k in raw if k != "dynamodb"], "dynamodb", "eventSourceARN"]
    assert records[0].event["dynamodb"]["ApproximateCreationDateTime"] == 1700000000.123456
    assert records[0].approximate_creation_time_us == 1700000000123456
    assert records[0].shard_id == "a"
    assert records[0].keys == {"pk": {"S": "k1"}}
    assert after is not None
    assert after.position == raw["dynamodb"]["SequenceNumber"]
    records, after = await source.get_records(after, 10)
    assert [r.event_name for r in records] == ["REMOVE"]
    assert after is None  # a closed shard read to its end


async def test_the_same_iterator_reads_the_same_page_again() -> None:
    """Reading does not use an iterator up: a retried call returns the same records."""
    stream = ScriptedStream()
    stream.add_shard("a")
    stream.put("a", "k", 1)
    source = StreamsSource(stream, stream)
    iterator = await source.get_iterator(stream.arn, "a", "TRIM_HORIZON")
    first = await source.get_records(iterator, 10)
    again = await source.get_records(iterator, 10)
    assert [r.sequence_number for r in first.records] == [r.sequence_number for r in again.records]
    assert first.next_iterator == again.next_iterator


@pytest.mark.parametrize(
    ("when", "created", "micros"),
    [
        ("lean path, whole seconds", 1700000000, 1700000000000000),
        ("lean path, float", 1700000000.5, 1700000000500000),
        ("botocore", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC), 1700000000000000),
    ],
)
async def test_creation_time_is_whole_microseconds(when: str, created: object, micros: int) -> None:
    """Epoch seconds (the lean GetRecords path) and datetimes (botocore) give the same integer µs."""
    stream = ScriptedStream()
    stream.add_shard("a")
    stream.put("a", "k", 1)
    stream.shards["a"].records[0]["dynamodb"]["ApproximateCreationDateTime"] = created
    source = StreamsSource(stream, stream)
    records, _ = await source.get_records(await source.get_iterator(stream.arn, "a", "TRIM_HORIZON"), 10)
    assert records[0].approximate_creation_time_us == micros, when
    assert records[0].event["dynamodb"]["ApproximateCreationDateTime"] == micros / 1_000_000


class _Failing:
    """A dynamodbstreams client whose every call fails with one error code."""

    def __init__(self, code: str, status: int = 400) -> None:
        self.error = ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Call"
        )

    async def get_records(self, **_: Any) -> dict[str, Any]:
        raise self.error

    async def get_shard_iterator(self, **_: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ExpiredIteratorException", 400, ExpiredIteratorError),
        ("TrimmedDataAccessException", 400, TrimmedDataError),
        ("ResourceNotFoundException", 400, ShardGoneError),
        ("LimitExceededException", 400, TransientError),
        ("InternalServerError", 500, TransientError),
    ],
)
async def test_errors_keep_the_contract(code: str, status: int, error: type[Exception]) -> None:
    """The service's error codes become the contract's errors, for reads and iterators alike."""
    source = StreamsSource(_Failing(code, status), None)
    with pytest.raises(error):
        await source.get_records(ShardIterator("arn", "a", "it"), 10)
    with pytest.raises(error):
        await source.get_iterator("arn", "a", "AFTER_SEQUENCE_NUMBER", "1")


async def test_other_errors_are_raised_as_they_came() -> None:
    """An error the contract does not name (permissions, validation) is not retried: raised as is."""
    failing = _Failing("AccessDeniedException")
    with pytest.raises(ClientError) as info:
        await StreamsSource(failing, None).get_records(ShardIterator("arn", "a", "it"), 10)
    assert info.value is failing.error
