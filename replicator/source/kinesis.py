"""Kinesis Data Streams for DynamoDB as the change source (``source.kind: kinesis``).

DynamoDB can publish a table's changes to a Kinesis data stream instead of (or as well as) DynamoDB
Streams. ``KinesisAPI`` offers the calls the coordinator and the shard reader make on ``StreamsAPI``
(resolve, list_shards, get_iterator, get_records) and translates Kinesis shapes:

- shards come from ListShards (paginated); a merged shard names both parents (``ParentShardId`` and
  ``AdjacentParentShardId``), and ``ShardTree`` starts it only after both are read to their end;
- each Kinesis record's ``Data`` is the change as JSON (``awsRegion``, ``eventID``, ``eventName``,
  ``userIdentity``, ``recordFormat: application/json``, ``tableName``, ``dynamodb`` {
  ``ApproximateCreationDateTime`` in epoch ms, or µs with precision MICROSECOND, ``Keys``,
  ``NewImage``, ``OldImage``, ``SizeBytes``}, ``eventSource: aws:dynamodb``) with no sequence number
  or view type: ``get_records`` returns it converted to the DynamoDB Streams record shape, with the
  Kinesis record's SequenceNumber (up to 56 digits) as ``SequenceNumber`` and binary attributes
  decoded from base64, so the reader and the pipeline need nothing Kinesis-specific;
- limits per shard: 5 GetRecords calls/s and 2 MB/s (a call may return up to 10 MB / 10,000
  records, after which the shard must rest); calls are paced per shard to stay inside them.

Kinesis may deliver a change twice or out of order; last-writer-wins in the writer absorbs both
(versions carry the change's own timestamp, to the millisecond).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from replicator.core.errors import StreamConfigError, TransientError, error_code
from replicator.source.shards import Shard
from replicator.source.streams import IteratorType, StreamInfo, StreamsAPI, _translate

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_kinesis import KinesisClient

    from replicator.aws.clients import Clients
    from replicator.core.config import Config

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


def _decode_binary(value: Any) -> Any:  # noqa: ANN401 - walks an AttributeValue tree
    """JSON carries B/BS as base64 text; botocore (and the writer) want bytes."""
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((type_, inner),) = value.items()
    if type_ == "B" and isinstance(inner, str):
        return {"B": base64.b64decode(inner)}
    if type_ == "BS":
        return {"BS": [base64.b64decode(v) if isinstance(v, str) else v for v in inner]}
    if type_ == "M":
        return {"M": {k: _decode_binary(v) for k, v in inner.items()}}
    if type_ == "L":
        return {"L": [_decode_binary(v) for v in inner]}
    return value


def _decode_image(image: dict[str, Any] | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {name: _decode_binary(value) for name, value in image.items()}


def to_stream_record(data: bytes | str, sequence_number: str) -> dict[str, Any]:
    """Convert one Kinesis record's ``Data`` (the DynamoDB change as JSON) to a Streams-shaped record.

    Raises ValueError naming what is missing when the payload is not a DynamoDB change.
    """
    try:
        payload = json.loads(data)
        ddb = payload["dynamodb"]
        event_name = payload["eventName"]
        keys = ddb["Keys"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Kinesis record {sequence_number} is not a DynamoDB change record: {exc!r}") from exc
    out_ddb: dict[str, Any] = {
        "Keys": _decode_image(keys),
        "SequenceNumber": sequence_number,
        "StreamViewType": VIEW_TYPE,
    }
    if ddb.get("ApproximateCreationDateTime") is not None:
        out_ddb["ApproximateCreationDateTime"] = creation_time_s(ddb["ApproximateCreationDateTime"])
    for name in ("NewImage", "OldImage"):
        if ddb.get(name) is not None:
            out_ddb[name] = _decode_image(ddb[name])
    if ddb.get("SizeBytes") is not None:
        out_ddb["SizeBytes"] = ddb["SizeBytes"]
    raw: dict[str, Any] = {
        "eventID": payload.get("eventID", sequence_number),
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": payload.get("eventSource", "aws:dynamodb"),
        "awsRegion": payload.get("awsRegion"),
        "dynamodb": out_ddb,
    }
    identity = payload.get("userIdentity")
    if identity:
        raw["userIdentity"] = identity
    if payload.get("tableName"):
        raw["tableName"] = payload["tableName"]
    return raw


@dataclasses.dataclass(slots=True)
class _Chain:
    """Where an iterator points: its shard and the last sequence number read through it."""

    stream_arn: str
    shard_id: str
    position: str | None


class KinesisAPI(StreamsAPI):
    """The StreamsAPI calls, answered from a Kinesis data stream fed by DynamoDB."""

    def __init__(
        self,
        kinesis_client: KinesisClient,
        dynamodb_client: DynamoDBClient,
        *,
        stream_name: str | None = None,
        table: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Bind to clients owned by the service; no I/O."""
        # Never used as a Streams client: every StreamsAPI call that would use it is overridden below.
        super().__init__(kinesis_client, dynamodb_client)  # type: ignore[arg-type]
        self._kinesis = kinesis_client
        self._stream_name = stream_name
        self._table = table
        self._clock = clock
        self._sleep = sleep
        self._chains: dict[str, _Chain] = {}
        self._next_call: dict[str, float] = {}
        self._shards: dict[str, Shard] = {}
        self._list_lock = asyncio.Lock()
        self._last_list = 0.0
        self._other_tables = 0

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
            raise _translate(exc, "DescribeStreamSummary") from exc
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
                raise _translate(exc, "ListShards") from exc
            shards.extend(Shard.from_api(s) for s in page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                break
            # With NextToken, ListShards refuses the stream's name or ARN.
            kwargs = {"NextToken": token}
        self._shards = {s.shard_id: s for s in shards}
        return shards

    async def get_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: IteratorType, sequence_number: str | None = None
    ) -> str:
        """Return a shard iterator (valid 5 minutes) and remember which shard it reads."""
        kwargs: dict[str, Any] = {
            "StreamARN": stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if sequence_number is not None:
            kwargs["StartingSequenceNumber"] = sequence_number
        try:
            iterator = str((await self._kinesis.get_shard_iterator(**kwargs))["ShardIterator"])
        except Exception as exc:
            raise _kinesis_error(exc, "GetShardIterator") from exc
        position = sequence_number if iterator_type == "AFTER_SEQUENCE_NUMBER" else None
        self._chains[iterator] = _Chain(stream_arn, shard_id, position)
        return iterator

    async def _pace(self, shard_id: str) -> None:
        wait = self._next_call.get(shard_id, 0.0) - self._clock()
        if wait > 0:
            await self._sleep(wait)

    async def get_records(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Return the records after the iterator (Streams-shaped) and the next iterator (None: the end)."""
        chain = self._chains.pop(iterator, None)
        if chain is not None:
            await self._pace(chain.shard_id)
        try:
            kwargs: dict[str, Any] = {"ShardIterator": iterator, "Limit": min(limit, MAX_RECORDS_PER_CALL)}
            if chain is not None:
                # Optional for Kinesis; moto needs it when the iterator was asked for by ARN.
                kwargs["StreamARN"] = chain.stream_arn
            resp = await self._kinesis.get_records(**kwargs)
        except Exception as exc:
            if chain is not None:
                self._chains[iterator] = chain  # the caller retries with the same iterator
            raise _kinesis_error(exc, "GetRecords") from exc
        records = resp.get("Records", [])
        size = sum(len(r.get("Data", b"")) for r in records)
        if chain is not None:
            # 5 calls/s and 2 MB/s per shard: a large page buys a longer rest (10 MB: 5 s).
            self._next_call[chain.shard_id] = self._clock() + max(1 / GET_RECORDS_CALLS_PER_S, size / READ_BYTES_PER_S)
        out = self._convert(records, chain)
        next_iterator: str | None = resp.get("NextShardIterator")
        if next_iterator is not None and chain is not None and not records and self._read_to_end(chain):
            next_iterator = None
        if next_iterator is not None and chain is not None:
            self._chains[next_iterator] = chain
        return out, next_iterator

    def _convert(self, records: Sequence[Mapping[str, Any]], chain: _Chain | None) -> list[dict[str, Any]]:
        out = []
        for record in records:
            raw = to_stream_record(record["Data"], str(record["SequenceNumber"]))
            if chain is not None:
                chain.position = str(record["SequenceNumber"])
            table = raw.get("tableName")
            if self._table and table is not None and table != self._table:
                # One Kinesis stream may carry several tables' changes: only ours are replicated.
                self._other_tables += 1
                continue
            out.append(raw)
        return out

    def _read_to_end(self, chain: _Chain) -> bool:
        """Say whether the chain has read its closed shard up to the ending sequence number.

        Kinesis says so itself (no NextShardIterator); some emulators (moto) keep returning one.
        """
        shard = self._shards.get(chain.shard_id)
        if shard is None or shard.ending_sequence_number is None:
            return False
        reached = chain.position or shard.starting_sequence_number or "0"
        return int(reached) >= int(shard.ending_sequence_number)


def _kinesis_error(exc: Exception, operation: str) -> Exception:
    if error_code(exc) == "KMSThrottlingException":
        err = TransientError(f"{operation}: KMSThrottlingException")
        err.__cause__ = exc
        return err
    return _translate(exc, operation)


async def source_api(
    stack: contextlib.AsyncExitStack,
    cfg: Config,
    clients: Clients,
) -> StreamsAPI:
    """Return the change source ``source.kind`` names; a Kinesis client is opened in ``stack``."""
    if cfg.source.kind != "kinesis":
        return StreamsAPI(clients.streams, clients.source)
    from aiobotocore.session import get_session  # noqa: PLC0415 - only for Kinesis sources

    from replicator.aws.clients import client_config  # noqa: PLC0415 - same

    kinesis = await stack.enter_async_context(
        get_session().create_client(
            "kinesis",
            region_name=cfg.source.region,
            endpoint_url=cfg.source.endpoint_url,
            config=client_config(),
        )
    )
    return KinesisAPI(kinesis, clients.source, stream_name=cfg.source.kinesis_stream_name, table=cfg.source.table)
