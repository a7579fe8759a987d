"""The synthetic INSERT records backfill and verify make of scanned items, pinned field by field."""

from __future__ import annotations

from typing import Any

from replicator.aws.clients import TargetClient
from replicator.core.config import Config, ReplicationConfig
from replicator.core.records import ChangeRecord, Item, epoch_us
from replicator.observe.metrics import Metrics
from replicator.ops.backfill import Backfill, BackfillSettings, BackfillSummary, SegmentProgress
from replicator.ops.verify import Verifier
from replicator.pipeline.origin import classify
from replicator.pipeline.processor import BatchResult
from replicator.pipeline.stages import Pipeline
from replicator.pipeline.version import TIEBREAK_DIGITS, change_version

MARKED: Item = {
    "pk": {"S": "a"},
    "v": {"N": "1"},
    "_rep_version": {"S": f"{5 * 10**6:017d}#eu-west-1#{'0' * TIEBREAK_DIGITS}"},
    "_rep_origin": {"S": "eu-west-1"},
}
CLEAN: Item = {"pk": {"S": "a"}, "v": {"N": "1"}}


class _Pages:
    """A source client whose Scan returns one page per segment: ``items`` in ``segment``, none elsewhere."""

    def __init__(self, items: list[Item], segment: int) -> None:
        self.items = items
        self.segment = segment

    async def scan(self, **kwargs: Any) -> dict[str, Any]:
        return {"Items": self.items if kwargs.get("Segment", 0) == self.segment else []}


class _Capture:
    """A BatchProcessor stand-in that keeps the records it is given."""

    def __init__(self) -> None:
        self.records: list[ChangeRecord] = []

    async def process(self, records: list[ChangeRecord]) -> BatchResult:
        self.records.extend(records)
        return BatchResult()


class _MemoryProgress:
    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        del table, segments
        return {}

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        del table, segments, progress

    async def clear(self, table: str) -> None:
        del table


async def _backfilled(
    items: list[Item], *, read_time_s: float, safety_margin_s: float, segment: int
) -> tuple[list[ChangeRecord], BackfillSummary]:
    """Run the backfill engine over one page of ``items`` read at ``read_time_s`` in ``segment``."""
    captured = _Capture()
    backfill = Backfill(
        source_client=_Pages(items, segment),
        table="T",
        key_names=("pk",),
        processor=captured,  # type: ignore[arg-type]
        progress_store=_MemoryProgress(),
        settings=BackfillSettings(segments=segment + 1, safety_margin_s=safety_margin_s),
        metrics=Metrics(),
        tombstone_attribute="_rep_deleted",
        clock=lambda: read_time_s,
    )
    summary = await backfill.run()
    return captured.records, summary


async def test_backfill_makes_an_insert_dated_before_its_read_that_loses_ties_and_updates_itself() -> None:
    """Backfill's record: read time minus margin, sequence 0, old image = the item, shard backfill-<segment>."""
    tombstone: Item = {"pk": {"S": "gone"}, "_rep_deleted": {"BOOL": True}}
    records, summary = await _backfilled([MARKED, tombstone], read_time_s=1000.5, safety_margin_s=60.0, segment=1)
    assert summary.tombstones == 1
    assert records == [
        ChangeRecord(
            event_name="INSERT",
            keys={"pk": {"S": "a"}},
            new_image=MARKED,
            old_image=MARKED,
            sequence_number="0",
            approximate_creation_time_us=940_500_000,
            shard_id="backfill-1",
            event={
                "eventID": "backfill-1",
                "eventName": "INSERT",
                "eventSource": "replicator:backfill",
                "dynamodb": {
                    "ApproximateCreationDateTime": 940.5,
                    "Keys": {"pk": {"S": "a"}},
                    "NewImage": MARKED,
                    "SequenceNumber": "0",
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            },
            is_ttl_delete=False,
        )
    ]
    assert list(records[0].event["dynamodb"]) == [
        "ApproximateCreationDateTime",
        "Keys",
        "NewImage",
        "SequenceNumber",
        "StreamViewType",
    ]


async def test_synthetic_record_is_versioned_before_its_read_and_below_a_streamed_change() -> None:
    """A scanned item's version is read time minus margin, tie-breaker 0, and it is an application change."""
    item = {"pk": {"S": "a"}, "v": {"N": "1"}, "_rep_version": {"S": "00000000000000001#eu-west-1#0"}}
    (record,), _ = await _backfilled([item], read_time_s=1000.0, safety_margin_s=60.0, segment=2)
    assert record.keys == {"pk": {"S": "a"}}
    assert record.event["dynamodb"]["NewImage"] == item
    # Carries another region's marker, yet it is the source's state: not skipped as an echo.
    assert classify(record, ReplicationConfig()) == "application"
    version, _ = change_version(
        record,
        origin="us-east-1",
        version_attribute="_rep_version",
        timestamp_attribute=None,
        timestamp_unit="ms",
    )
    assert version == f"{940 * 1_000_000:017d}#us-east-1#{'0' * TIEBREAK_DIGITS}"


class _Tables:
    """Source and target clients over in-memory items (DescribeTable, Scan, GetItem, PutItem)."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.puts: list[dict[str, Any]] = []

    async def describe_table(self, **kwargs: Any) -> dict[str, Any]:
        del kwargs
        return {"Table": {"KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}], "ItemCount": len(self.items)}}

    async def scan(self, **kwargs: Any) -> dict[str, Any]:
        del kwargs
        return {"Items": self.items}

    async def get_item(self, **kwargs: Any) -> dict[str, Any]:
        return {"Item": next(i for i in self.items if i["pk"] == kwargs["Key"]["pk"])}

    async def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.puts.append(kwargs)
        return {}


class _Recording:
    """Wraps the verifier's pipeline to keep every record it runs."""

    def __init__(self, inner: Pipeline) -> None:
        self.inner = inner
        self.records: list[ChangeRecord] = []

    def run(self, record: ChangeRecord) -> object:
        self.records.append(record)
        return self.inner.run(record)


def _verify_record(now_s: float) -> ChangeRecord:
    return ChangeRecord(
        event_name="INSERT",
        keys={"pk": {"S": "a"}},
        new_image=CLEAN,
        old_image=None,
        sequence_number="9" * TIEBREAK_DIGITS,
        approximate_creation_time_us=epoch_us(now_s),
        shard_id="verify",
        event={
            "eventID": "verify",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "Keys": {"pk": {"S": "a"}},
                "NewImage": CLEAN,
                "SequenceNumber": "9" * TIEBREAK_DIGITS,
                "ApproximateCreationDateTime": now_s,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        is_ttl_delete=False,
    )


async def test_verify_makes_an_insert_of_the_unmarked_item_dated_now_that_wins_ties() -> None:
    """Verify's records (compare, then repair): markers stripped, no old image, now, sequence all nines."""
    cfg = Config(
        source={"region": "us-east-1", "table": "src"},
        target={"region": "eu-west-1", "table": "dst"},
        transforms=[{"type": "set", "attribute": "copied", "value": {"BOOL": True}}],
    )
    times = iter([2000.25, 2100.0])
    source, target = _Tables([MARKED]), _Tables([{"pk": {"S": "a"}, "v": {"N": "2"}}])
    verifier = Verifier(
        cfg, source_client=source, target_client=TargetClient(target), segments=1, clock=lambda: next(times)
    )
    recording = _Recording(verifier.pipeline)
    verifier.pipeline = recording  # type: ignore[assignment]
    report = await verifier.run(repair=True)
    assert [d.kind for d in report.differences] == ["different"]
    assert report.repaired == 1
    assert recording.records == [_verify_record(2000.25), _verify_record(2100.0)]
    (put,) = target.puts
    assert put["Item"]["_rep_version"] == {"S": f"{2100 * 10**6:017d}#us-east-1#{'9' * TIEBREAK_DIGITS}"}
