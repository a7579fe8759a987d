"""Kinesis Data Streams for DynamoDB as the change source (``source.kind: kinesis``).

DynamoDB can publish a table's changes to a Kinesis data stream instead of (or as well as) DynamoDB
Streams. ``KinesisSource`` keeps the ``ChangeSource`` contract (``api.py``) on such a stream:

- shards come from ListShards (paginated); a merged shard names both parents (``ParentShardId`` and
  ``AdjacentParentShardId``), and ``ShardTree`` starts it only after both are read to their end;
- each Kinesis record's ``Data`` is the change as JSON (``awsRegion``, ``eventID``, ``eventName``,
  ``userIdentity``, ``recordFormat: application/json``, ``tableName``, ``dynamodb`` {
  ``ApproximateCreationDateTime`` in epoch ms, or µs with precision MICROSECOND, ``Keys``,
  ``NewImage``, ``OldImage``, ``SizeBytes``}, ``eventSource: aws:dynamodb``) with no sequence number
  or view type: ``to_change_record`` turns it into the same ChangeRecord a DynamoDB Streams record
  makes (the Lambda event shape, with the Kinesis record's SequenceNumber, up to 129 digits, as
  ``SequenceNumber`` and binary attributes decoded from base64), so the reader and the pipeline need
  nothing Kinesis-specific;
- a record that is not a DynamoDB change (a stream shared with other producers) or is another table's
  is skipped, never stopping the shard: counted in ``replicator_source_records_skipped_total{reason}``
  and, when it is not a change at all, logged (``kinesis_record_skipped``) with its sequence number and
  why, never its data;
- limits per shard: 5 GetRecords calls/s and 2 MB/s (a call may return up to 10 MB / 10,000
  records, after which the shard must rest); calls are paced per shard to stay inside them.

Kinesis may deliver a change twice or out of order; last-writer-wins in the writer absorbs both
(versions carry the change's own timestamp, to the millisecond or microsecond).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from replicator.core.codec import decode_item
from replicator.core.errors import StreamConfigError, TransientError, error_code
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.source.api import IteratorType, RecordPage, ShardIterator, StreamInfo, translate_error
from replicator.source.shards import Shard

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_kinesis import KinesisClient

    from replicator.observe.metrics import Metrics

log = structlog.get_logger(__name__)

GET_RECORDS_CALLS_PER_S = 5.0
READ_BYTES_PER_S = 2 * 1024 * 1024
MAX_RECORDS_PER_CALL = 10_000
LIST_SHARDS_CALLS_PER_S = 10.0
VIEW_TYPE = "NEW_AND_OLD_IMAGES"
"""Kinesis Data Streams for DynamoDB always carries both images."""

_US_THRESHOLD = 10**14
_MS_THRESHOLD = 10**11


def creation_time_s(value: object) -> float:
    """Epoch seconds from ``ApproximateCreationDateTime`` in ms or µs (told apart by magnitude)."""
    number = Decimal(str(value))
    if number >= _US_THRESHOLD:
        number /= 1_000_000
    elif number >= _MS_THRESHOLD:
        number /= 1_000
    return float(number)


def creation_time_us(value: object) -> int:
    """Epoch µs from ``ApproximateCreationDateTime`` in ms or µs, exactly (no float on the way)."""
    number = Decimal(str(value))
    if number >= _US_THRESHOLD:
        return int(number)
    if number >= _MS_THRESHOLD:
        return int(number * 1_000)
    return int(number * 1_000_000)


class NotAChangeError(ValueError):
    """A Kinesis record that is not a DynamoDB change: ``reason`` says why, without quoting its data."""

    def __init__(self, sequence_number: str, reason: str) -> None:
        """Name the record by its sequence number and say why, in a few fixed words."""
        super().__init__(f"Kinesis record {sequence_number} is not a DynamoDB change record: {reason}")
        self.sequence_number = sequence_number
        self.reason = reason


def _payload_of(data: bytes | str, sequence_number: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The change's JSON, its ``dynamodb`` part and its decoded keys; NotAChangeError if it is none."""
    try:
        payload = json.loads(data)
    except (ValueError, TypeError) as exc:
        raise NotAChangeError(sequence_number, "Data is not JSON") from exc
    if not isinstance(payload, dict):
        raise NotAChangeError(sequence_number, "Data is not a JSON object")
    source = payload.get("eventSource", "aws:dynamodb")
    if source != "aws:dynamodb":
        raise NotAChangeError(sequence_number, "eventSource is not aws:dynamodb")
    ddb = payload.get("dynamodb")
    if not isinstance(ddb, dict):
        raise NotAChangeError(sequence_number, "no dynamodb object")
    if not isinstance(payload.get("eventName"), str):
        raise NotAChangeError(sequence_number, "no eventName")
    try:
        keys = decode_item(ddb["Keys"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotAChangeError(sequence_number, "no decodable dynamodb.Keys") from exc
    return payload, ddb, keys


def to_change_record(data: bytes | str, sequence_number: str, *, shard_id: str, stream_arn: str) -> ChangeRecord:
    """Convert one Kinesis record's ``Data`` (the DynamoDB change as JSON) to a ChangeRecord.

    Its ``event`` is what DynamoDB Streams would have given for the change (the Lambda event shape, the
    time in epoch seconds), key for key and in the same order. Raises NotAChangeError (a ValueError)
    naming the sequence number and what is missing when the payload is not a DynamoDB change.
    """
    payload, ddb, keys = _payload_of(data, sequence_number)
    event_name = payload["eventName"]
    out_ddb: dict[str, Any] = {"Keys": keys, "SequenceNumber": sequence_number, "StreamViewType": VIEW_TYPE}
    created = ddb.get("ApproximateCreationDateTime")
    if created is not None:
        out_ddb["ApproximateCreationDateTime"] = creation_time_s(created)
    for name in ("NewImage", "OldImage"):
        if ddb.get(name) is not None:
            out_ddb[name] = decode_item(ddb[name])
    if ddb.get("SizeBytes") is not None:
        out_ddb["SizeBytes"] = ddb["SizeBytes"]
    event: dict[str, Any] = {
        "eventID": payload.get("eventID", sequence_number),
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": payload.get("eventSource", "aws:dynamodb"),
        "awsRegion": payload.get("awsRegion"),
    }
    identity = payload.get("userIdentity")
    if identity:
        event["userIdentity"] = identity
    if payload.get("tableName"):
        event["tableName"] = payload["tableName"]
    event["dynamodb"] = out_ddb
    event["eventSourceARN"] = stream_arn
    return from_lambda_event(
        event, shard_id=shard_id, created_us=None if created is None else creation_time_us(created)
    )


class KinesisSource:
    """A ``ChangeSource`` reading a Kinesis data stream fed by DynamoDB."""

    def __init__(
        self,
        kinesis_client: KinesisClient,
        dynamodb_client: DynamoDBClient,
        *,
        stream_name: str | None = None,
        table: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        """Bind to clients owned by the service; no I/O. ``metrics`` counts the records skipped."""
        self._kinesis = kinesis_client
        self._ddb = dynamodb_client
        self._stream_name = stream_name
        self._table = table
        self._clock = clock
        self._sleep = sleep
        self._next_call: dict[str, float] = {}
        self._shards: dict[str, Shard] = {}
        self._list_lock = asyncio.Lock()
        self._last_list = 0.0
        self._metrics = metrics

    async def resolve(self, *, table: str | None, stream_arn: str | None) -> StreamInfo:
        """Find the Kinesis stream: by ARN, by name, or as the table's active Kinesis destination."""
        kwargs: dict[str, Any]
        if stream_arn is not None:
            kwargs = {"StreamARN": stream_arn}
        elif self._stream_name is not None:
            kwargs = {"StreamName": self._stream_name}
        elif table is not None:
            kwargs = {"StreamARN": await self._destination_of(table)}
        else:
            raise StreamConfigError("source.kind kinesis needs source.stream_arn, kinesis_stream_name or table")
        try:
            summary = (await self._kinesis.describe_stream_summary(**kwargs))["StreamDescriptionSummary"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise StreamConfigError(f"Kinesis stream not found: {exc}") from exc
            raise translate_error(exc, "DescribeStreamSummary") from exc
        return StreamInfo(arn=summary["StreamARN"], view_type=VIEW_TYPE, status=summary["StreamStatus"])

    async def _destination_of(self, table: str) -> str:
        desc = await self._ddb.describe_kinesis_streaming_destination(TableName=table)
        for dest in desc.get("KinesisDataStreamDestinations", []):
            if dest.get("DestinationStatus") in ("ACTIVE", "ENABLING", "UPDATING"):
                return str(dest["StreamArn"])
        raise StreamConfigError(
            f"table {table} streams to no active Kinesis destination: enable one or set source.stream_arn"
        )

    async def _pace_list(self) -> None:
        async with self._list_lock:
            wait = self._last_list + 1 / LIST_SHARDS_CALLS_PER_S - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._last_list = self._clock()

    async def list_shards(self, stream_arn: str) -> list[Shard]:
        """Every shard of the stream, open and closed (ListShards, all pages)."""
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamARN": stream_arn}
        while True:
            await self._pace_list()
            try:
                page = await self._kinesis.list_shards(**kwargs)
            except Exception as exc:
                raise translate_error(exc, "ListShards") from exc
            shards.extend(Shard.from_api(s) for s in page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                break
            # With NextToken, ListShards refuses the stream's name or ARN.
            kwargs = {"NextToken": token}
        self._shards = {s.shard_id: s for s in shards}
        # Pacing state only for listed shards: it does not grow as shards come and go.
        self._next_call = {sid: t for sid, t in self._next_call.items() if sid in self._shards}
        return shards

    async def get_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: IteratorType, sequence_number: str | None = None
    ) -> ShardIterator:
        """Return a shard iterator (valid 5 minutes)."""
        kwargs: dict[str, Any] = {
            "StreamARN": stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if sequence_number is not None:
            kwargs["StartingSequenceNumber"] = sequence_number
        try:
            token = str((await self._kinesis.get_shard_iterator(**kwargs))["ShardIterator"])
        except Exception as exc:
            raise _kinesis_error(exc, "GetShardIterator") from exc
        position = sequence_number if iterator_type == "AFTER_SEQUENCE_NUMBER" else None
        return ShardIterator(stream_arn, shard_id, token, position)

    async def _pace(self, shard_id: str) -> None:
        wait = self._next_call.get(shard_id, 0.0) - self._clock()
        if wait > 0:
            await self._sleep(wait)

    async def get_records(self, iterator: ShardIterator, limit: int) -> RecordPage:
        """Return this table's records after the iterator and the next iterator (None: the shard's end)."""
        shard_id = iterator.shard_id
        await self._pace(shard_id)
        try:
            resp = await self._kinesis.get_records(
                ShardIterator=iterator.token,
                Limit=min(limit, MAX_RECORDS_PER_CALL),
                # Optional for Kinesis; moto needs it when the iterator was asked for by ARN.
                StreamARN=iterator.stream_arn,
            )
        except Exception as exc:
            raise _kinesis_error(exc, "GetRecords") from exc
        raw = resp.get("Records", [])
        size = sum(len(r.get("Data", b"")) for r in raw)
        # 5 calls/s and 2 MB/s per shard: a large page buys a longer rest (10 MB: 5 s).
        self._next_call[shard_id] = self._clock() + max(1 / GET_RECORDS_CALLS_PER_S, size / READ_BYTES_PER_S)
        records = self._convert(raw, iterator)
        position = str(raw[-1]["SequenceNumber"]) if raw else iterator.position
        token = resp.get("NextShardIterator")
        if token is None or (not raw and self._read_to_end(shard_id, position)):
            self._next_call.pop(shard_id, None)  # read to its end: never called again
            return RecordPage(records, None)
        return RecordPage(records, ShardIterator(iterator.stream_arn, shard_id, token, position))

    def _convert(self, raw: Sequence[Mapping[str, Any]], iterator: ShardIterator) -> list[ChangeRecord]:
        out = []
        for record in raw:
            sequence_number = str(record["SequenceNumber"])
            try:
                change = to_change_record(
                    record["Data"], sequence_number, shard_id=iterator.shard_id, stream_arn=iterator.stream_arn
                )
            except NotAChangeError as exc:
                # A shared stream may carry other producers' data: skipped, counted and named, never
                # stopping the shard. The log says why, never what the data holds.
                self._skipped("not_a_dynamodb_change")
                log.warning(
                    "kinesis_record_skipped",
                    shard_id=iterator.shard_id,
                    sequence_number=sequence_number,
                    reason=exc.reason,
                )
                continue
            table = change.event.get("tableName")
            if self._table and table is not None and table != self._table:
                # One Kinesis stream may carry several tables' changes: only ours are replicated.
                self._skipped("other_table")
                continue
            out.append(change)
        return out

    def _skipped(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.source_records_skipped.labels(reason=reason).inc()

    def _read_to_end(self, shard_id: str, position: str | None) -> bool:
        """Say whether ``position`` is the closed shard's ending sequence number (or past it).

        Kinesis says so itself (no NextShardIterator); some emulators (moto) keep returning one.
        """
        shard = self._shards.get(shard_id)
        if shard is None or shard.ending_sequence_number is None:
            return False
        reached = position or shard.starting_sequence_number or "0"
        return int(reached) >= int(shard.ending_sequence_number)


def _kinesis_error(exc: Exception, operation: str) -> Exception:
    if error_code(exc) == "KMSThrottlingException":
        err = TransientError(f"{operation}: KMSThrottlingException")
        err.__cause__ = exc
        return err
    return translate_error(exc, operation)
