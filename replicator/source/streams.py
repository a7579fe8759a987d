"""DynamoDB Streams as the change source (``source.kind: dynamodb``, the default).

A thin layer over the aiobotocore ``dynamodbstreams`` client that keeps the ``ChangeSource`` contract
(``api.py``): errors translated, records converted once into ChangeRecords, DescribeStream paced within
its limit of 10 calls/s.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from replicator.core.errors import StreamConfigError
from replicator.core.records import from_stream_record
from replicator.source.api import IteratorType, RecordPage, ShardIterator, StreamInfo, translate_error
from replicator.source.shards import Shard

if TYPE_CHECKING:
    from collections.abc import Mapping

    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

    from replicator.aws.lean import LeanStreams

DESCRIBE_STREAM_CALLS_PER_S = 10.0


class StreamsSource:
    """A ``ChangeSource`` reading a DynamoDB stream."""

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

    async def table_streams(self, table: str) -> list[str]:
        """The ARNs of the table's streams DynamoDB still lists (a disabled one stays readable 24 h), oldest first."""
        labelled: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            try:
                page = await self._streams.list_streams(**kwargs)
            except Exception as exc:
                raise translate_error(exc, "ListStreams") from exc
            labelled.extend((s["StreamLabel"], s["StreamArn"]) for s in page.get("Streams", ()))
            last = page.get("LastEvaluatedStreamArn")
            if not last:
                return [arn for _, arn in sorted(labelled)]
            kwargs["ExclusiveStartStreamArn"] = last

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
            raise translate_error(exc, "DescribeStream") from exc
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
    ) -> ShardIterator:
        """Return a shard iterator (valid 15 minutes)."""
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id, "ShardIteratorType": iterator_type}
        if sequence_number is not None:
            kwargs["SequenceNumber"] = sequence_number
        try:
            token = str((await self._streams.get_shard_iterator(**kwargs))["ShardIterator"])
        except Exception as exc:
            raise translate_error(exc, "GetShardIterator") from exc
        position = sequence_number if iterator_type == "AFTER_SEQUENCE_NUMBER" else None
        return ShardIterator(stream_arn, shard_id, token, position)

    async def get_records(self, iterator: ShardIterator, limit: int) -> RecordPage:
        """Return the records after the iterator and the next iterator (None: the shard is closed and read)."""
        try:
            resp = await self._streams.get_records(ShardIterator=iterator.token, Limit=limit)
        except Exception as exc:
            raise translate_error(exc, "GetRecords") from exc
        shard_id, arn = iterator.shard_id, iterator.stream_arn
        records = [from_stream_record(raw, shard_id=shard_id, stream_arn=arn) for raw in resp.get("Records", ())]
        token = resp.get("NextShardIterator")
        if token is None:
            return RecordPage(records, None)
        position = records[-1].sequence_number if records else iterator.position
        return RecordPage(records, ShardIterator(arn, shard_id, token, position))
