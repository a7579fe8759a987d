"""Lambda test helpers on DynamoDB Local: events shaped as an event source mapping delivers them, a fake context."""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

from replicator.core.records import to_lambda_event

if TYPE_CHECKING:
    from replicator_dev.local.dynamodb_local import DynamoDBLocal

MARKERS = frozenset({"_rep_version", "_rep_origin", "_rep_deleted", "_rep_expires", "_rep_ts"})


class FakeContext:
    """The parts of Lambda's context the handler reads."""

    aws_request_id = "req-test"
    function_name = "replicator-test"

    def __init__(self, remaining_ms: int = 60_000) -> None:
        """Remember how much time the invocation pretends to have."""
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left (fixed)."""
        return self.remaining_ms


def _wire(value: Any) -> str:
    # Lambda's JSON carries bytes (B, BS) as base64 text.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


def stream_events(ddb: DynamoDBLocal, stream_arn: str, expected: int) -> list[dict[str, Any]]:
    """Read the stream's records and shape them exactly as an event source mapping delivers them."""
    streams = ddb.client("dynamodbstreams")
    raw: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterators = [
        streams.get_shard_iterator(StreamArn=stream_arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        for s in shards
    ]
    for first in iterators:
        iterator = first
        while iterator and len(raw) < expected and time.monotonic() < deadline:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            raw.extend(page["Records"])
            iterator = page.get("NextShardIterator")
    assert len(raw) == expected, f"read {len(raw)} stream records, expected {expected}"
    events = [json.loads(json.dumps(to_lambda_event(r, event_source_arn=stream_arn), default=_wire)) for r in raw]
    for event in events:
        # The shape Lambda delivers: these fields, ApproximateCreationDateTime in epoch seconds.
        assert {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "eventSourceARN"} <= set(event)
        assert {"Keys", "SequenceNumber", "SizeBytes", "StreamViewType"} <= set(event["dynamodb"])
        assert isinstance(event["dynamodb"]["ApproximateCreationDateTime"], int | float)
    return events


def live_items(ddb: DynamoDBLocal, table: str) -> dict[str, dict[str, Any]]:
    """Items by pk, without replication markers and without tombstones."""
    out = {}
    for item in ddb.client().scan(TableName=table, ConsistentRead=True)["Items"]:
        if "_rep_deleted" in item:
            continue
        out[item["pk"]["S"]] = {k: v for k, v in item.items() if k not in MARKERS}
    return out
