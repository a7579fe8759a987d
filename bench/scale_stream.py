"""A simulated DynamoDB Streams stream of many shards that roll over, computed from the clock (bench only).

Every worker process of ``bench/scale.py`` holds its own copy; they agree because the stream is a pure
function of wall-clock time and of the schedule the harness writes (``Schedule``). It quacks like the
``dynamodb`` and ``dynamodbstreams`` clients the worker uses (DescribeTable, DescribeStream in pages of
100, GetShardIterator, GetRecords), so the worker's real source code path runs.

- Generation 0 of ``shards`` shards is open from the start. From ``roll_start`` every shard rolls over
  every ``lifetime_s``: it closes and a child (same index, next generation) opens. Shard ``i`` first rolls
  ``i / shards`` of a lifetime after ``roll_start``, so rollovers are spread evenly, as a table's partitions
  roll at their own times (``stagger=False``: all at once, the worst case). A closed shard stays listed for
  ``retention_s`` after it closed (DynamoDB Streams: 24 h), then is trimmed.
- Busy shards (every ``1/busy_fraction``-th index) get ``busy_rate`` records/s from ``busy_start``.
- Each idle shard gets ONE record (a wake-up) at a time spread over ``[wake_start, wake_end]``.
- A record's image carries ``t``, the time it was appended, and ``kind`` (busy, wake): the worker's
  target wrapper derives the lag from them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from typing import Any

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Scale/stream/2026-01-01T00:00:00.000"
PAGE = 100
LISTING_CACHE_S = 0.5
FAR = 1e18


@dataclasses.dataclass
class Schedule:
    """Absolute wall-clock times of the phases (FAR: not yet); written by the harness."""

    busy_start: float = FAR
    wake_start: float = FAR
    wake_end: float = FAR
    roll_start: float = FAR
    roll_end: float = FAR
    """No rollover after this: the end state is measured at rest."""


@dataclasses.dataclass
class Counters:
    """GetRecords calls by shard kind, and how many returned nothing."""

    idle_calls: int = 0
    idle_empty: int = 0
    busy_calls: int = 0


class SimStream:
    """The stream, as of ``time.time()``."""

    def __init__(
        self,
        *,
        shards: int,
        busy_fraction: float,
        busy_rate: float,
        lifetime_s: float,
        retention_s: float,
        stagger: bool = True,
    ) -> None:
        """Describe the stream; the schedule starts as 'nothing happens'."""
        self.n = shards
        self.stagger = stagger
        self.busy_every = max(1, round(1 / busy_fraction)) if busy_fraction > 0 else shards + 1
        self.busy_rate = busy_rate
        self.lifetime_s = lifetime_s
        self.retention_s = retention_s
        self.schedule = Schedule()
        self.counters = Counters()
        self._listing: tuple[float, list[tuple[int, int]], dict[tuple[int, int], int]] = (-1.0, [], {})

    # --- the model -------------------------------------------------------------------------------
    def busy(self, i: int) -> bool:
        """Whether shard index ``i`` is busy."""
        return i % self.busy_every == 0

    def first_roll(self, i: int) -> float:
        """When shard index ``i`` first rolls over: spread over one lifetime, as partitions roll at their own times.

        Unstaggered (``--aligned``), every shard rolls at the same instant: the worst case for a rebalance.
        """
        offset = self.lifetime_s * i / self.n if self.stagger else 0.0
        return self.schedule.roll_start + offset

    def generation(self, now: float, i: int) -> int:
        """The open generation of shard index ``i`` at ``now``."""
        start = self.first_roll(i)
        last = min(now, self.schedule.roll_end)
        return 0 if last < start else 1 + int((last - start) // self.lifetime_s)

    def span(self, gen: int, i: int) -> tuple[float, float]:
        """When generation ``gen`` of shard index ``i`` opened and closed (FAR: still open)."""
        start = self.first_roll(i)
        opened = 0.0 if gen == 0 else start + (gen - 1) * self.lifetime_s
        closed = start + gen * self.lifetime_s if self.schedule.roll_start < FAR else FAR
        if closed > self.schedule.roll_end:
            closed = FAR
        return opened, closed

    def record_times(self, gen: int, i: int, now: float) -> list[float]:
        """Times of the records of shard (gen, i) appended by ``now``."""
        opened, closed = self.span(gen, i)
        hi = min(now, closed)
        if self.busy(i):
            begin = max(opened, self.schedule.busy_start)
            if hi <= begin:
                return []
            first = math.ceil(begin * self.busy_rate)
            last = math.ceil(hi * self.busy_rate) - 1
            return [round(k / self.busy_rate, 3) for k in range(first, last + 1)]
        s = self.schedule
        if s.wake_start >= FAR:
            return []
        idle_rank = i - i // self.busy_every - 1
        idle_total = self.n - math.ceil(self.n / self.busy_every)
        # Times in whole milliseconds: a sequence number holds milliseconds, and resuming must not repeat.
        t = round(s.wake_start + (s.wake_end - s.wake_start) * idle_rank / max(1, idle_total), 3)
        return [t] if opened <= t < hi else []

    @staticmethod
    def shard_id(gen: int, i: int) -> str:
        """The shard id of (gen, i)."""
        return f"shardId-{gen:07d}-{i:05d}"

    @staticmethod
    def parse(shard_id: str) -> tuple[int, int]:
        """(gen, i) of a shard id."""
        _, gen, i = shard_id.split("-")
        return int(gen), int(i)

    def seq(self, gen: int, t: float, i: int) -> str:
        """A sequence number ordered by generation, then time, within a shard."""
        return f"{gen:06d}{round(t * 1000):015d}{i:05d}"

    def listed(self, now: float) -> tuple[list[tuple[int, int]], dict[tuple[int, int], int]]:
        """Shards listed at ``now`` in creation order (open ones and closed ones within retention), and their index.

        Cached for LISTING_CACHE_S: a discovery asks for every page, and the harness's CPU counts as the worker's.
        """
        if now - self._listing[0] < LISTING_CACHE_S:
            return self._listing[1], self._listing[2]
        shards: list[tuple[float, int, int]] = []
        for i in range(self.n):
            gen = self.generation(now, i)
            shards.append((self.span(gen, i)[0], gen, i))
            while gen > 0 and now - self.span(gen - 1, i)[1] <= self.retention_s:
                gen -= 1
                shards.append((self.span(gen, i)[0], gen, i))
        listed = [(gen, i) for _, gen, i in sorted(shards)]
        self._listing = (now, listed, {shard: n for n, shard in enumerate(listed)})
        return listed, self._listing[2]

    # --- dynamodb / dynamodbstreams clients -------------------------------------------------------
    async def describe_table(self, TableName: str) -> dict[str, Any]:  # noqa: N803 - botocore's names
        """DescribeTable: the stream's ARN."""
        return {
            "Table": {
                "TableName": TableName,
                "LatestStreamArn": ARN,
                "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            }
        }

    async def list_streams(self, TableName: str) -> dict[str, Any]:  # noqa: N803 - botocore's name
        """ListStreams: this one stream (a table never replaced)."""
        return {"Streams": [{"StreamArn": ARN, "TableName": TableName, "StreamLabel": "sim"}]}

    async def describe_stream(
        self,
        StreamArn: str,  # noqa: ARG002, N803 - botocore's names
        Limit: int = PAGE,  # noqa: N803
        ExclusiveStartShardId: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """DescribeStream: pages of 100 in creation order."""
        now = time.time()
        listed, index = self.listed(now)
        start = 0
        if ExclusiveStartShardId is not None:
            # A shard trimmed since the previous page: start over (a listing may repeat, never skip).
            start = index.get(self.parse(ExclusiveStartShardId), -1) + 1
        page = listed[start : start + min(Limit, PAGE)]
        desc: dict[str, Any] = {
            "StreamArn": ARN,
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "Shards": [self._describe(gen, i, now) for gen, i in page],
        }
        if start + len(page) < len(listed):
            desc["LastEvaluatedShardId"] = self.shard_id(*page[-1])
        return {"StreamDescription": desc}

    def _describe(self, gen: int, i: int, now: float) -> dict[str, Any]:
        opened, closed = self.span(gen, i)
        rng = {"StartingSequenceNumber": self.seq(gen, opened, i)}
        if now >= closed:
            times = self.record_times(gen, i, now)
            rng["EndingSequenceNumber"] = self.seq(gen, times[-1] if times else opened, i)
        out: dict[str, Any] = {"ShardId": self.shard_id(gen, i), "SequenceNumberRange": rng}
        if gen > 0:
            out["ParentShardId"] = self.shard_id(gen - 1, i)
        return out

    async def get_shard_iterator(
        self,
        StreamArn: str,  # noqa: ARG002, N803 - botocore's names
        ShardId: str,  # noqa: N803
        ShardIteratorType: str,  # noqa: N803
        SequenceNumber: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """An iterator is 'shard|time after which records are returned'."""
        if ShardIteratorType in ("AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER") and SequenceNumber:
            after = int(SequenceNumber[6:21]) / 1000 - (0.0005 if ShardIteratorType == "AT_SEQUENCE_NUMBER" else 0)
        elif ShardIteratorType == "LATEST":
            after = time.time()
        else:
            after = -1.0
        return {"ShardIterator": f"{ShardId}|{after!r}"}

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        """Records after the iterator's time; no NextShardIterator once a closed shard is read."""
        shard_id, after_s = ShardIterator.split("|")
        gen, i = self.parse(shard_id)
        after = float(after_s)
        now = time.time()
        times = [t for t in self.record_times(gen, i, now) if t > after + 0.0002][:Limit]
        if self.busy(i):
            self.counters.busy_calls += 1
        else:
            self.counters.idle_calls += 1
            self.counters.idle_empty += not times
        out: dict[str, Any] = {"Records": [self._record(gen, i, t) for t in times]}
        last = times[-1] if times else after
        if not (now >= self.span(gen, i)[1] and not [t for t in self.record_times(gen, i, now) if t > last + 0.0002]):
            out["NextShardIterator"] = f"{shard_id}|{last!r}"
        return out

    def _record(self, gen: int, i: int, t: float) -> dict[str, Any]:
        kind = "busy" if self.busy(i) else "wake"
        key = {"pk": {"S": f"s{i}-{round(t * 1000) % 20}"}}
        image = {**key, "t": {"N": repr(t)}, "kind": {"S": kind}, "g": {"N": str(gen)}}
        return {
            "eventID": f"{gen}-{i}-{t!r}",
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": dt.datetime.fromtimestamp(t, tz=dt.UTC),
                "Keys": key,
                "NewImage": image,
                "SequenceNumber": self.seq(gen, t, i),
                "SizeBytes": 60,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
