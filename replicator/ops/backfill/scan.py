"""The backfill engine: a parallel, resumable, rate-limited Scan whose items go through the pipeline.

A parallel Scan (``TotalSegments``) reads the source; each scanned item becomes a synthetic INSERT
ChangeRecord (``ops.synthetic``) that runs through the same pipeline (filters, transforms, markers) and the
same ConditionalWriter as streamed changes, so last-writer-wins decides between a backfilled copy and a
streamed change. Why the versions chosen here never let a stale copy overwrite a newer change:
DESIGN.md, "Backfill". In short: a page of items gets the time its Scan request was *sent*,
minus a safety margin, as its ApproximateCreationDateTime and ``0`` as its sequence number, and the
Scan reads with ConsistentRead, so every change made after an item was read carries a greater version.

Resumable: a segment's LastEvaluatedKey is saved (``progress.py``) after its page's items reached their
outcomes; a re-run continues there.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import time
from typing import TYPE_CHECKING, Any

import structlog

from replicator.core.retry import RetryPolicy, retrying
from replicator.ops.backfill.progress import SegmentProgress
from replicator.ops.backfill.ratelimit import TokenBucket
from replicator.ops.synthetic import BACKFILL_EVENT_SOURCE, BACKFILL_SEQUENCE, synthetic_insert

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.records import ChangeRecord, Item
    from replicator.observe.metrics import Metrics
    from replicator.ops.backfill.progress import ProgressStore
    from replicator.pipeline.processor import BatchProcessor

log = structlog.get_logger(__name__)

DEFAULT_SAFETY_MARGIN_S = 60.0
"""Subtracted from a page's read time. It must exceed the stream's timestamp granularity plus clock skew:
DynamoDB Streams rounds ApproximateCreationDateTime down to the second, DynamoDB Local to the minute."""
MAX_PAGE_ITEMS = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class BackfillSettings:
    """How the Scan runs."""

    segments: int = 4
    rate_per_s: float | None = None
    """Items per second over all segments; None: no limit."""
    page_size: int = MAX_PAGE_ITEMS
    safety_margin_s: float = DEFAULT_SAFETY_MARGIN_S
    consistent_read: bool = True
    restart: bool = False
    """Ignore saved progress and scan from the beginning."""


@dataclasses.dataclass(slots=True)
class BackfillSummary:
    """What the backfill did (this run only; resumed segments count what this run scanned)."""

    scanned: int = 0
    tombstones: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    segments: int = 0
    segments_resumed: int = 0
    segments_already_done: int = 0
    elapsed_s: float = 0.0

    @property
    def written(self) -> int:
        """Items written to the target."""
        return self.outcomes["replicated"]

    @property
    def superseded(self) -> int:
        """Items whose target copy was already newer (a streamed change won)."""
        return self.outcomes["superseded"]

    @property
    def filtered(self) -> int:
        """Items a filter or transform dropped (plus replicated items skipped as echoes)."""
        return self.outcomes["filtered"] + self.outcomes["echo_skipped"] + self.outcomes["ttl_skipped"]

    @property
    def dead_lettered(self) -> int:
        """Items sent to the dead-letter destination."""
        return self.outcomes["dead_lettered"]

    def lines(self) -> list[str]:
        """Render the summary for people."""
        return [
            f"scanned      {self.scanned}",
            f"written      {self.written}",
            f"superseded   {self.superseded}  (the target already held a newer change)",
            f"filtered     {self.filtered}",
            f"dead-letters {self.dead_lettered}",
            f"tombstones   {self.tombstones}  (deleted items in the source, not copied)",
            (
                f"segments     {self.segments} ({self.segments_resumed} resumed, "
                f"{self.segments_already_done} already done)"
            ),
            f"elapsed      {self.elapsed_s:.1f} s",
        ]


class Backfill:
    """Scans the source table in parallel segments and feeds the items to a BatchProcessor."""

    def __init__(
        self,
        *,
        source_client: DynamoDBClient,
        table: str,
        key_names: tuple[str, ...],
        processor: BatchProcessor,
        progress_store: ProgressStore,
        settings: BackfillSettings,
        metrics: Metrics,
        tombstone_attribute: str,
        on_page: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
        progress_key: str | None = None,
    ) -> None:
        """Wire the parts; no I/O. ``progress_key``: what progress is saved under (default: ``table``)."""
        self._client = source_client
        self.table = table
        # With several targets each has its own progress: a page done for one is not done for another.
        self.progress_key = progress_key or table
        self.key_names = key_names
        self.processor = processor
        self.progress_store = progress_store
        self.settings = settings
        self.metrics = metrics
        self.tombstone_attribute = tombstone_attribute
        self.on_page = on_page
        self.clock = clock
        self.summary = BackfillSummary(segments=settings.segments)
        self._bucket = TokenBucket(settings.rate_per_s) if settings.rate_per_s else None
        self._retry = RetryPolicy(max_attempts=None, max_delay_s=10)

    async def run(self) -> BackfillSummary:
        """Scan every segment not yet done; return the summary of this run."""
        start = time.monotonic()
        segs = self.settings.segments
        if self.settings.restart:
            await self.progress_store.clear(self.progress_key)
        saved = await self.progress_store.load(self.progress_key, segs)
        todo = []
        for i in range(segs):
            progress = saved.get(i, SegmentProgress(i))
            if progress.done:
                self.summary.segments_already_done += 1
                continue
            if progress.last_key is not None:
                self.summary.segments_resumed += 1
            todo.append(progress)
        log.info(
            "backfill_started",
            table=self.table,
            segments=segs,
            to_scan=len(todo),
            resumed=self.summary.segments_resumed,
            rate_per_s=self.settings.rate_per_s,
        )
        async with asyncio.TaskGroup() as group:
            for progress in todo:
                group.create_task(self._segment(progress))
        self.summary.elapsed_s = time.monotonic() - start
        log.info("backfill_finished", table=self.table, scanned=self.summary.scanned, **dict(self.summary.outcomes))
        return self.summary

    def _page_limit(self) -> int:
        limit = self.settings.page_size
        if self.settings.rate_per_s:
            # A page is charged after it returns: keep one page near a second's worth so bursts stay small.
            limit = min(limit, max(1, int(self.settings.rate_per_s)))
        return max(1, min(limit, MAX_PAGE_ITEMS))

    def _records(self, items: list[Item], sent_at: float, segment: int) -> list[ChangeRecord]:
        # Dated before the page's read and losing ties: a change made after the read always wins.
        created_s = sent_at - self.settings.safety_margin_s
        records = []
        for item in items:
            if self.tombstone_attribute in item:
                # A replicated delete kept as a tombstone: the key is deleted in the source.
                self.summary.tombstones += 1
                continue
            records.append(
                synthetic_insert(
                    item,
                    {name: item[name] for name in self.key_names},
                    created_s=created_s,
                    sequence_number=BACKFILL_SEQUENCE,
                    # The source's state, whoever wrote it last: an application change, bumped past its marker.
                    old_image=item,
                    shard_id=f"backfill-{segment}",
                    event_source=BACKFILL_EVENT_SOURCE,
                )
            )
        return records

    async def _segment(self, progress: SegmentProgress) -> None:
        segs = self.settings.segments
        while True:
            if self._bucket is not None:
                await self._bucket.wait_ready()
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "Limit": self._page_limit(),
                "ConsistentRead": self.settings.consistent_read,
            }
            if segs > 1:
                kwargs["Segment"] = progress.segment
                kwargs["TotalSegments"] = segs
            if progress.last_key is not None:
                kwargs["ExclusiveStartKey"] = progress.last_key
            # The time the request is sent: every item of the page is read at or after it.
            sent_at = self.clock()
            page: Mapping[str, Any] = await retrying(
                "Scan",
                functools.partial(self._client.scan, **kwargs),
                policy=self._retry,
                metrics=self.metrics,
            )
            items: list[Item] = page.get("Items", [])
            if self._bucket is not None:
                self._bucket.take(len(items))
            records = self._records(items, sent_at, progress.segment)
            if records:
                result = await self.processor.process(records)
                self.summary.outcomes.update(result.outcomes)
            self.summary.scanned += len(items)
            progress.scanned += len(items)
            progress.last_key = page.get("LastEvaluatedKey")
            progress.done = progress.last_key is None
            # Saved only after the page's items reached their outcomes: a crash re-reads the page.
            await retrying(
                "SaveBackfillProgress",
                lambda: self.progress_store.save(self.progress_key, segs, progress),
                policy=self._retry,
                metrics=self.metrics,
            )
            if self.on_page is not None:
                self.on_page(len(items))
            if progress.done:
                return
