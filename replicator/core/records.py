"""The change record that flows from a source through the pipeline into the sink.

Items stay raw DynamoDB AttributeValue maps (``{"pk": {"S": "a"}, "n": {"N": "1.50"}}``) from end to
end: numbers are never parsed into floats, so nothing is rounded on the way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, TypeAlias

AttributeValue: TypeAlias = dict[str, Any]
"""One DynamoDB attribute value with its type descriptor, e.g. ``{"S": "abc"}``."""

Item: TypeAlias = dict[str, AttributeValue]
"""A DynamoDB item or key: attribute name -> AttributeValue."""

EventName: TypeAlias = Literal["INSERT", "MODIFY", "REMOVE"]

TTL_PRINCIPAL = "dynamodb.amazonaws.com"
"""``userIdentity.principalId`` of a stream record written by DynamoDB's TTL deleter."""

US_PER_S = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


@dataclasses.dataclass(slots=True)
class ChangeRecord:
    """One change read from a source, in the shape every later stage uses.

    ``event`` is the record in the Lambda event shape (``eventName``, ``dynamodb.Keys``,
    ``dynamodb.NewImage`` ...; ``ApproximateCreationDateTime`` as epoch seconds). It is what filters
    match against and what a dead letter carries, so a record can be replayed after the stream's 24 h
    retention has passed. Transforms edit ``keys``/``new_image``/``old_image``, never ``event``.
    """

    event_name: EventName
    keys: Item
    new_image: Item | None
    old_image: Item | None
    sequence_number: str
    """The source's ordering token within the shard: a decimal string."""
    approximate_creation_time_us: int
    """Epoch microseconds of the change in the source table (DynamoDB Streams: whole seconds; Kinesis:
    milliseconds, or microseconds with precision MICROSECOND)."""
    shard_id: str
    event: dict[str, Any]
    is_ttl_delete: bool = False

    @property
    def approximate_creation_time_s(self) -> float:
        """The change's time in epoch seconds: the field's name and unit before it became integer µs.

        Kept for plugin transforms written against that field; the replicator itself reads the µs value.
        """
        return self.approximate_creation_time_us / US_PER_S

    @property
    def key_id(self) -> tuple[tuple[str, str, str], ...]:
        """A hashable identity of the item's primary key, for grouping changes per key."""
        return key_identity(self.keys)


def key_identity(keys: Item) -> tuple[tuple[str, str, str], ...]:
    """Return a hashable, order-independent identity of a primary key."""
    out = []
    for name in sorted(keys):
        value = keys[name]
        ((type_, scalar),) = value.items()
        out.append((name, type_, scalar if isinstance(scalar, str) else repr(scalar)))
    return tuple(out)


def epoch_us(value: object) -> int:
    """Epoch microseconds of an ``ApproximateCreationDateTime``: a datetime (botocore) or epoch seconds.

    Seconds given as a float are read by their shortest decimal form (``repr``), the digits the sender
    wrote, never by the float's binary expansion: 1700000000.123456 is 1700000000123456 µs.
    """
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) - _EPOCH) // _ONE_US
    if isinstance(value, int):
        return value * US_PER_S
    if isinstance(value, float):
        return int(Decimal(repr(value)) * US_PER_S)
    raise ValueError(f"ApproximateCreationDateTime has unexpected type {type(value).__name__}")


def _epoch_seconds(value: object) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"ApproximateCreationDateTime has unexpected type {type(value).__name__}")


def to_lambda_event(raw: Mapping[str, Any], *, event_source_arn: str | None = None) -> dict[str, Any]:
    """Convert a record as GetRecords returns it (via botocore) into the Lambda event shape.

    botocore parses ``ApproximateCreationDateTime`` into a datetime; Lambda delivers epoch seconds.
    The returned dict is JSON-serialisable (bytes in B/BS attributes stay bytes until serialised by
    the dead-letter writer, which base64-encodes them as the wire format does).
    """
    ddb = dict(raw["dynamodb"])
    if "ApproximateCreationDateTime" in ddb:
        ddb["ApproximateCreationDateTime"] = _epoch_seconds(ddb["ApproximateCreationDateTime"])
    event: dict[str, Any] = {k: v for k, v in raw.items() if k != "dynamodb"}
    event["dynamodb"] = ddb
    if event_source_arn is not None:
        event["eventSourceARN"] = event_source_arn
    return event


def from_lambda_event(event: dict[str, Any], *, shard_id: str, created_us: int | None = None) -> ChangeRecord:
    """Build a ChangeRecord from one record in the Lambda event shape.

    ``created_us`` is the creation time when the caller knows it more exactly than the event's epoch
    seconds say. Raises ValueError naming the missing or malformed field.
    """
    try:
        event_name = event["eventName"]
        ddb = event["dynamodb"]
        keys = ddb["Keys"]
        sequence_number = ddb["SequenceNumber"]
    except KeyError as exc:
        raise ValueError(f"stream record {event.get('eventID', '?')} lacks field {exc.args[0]!r}") from exc
    if event_name not in ("INSERT", "MODIFY", "REMOVE"):
        raise ValueError(f"stream record {event.get('eventID', '?')} has unknown eventName {event_name!r}")
    identity = event.get("userIdentity") or {}
    return ChangeRecord(
        event_name=event_name,
        keys=keys,
        new_image=ddb.get("NewImage"),
        old_image=ddb.get("OldImage"),
        sequence_number=sequence_number,
        approximate_creation_time_us=(
            epoch_us(ddb.get("ApproximateCreationDateTime", 0)) if created_us is None else created_us
        ),
        shard_id=shard_id,
        event=event,
        is_ttl_delete=(
            event_name == "REMOVE"
            and identity.get("type") == "Service"
            and identity.get("principalId") == TTL_PRINCIPAL
        ),
    )


def from_stream_record(raw: Mapping[str, Any], *, shard_id: str, stream_arn: str) -> ChangeRecord:
    """Build a ChangeRecord from a record returned by DynamoDB Streams GetRecords."""
    created = raw.get("dynamodb", {}).get("ApproximateCreationDateTime")
    return from_lambda_event(
        to_lambda_event(raw, event_source_arn=stream_arn),
        shard_id=shard_id,
        created_us=None if created is None else epoch_us(created),
    )
