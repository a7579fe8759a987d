"""A scripted, in-process DynamoDB Streams API, for what DynamoDB Local cannot do: split and roll shards.

DynamoDB Local never splits or rolls shards in server mode, so shard lineage (splits, rollovers, closed
parents, shards appearing while running, paginated discovery) is tested against this script. It mimics
the ``dynamodbstreams`` client calls the replicator makes, with the real API's shapes and page size.
The target side is a recorder of write order, not a model of DynamoDB's conditions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

DESCRIBE_PAGE = 100


@dataclasses.dataclass
class ScriptedShard:
    """One shard of the scripted stream."""

    shard_id: str
    parent: str | None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    closed: bool = False
    start_seq: int = 0


class ScriptedStream:
    """A stream whose shards and records a test scripts; quacks like the aiobotocore clients."""

    def __init__(
        self, arn: str = "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2026-01-01T00:00:00.000"
    ) -> None:
        """Start with no shards."""
        self.arn = arn
        self.shards: dict[str, ScriptedShard] = {}
        self.seq = 0
        self.describe_calls = 0
        self.iterator_requests: list[tuple[str, str, str | None]] = []
        self.hidden: set[str] = set()

    # --- scripting -------------------------------------------------------------------------------
    def add_shard(self, shard_id: str, parent: str | None = None) -> None:
        """Open a shard (a child when ``parent`` is given)."""
        self.shards[shard_id] = ScriptedShard(shard_id, parent, start_seq=self.seq + 1)

    def put(self, shard_id: str, key: str, value: int, event_name: str = "MODIFY") -> str:
        """Append a change of ``key`` to ``value`` in a shard; returns its sequence number."""
        shard = self.shards[shard_id]
        assert not shard.closed, f"shard {shard_id} is closed"
        self.seq += 1
        seq = f"{self.seq:021d}"
        image = {"pk": {"S": key}, "v": {"N": str(value)}}
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": dt.datetime.now(tz=dt.UTC),
            "Keys": {"pk": {"S": key}},
            "SequenceNumber": seq,
            "SizeBytes": 20,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if event_name != "REMOVE":
            ddb["NewImage"] = image
        shard.records.append(
            {
                "eventID": f"e{self.seq}",
                "eventName": event_name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": ddb,
            }
        )
        return seq

    def roll(self, gen: int, *, listed_generations: int) -> None:
        """Rollover ``gen`` of a chain ``g0, g1, ...``: ``g{gen-1}`` gets ``k`` = ``gen`` and closes, ``g{gen}`` opens.

        The stream stops listing the generations older than the last ``listed_generations``.
        """
        self.put(f"g{gen - 1}", "k", gen)
        self.close(f"g{gen - 1}")
        self.add_shard(f"g{gen}", parent=f"g{gen - 1}")
        if gen >= listed_generations:
            self.hidden.add(f"g{gen - listed_generations}")  # trimmed by the stream

    async def listed_again(self, times: int = 10) -> None:
        """Return once the worker has listed the stream ``times`` more times (so trimmed shards are forgotten)."""
        listed_after = self.describe_calls + times
        while self.describe_calls < listed_after:  # noqa: ASYNC110 - no event to await: the worker polls
            await asyncio.sleep(0.01)

    def close(self, shard_id: str) -> None:
        """Close a shard: it gets an ending sequence number and no more records."""
        self.shards[shard_id].closed = True

    # --- dynamodb client ---------------------------------------------------------------------------
    async def describe_table(self, TableName: str) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """DescribeTable: the table's latest stream."""
        return {
            "Table": {
                "TableName": TableName,
                "LatestStreamArn": self.arn,
                "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            }
        }

    # --- dynamodbstreams client --------------------------------------------------------------------
    async def list_streams(self, TableName: str) -> dict[str, Any]:  # noqa: N803 - botocore's name
        """ListStreams: this one stream (a table never replaced)."""
        return {"Streams": [{"StreamArn": self.arn, "TableName": TableName, "StreamLabel": self.arn[-23:]}]}

    async def describe_stream(
        self,
        StreamArn: str,  # noqa: N803
        Limit: int = DESCRIBE_PAGE,  # noqa: N803
        ExclusiveStartShardId: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """DescribeStream: at most 100 shards a page, in creation order, LastEvaluatedShardId to go on."""
        assert StreamArn == self.arn
        self.describe_calls += 1
        visible = [s for s in self.shards.values() if s.shard_id not in self.hidden]
        start = 0
        if ExclusiveStartShardId is not None:
            start = next(i for i, s in enumerate(visible) if s.shard_id == ExclusiveStartShardId) + 1
        limit = min(Limit, DESCRIBE_PAGE)
        page = visible[start : start + limit]
        desc: dict[str, Any] = {
            "StreamArn": self.arn,
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "Shards": [self._describe_shard(s) for s in page],
        }
        if start + limit < len(visible):
            desc["LastEvaluatedShardId"] = page[-1].shard_id
        return {"StreamDescription": desc}

    def _describe_shard(self, shard: ScriptedShard) -> dict[str, Any]:
        rng = {"StartingSequenceNumber": f"{shard.start_seq:021d}"}
        if shard.closed:
            last = shard.records[-1]["dynamodb"]["SequenceNumber"] if shard.records else f"{shard.start_seq:021d}"
            rng["EndingSequenceNumber"] = last
        out: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": rng}
        if shard.parent:
            out["ParentShardId"] = shard.parent
        return out

    async def get_shard_iterator(
        self,
        StreamArn: str,  # noqa: N803
        ShardId: str,  # noqa: N803
        ShardIteratorType: str,  # noqa: N803
        SequenceNumber: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """GetShardIterator: positions encoded in the iterator string."""
        assert StreamArn == self.arn
        self.iterator_requests.append((ShardId, ShardIteratorType, SequenceNumber))
        shard = self.shards[ShardId]
        if ShardIteratorType == "TRIM_HORIZON":
            pos = 0
        elif ShardIteratorType == "LATEST":
            pos = len(shard.records)
        else:
            assert SequenceNumber is not None
            seqs = [r["dynamodb"]["SequenceNumber"] for r in shard.records]
            pos = seqs.index(SequenceNumber) + (1 if ShardIteratorType == "AFTER_SEQUENCE_NUMBER" else 0)
        return {"ShardIterator": f"{ShardId}|{pos}"}

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        """GetRecords: no NextShardIterator once a closed shard is read to its end."""
        shard_id, pos_s = ShardIterator.split("|")
        shard = self.shards[shard_id]
        pos = int(pos_s)
        records = shard.records[pos : pos + Limit]
        new_pos = pos + len(records)
        out: dict[str, Any] = {"Records": records}
        if not (shard.closed and new_pos >= len(shard.records)):
            out["NextShardIterator"] = f"{shard_id}|{new_pos}"
        return out


class RecordingTarget:
    """Records every write in arrival order; every write succeeds."""

    def __init__(self) -> None:
        """Start empty."""
        self.writes: list[tuple[str, str, dict[str, Any]]] = []

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Record a PutItem."""
        self.writes.append(("PutItem", params["Item"]["pk"]["S"], params["Item"]))
        return {}

    async def delete_item(self, **params: Any) -> dict[str, Any]:
        """Record a DeleteItem."""
        self.writes.append(("DeleteItem", params["Key"]["pk"]["S"], params["Key"]))
        return {}

    def values_of(self, key: str) -> list[int]:
        """The values written for a key, in write order."""
        return [int(item["v"]["N"]) for op, k, item in self.writes if k == key and op == "PutItem" and "v" in item]
