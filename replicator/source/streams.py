"""DynamoDB Streams: find the stream, list every shard, get iterators and records.

A thin layer over the aiobotocore ``dynamodbstreams`` client that turns the API's errors into ours
(``errors.py``) and paces DescribeStream within its limit of 10 calls/s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from replicator.core.errors import (
    ExpiredIteratorError,
    ShardGoneError,
    StreamConfigError,
    TransientError,
    TrimmedDataError,
    error_code,
    is_transient,
)
from replicator.source.shards import Shard

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

    from replicator.aws.lean import LeanStreams

IteratorType = Literal["TRIM_HORIZON", "LATEST", "AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER"]
DESCRIBE_STREAM_CALLS_PER_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """The source stream."""

    arn: str
    view_type: str
    status: str


class StreamsAPI:
    """The calls the shard reader and the coordinator make to DynamoDB Streams."""

    def __init__(self, streams_client: DynamoDBStreamsClient | LeanStreams, dynamodb_client: DynamoDBClient) -> None:
        """Bind to clients owned by the service; no I/O."""
        self._streams = streams_client
        self._ddb = dynamodb_client
        self._describe_lock = asyncio.Lock()
        self._last_describe = 0.0

    async def resolve(self, *, table: str | None, stream_arn: str | None) -> StreamInfo:
        """Find the stream (the table's latest unless an ARN is given) and check it is usable."""
        if stream_arn is None:
            if table is None:
                raise StreamConfigError("neither source.table nor source.stream_arn is set")
            desc = (await self._ddb.describe_table(TableName=table))["Table"]
            stream_arn = desc.get("LatestStreamArn")
            spec: Mapping[str, object] = desc.get("StreamSpecification") or {}
            if not stream_arn or not spec.get("StreamEnabled", False):
                raise StreamConfigError(
                    f"source table {table} has no enabled stream: enable one with view type NEW_AND_OLD_IMAGES"
                )
        page = await self._describe(stream_arn, None, limit=1)
        return StreamInfo(arn=stream_arn, view_type=page["StreamViewType"], status=page["StreamStatus"])

    async def _describe(self, stream_arn: str, start: str | None, *, limit: int = 100) -> Mapping[str, Any]:
        # DescribeStream allows 10 calls/s per account; pace ours so a stream with hundreds of shards
        # is listed at full speed without being throttled.
        async with self._describe_lock:
            wait = self._last_describe + 1 / DESCRIBE_STREAM_CALLS_PER_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_describe = time.monotonic()
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "Limit": limit}
        if start is not None:
            kwargs["ExclusiveStartShardId"] = start
        try:
            result: Mapping[str, Any] = (await self._streams.describe_stream(**kwargs))["StreamDescription"]
        except Exception as exc:
            raise _translate(exc, "DescribeStream") from exc
        return result

    async def list_shards(self, stream_arn: str) -> list[Shard]:
        """Every shard of the stream, open and closed (DescribeStream, 100 a page, all pages)."""
        shards: list[Shard] = []
        start: str | None = None
        while True:
            page = await self._describe(stream_arn, start)
            shards.extend(Shard.from_api(s) for s in page.get("Shards", []))
            start = page.get("LastEvaluatedShardId")
            if not start:
                return shards

    async def get_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: IteratorType, sequence_number: str | None = None
    ) -> str:
        """A shard iterator (valid 15 minutes)."""
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id, "ShardIteratorType": iterator_type}
        if sequence_number is not None:
            kwargs["SequenceNumber"] = sequence_number
        try:
            return str((await self._streams.get_shard_iterator(**kwargs))["ShardIterator"])
        except Exception as exc:
            raise _translate(exc, "GetShardIterator") from exc

    async def get_records(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Records after the iterator and the next iterator (None: the shard is closed and read to its end)."""
        try:
            resp = await self._streams.get_records(ShardIterator=iterator, Limit=limit)
        except Exception as exc:
            raise _translate(exc, "GetRecords") from exc
        # botocore's records (or the lean path's, the same JSON) as the plain dicts the pipeline takes.
        return cast("list[dict[str, Any]]", resp.get("Records", [])), resp.get("NextShardIterator")


def _translate(exc: Exception, operation: str) -> Exception:
    code = error_code(exc)
    if code == "ExpiredIteratorException":
        return ExpiredIteratorError(f"{operation}: shard iterator expired")
    if code == "TrimmedDataAccessException":
        return TrimmedDataError(
            f"{operation}: records past the checkpoint were trimmed from the stream (24 h retention)"
        )
    if code == "ResourceNotFoundException":
        return ShardGoneError(f"{operation}: {exc}")
    if is_transient(exc):
        err = TransientError(f"{operation}: {code or type(exc).__name__}")
        err.__cause__ = exc
        return err
    return exc
