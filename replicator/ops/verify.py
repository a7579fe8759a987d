"""Compare the source and target tables item by item, and optionally repair what differs.

Both tables are read with parallel Scans (``TotalSegments``) and consistent reads. Each item is reduced
to its key and a digest of its attributes, so memory grows with the number of keys, not with item sizes.

What counts as equal:

- replication markers (``replication.*_attribute``) and any ``ignore_attributes`` are left out;
- a tombstone (an item with the tombstone attribute) counts as absent, in either table;
- with filters or transforms configured, each source item is first run through the same pipeline as a
  synthetic INSERT record, so the target is compared with what replication would have made of it: a
  filtered item is expected to be absent, a transformed one to be in its transformed shape;
- numbers compare by value (``1.50`` equals ``1.5``), sets in any order (``ops.compare``, the one rule
  of item equality).

Repair writes through the very ``ConditionalWriter`` that replication uses, so it obeys the same
last-writer-wins conditions: an item is rewritten from the source with a fresh version (with
``timestamp_attribute`` configured, the item's own timestamp: a newer write in the target wins), and a
target item missing from the source gets a delete (a tombstone by default) with a fresh version.
Run it when both sides are quiet; a write in flight shows up as a difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from replicator.aws.clients import TargetClient, open_clients
from replicator.core.errors import RecordRejectedError, ReplicatorError, TransformError
from replicator.core.records import Item, from_lambda_event, key_identity
from replicator.core.retry import retrying
from replicator.observe.metrics import Metrics
from replicator.ops.compare import KeyId, item_digest
from replicator.ops.synthetic import REPAIR_SEQUENCE, STREAM_EVENT_SOURCE, synthetic_insert
from replicator.ops.tablescan import SCAN_RETRY, item_count, key_attributes, scan_table
from replicator.pipeline import version as versions
from replicator.pipeline.origin import strip_markers
from replicator.runtime.wiring import build_processor
from replicator.sink.writer import Write

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.config import Config
    from replicator.pipeline.stages import Pipeline
    from replicator.sink.writer import ConditionalWriter

DifferenceKind = Literal["missing_in_target", "missing_in_source", "different", "transform_failed"]


class Progress(Protocol):
    """Receives progress as it happens (the command shows it with rich)."""

    def total(self, phase: str, count: int | None) -> None:
        """Set the expected number of steps in ``phase`` (None: unknown)."""

    def advance(self, phase: str, count: int) -> None:
        """``count`` more steps of ``phase`` are done."""


class _NoProgress:
    def total(self, phase: str, count: int | None) -> None:
        del phase, count

    def advance(self, phase: str, count: int) -> None:
        del phase, count


@dataclasses.dataclass(frozen=True, slots=True)
class Difference:
    """One differing key (keys only: never other attribute values)."""

    kind: DifferenceKind
    keys: Item


@dataclasses.dataclass(slots=True)
class VerifyReport:
    """What the comparison found, and what repair did."""

    source_items: int = 0
    """Live source items scanned (tombstones not counted)."""
    target_items: int = 0
    """Live target items scanned (tombstones not counted)."""
    source_tombstones: int = 0
    target_tombstones: int = 0
    filtered: int = 0
    """Source items the pipeline filters out: expected to be absent from the target."""
    differences: list[Difference] = dataclasses.field(default_factory=list)
    repaired: int = 0
    repair_superseded: int = 0
    """Repairs refused by last-writer-wins: the target holds a newer version (it may still replicate back)."""
    repair_failed: int = 0
    duration_s: float = 0.0

    @property
    def diverged(self) -> bool:
        """True when any key differs."""
        return bool(self.differences)

    @property
    def unrepaired(self) -> int:
        """Differences that no successful repair write addressed."""
        return len(self.differences) - self.repaired

    def count(self, kind: DifferenceKind) -> int:
        """Count the differences of one kind."""
        return sum(1 for d in self.differences if d.kind == kind)


@dataclasses.dataclass(slots=True)
class _Entry:
    digest: bytes
    keys: Item
    """Target-side keys (after transforms, for a source entry)."""
    source_keys: Item | None = None
    """For a source entry: the item's keys in the source table (to read it again for repair)."""


class Verifier:
    """One comparison of the configured source and target tables (and its repair)."""

    def __init__(
        self,
        cfg: Config,
        *,
        source_client: DynamoDBClient,
        target_client: TargetClient,
        segments: int = 4,
        ignore_attributes: frozenset[str] = frozenset(),
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Bind to the tables; no I/O."""
        if segments < 1:
            raise ValueError("segments must be at least 1")
        if cfg.source.table is None:
            raise ReplicatorError("verify needs source.table")
        self.cfg = cfg
        self.source_table: str = cfg.source.table
        self.source = source_client
        self.target = target_client.client
        self.segments = segments
        self.progress: Progress = progress or _NoProgress()
        self.metrics = Metrics()
        self._clock = clock
        processor = build_processor(
            cfg,
            target_client=target_client,
            metrics=self.metrics,
            dead_letters=None,
            source_client=source_client,
        )
        # The very pipeline and conditional writer replication runs.
        self.pipeline: Pipeline = processor.pipeline
        self.writer: ConditionalWriter = processor.writer
        rep = cfg.replication
        self._tombstone = rep.tombstone_attribute
        self.ignore = rep.marker_attributes | ignore_attributes
        self._uses_pipeline = bool(cfg.filters or cfg.transforms)
        self._failed: list[Difference] = []

    async def run(self, *, repair: bool = False) -> VerifyReport:
        """Scan both tables, compare, and repair the differences when asked."""
        started = time.monotonic()
        report = VerifyReport()
        self._failed = []
        source_keys, target_keys = await asyncio.gather(
            key_attributes(self.source, self.source_table, self.metrics),
            key_attributes(self.target, self.cfg.target.table, self.metrics),
        )
        expected: dict[KeyId, _Entry] = {}
        actual: dict[KeyId, _Entry] = {}
        now_s = self._clock()

        def on_source_page(items: list[Item]) -> None:
            for item in items:
                self._take_source(item, source_keys, now_s, expected, report)
            self.progress.advance("source", len(items))

        def on_target_page(items: list[Item]) -> None:
            for item in items:
                keys = {k: item[k] for k in target_keys}
                if self._tombstone in item:
                    report.target_tombstones += 1
                    continue
                report.target_items += 1
                actual[key_identity(keys)] = _Entry(item_digest(item, self.ignore), keys)
            self.progress.advance("target", len(items))

        totals = await asyncio.gather(
            item_count(self.source, self.source_table), item_count(self.target, self.cfg.target.table)
        )
        self.progress.total("source", totals[0])
        self.progress.total("target", totals[1])
        await asyncio.gather(
            scan_table(
                self.source,
                self.source_table,
                segments=self.segments,
                on_page=on_source_page,
                metrics=self.metrics,
            ),
            scan_table(
                self.target,
                self.cfg.target.table,
                segments=self.segments,
                on_page=on_target_page,
                metrics=self.metrics,
            ),
        )
        repairs: list[tuple[Difference, _Entry]] = []
        for key_id, want in expected.items():
            have = actual.get(key_id)
            if have is None:
                repairs.append((Difference("missing_in_target", want.keys), want))
            elif have.digest != want.digest:
                repairs.append((Difference("different", want.keys), want))
        repairs.extend(
            (Difference("missing_in_source", have.keys), have)
            for key_id, have in actual.items()
            if key_id not in expected
        )
        report.differences.extend(d for d, _ in repairs)
        report.differences.extend(self._failed)
        if repair and repairs:
            await self._repair(repairs, report)
        report.duration_s = time.monotonic() - started
        return report

    def _take_source(
        self,
        item: Item,
        key_names: tuple[str, ...],
        now_s: float,
        expected: dict[KeyId, _Entry],
        report: VerifyReport,
    ) -> None:
        keys = {k: item[k] for k in key_names}
        if self._tombstone in item:
            report.source_tombstones += 1
            return
        report.source_items += 1
        if not self._uses_pipeline:
            expected[key_identity(keys)] = _Entry(item_digest(item, self.ignore), keys, keys)
            return
        write = self._through_pipeline(item, keys, now_s)
        if write is None:
            report.filtered += 1
        elif isinstance(write, Difference):
            self._failed.append(write)
        elif write.item is not None:
            expected[key_identity(write.keys)] = _Entry(item_digest(write.item, self.ignore), write.keys, keys)

    def _through_pipeline(self, item: Item, keys: Item, now_s: float) -> Write | Difference | None:
        try:
            return self._replicated(item, keys, now_s)
        except (TransformError, RecordRejectedError):
            return Difference("transform_failed", keys)

    def _replicated(self, item: Item, keys: Item, now_s: float) -> Write | None:
        """Return what replication would write for a source item changed at ``now_s`` (None: filtered)."""
        # Markers are stripped first: a source item that arrived by replication would read as an echo.
        clean = strip_markers(item, self.cfg.replication.marker_attributes) or {}
        record = synthetic_insert(
            clean,
            keys,
            created_s=now_s,
            sequence_number=REPAIR_SEQUENCE,
            old_image=None,
            shard_id="verify",
            event_source=STREAM_EVENT_SOURCE,
        )
        out = self.pipeline.run(record)
        return out if isinstance(out, Write) else None

    async def _repair(self, repairs: list[tuple[Difference, _Entry]], report: VerifyReport) -> None:
        self.progress.total("repair", len(repairs))
        semaphore = asyncio.Semaphore(self.cfg.target.max_concurrent_writes)

        async def one(diff: Difference, entry: _Entry) -> None:
            async with semaphore:
                try:
                    write = await self._repair_write(diff, entry)
                    outcome = (
                        "superseded"
                        if write is None
                        else await retrying(
                            "PutItem",
                            lambda: self.writer.write(write),
                            policy=SCAN_RETRY,
                            metrics=self.metrics,
                        )
                    )
                except Exception:  # noqa: BLE001 - counted and reported; the other repairs go on
                    report.repair_failed += 1
                else:
                    if outcome == "replicated":
                        report.repaired += 1
                    else:
                        report.repair_superseded += 1
            self.progress.advance("repair", 1)

        await asyncio.gather(*(one(d, e) for d, e in repairs))

    async def _repair_write(self, diff: Difference, entry: _Entry) -> Write | None:
        now_s = self._clock()
        if diff.kind == "missing_in_source":
            return self._delete_write(entry.keys, now_s)
        assert entry.source_keys is not None  # noqa: S101 - set for every source entry
        source_keys = entry.source_keys
        resp: Mapping[str, Any] = await retrying(
            "GetItem",
            lambda: self.source.get_item(TableName=self.source_table, Key=source_keys, ConsistentRead=True),
            policy=SCAN_RETRY,
            metrics=self.metrics,
        )
        item = resp.get("Item")
        if item is None or self._tombstone in item:
            # Deleted since the scan: the target item must go too.
            return self._delete_write(entry.keys, now_s)
        return self._replicated(item, source_keys, now_s)

    def _delete_write(self, keys: Item, now_s: float) -> Write:
        rep = self.cfg.replication
        now_us = int(now_s * 1_000_000)
        app_us: int | None = None
        if rep.timestamp_attribute is not None:
            unit_us = 1_000_000 // {"s": 1, "ms": 1_000, "us": 1_000_000}[rep.timestamp_unit]
            app_us = -(-now_us // unit_us) * unit_us
            now_us = app_us
        version = versions.encode(now_us, self.cfg.source.region, REPAIR_SEQUENCE)
        record = from_lambda_event(
            {
                "eventID": "verify",
                "eventName": "REMOVE",
                "dynamodb": {
                    "Keys": keys,
                    "SequenceNumber": REPAIR_SEQUENCE,
                    "ApproximateCreationDateTime": now_s,
                },
            },
            shard_id="verify",
        )
        return Write(keys=keys, item=None, version=version, app_timestamp_us=app_us, record=record)


async def verify(
    cfg: Config,
    *,
    segments: int = 4,
    repair: bool = False,
    ignore_attributes: frozenset[str] = frozenset(),
    progress: Progress | None = None,
) -> VerifyReport:
    """Open the configured clients and run one comparison (and repair)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, cfg)
        verifier = Verifier(
            cfg,
            source_client=clients.source,
            target_client=clients.target,
            segments=segments,
            ignore_attributes=ignore_attributes,
            progress=progress,
        )
        return await verifier.run(repair=repair)
