"""Backfill: copy a source table's current items into the target through the replication pipeline.

A parallel Scan (``TotalSegments``) reads the source; each scanned item becomes a synthetic INSERT
ChangeRecord that runs through the same pipeline (filters, transforms, markers) and the same
ConditionalWriter as streamed changes, so last-writer-wins decides between a backfilled copy and a
streamed change. Why the versions chosen here never let a stale copy overwrite a newer change:
DESIGN.md, "Backfill". In short: a page of items gets the time its Scan request was *sent*,
minus a safety margin, as its ApproximateCreationDateTime and ``0`` as its sequence number, and the
Scan reads with ConsistentRead, so every change made after an item was read carries a greater version.

Resumable: after a page's items reached their outcomes, the segment's LastEvaluatedKey is saved (a JSON
file next to SQLite checkpoints, or items in the DynamoDB checkpoint table); a re-run continues there.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from replicator.aws.clients import open_clients
from replicator.core.errors import ReplicatorError
from replicator.core.records import ChangeRecord, Item
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.config import Config
    from replicator.pipeline.processor import BatchProcessor, DeadLetterSink

log = structlog.get_logger(__name__)

DEFAULT_SAFETY_MARGIN_S = 60.0
"""Subtracted from a page's read time. It must exceed the stream's timestamp granularity plus clock skew:
DynamoDB Streams rounds ApproximateCreationDateTime down to the second, DynamoDB Local to the minute."""
MAX_PAGE_ITEMS = 1000
BACKFILL_SEQUENCE = "0"
"""Tie-breaker of every backfilled version: the streamed copy of the same change (same time) wins."""


class BackfillError(ReplicatorError):
    """The backfill cannot run as asked (e.g. the saved progress is for another segment count)."""


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
class SegmentProgress:
    """How far one Scan segment has got."""

    segment: int
    last_key: Item | None = None
    done: bool = False
    scanned: int = 0


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


# --- progress stores ------------------------------------------------------------------------------


class ProgressStore(Protocol):
    """Where segment progress lives between runs. ``save`` is durable when it returns."""

    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        """Return saved progress of a backfill of ``table`` in ``segments`` segments (empty if none).

        Raises BackfillError when saved progress exists for a different segment count.
        """
        ...

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        """Store one segment's progress."""
        ...

    async def clear(self, table: str) -> None:
        """Forget the table's progress (``--restart``)."""
        ...


def _encode_key(key: Item | None) -> Any:  # noqa: ANN401 - JSON value
    if key is None:
        return None
    out: dict[str, Any] = {}
    for name, value in key.items():
        ((type_, scalar),) = value.items()
        if type_ == "B":
            out[name] = {"B64": base64.b64encode(scalar).decode("ascii")}
        else:
            out[name] = {type_: scalar}
    return out


def _decode_key(raw: Any) -> Item | None:  # noqa: ANN401 - JSON value
    if raw is None:
        return None
    out: Item = {}
    for name, value in raw.items():
        if "B64" in value:
            out[name] = {"B": base64.b64decode(value["B64"])}
        else:
            out[name] = dict(value)
    return out


def _mismatch(table: str, saved: int, asked: int) -> BackfillError:
    return BackfillError(
        f"saved backfill progress for {table} is for --segments {saved}, not {asked}: "
        f"re-run with --segments {saved} to resume, or pass --restart to scan from the beginning"
    )


class JsonProgressStore:
    """Progress in a JSON file (replaced atomically on every save)."""

    def __init__(self, path: Path) -> None:
        """Remember the path; nothing is read yet."""
        self.path = path
        self._lock = asyncio.Lock()
        self._doc: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._doc is None:
            try:
                self._doc = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                self._doc = {}
        return self._doc

    def _write(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        """Return saved progress for the table (see ProgressStore)."""
        async with self._lock:
            doc = await asyncio.to_thread(self._read)
        job = doc.get(table)
        if not job:
            return {}
        if job["segments"] != segments:
            raise _mismatch(table, job["segments"], segments)
        return {
            int(i): SegmentProgress(
                int(i), _decode_key(s.get("last_key")), bool(s.get("done")), int(s.get("scanned", 0))
            )
            for i, s in job["progress"].items()
        }

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        """Store one segment's progress (file rewritten atomically)."""
        async with self._lock:
            doc = await asyncio.to_thread(self._read)
            job = doc.setdefault(table, {"segments": segments, "progress": {}})
            job["progress"][str(progress.segment)] = {
                "last_key": _encode_key(progress.last_key),
                "done": progress.done,
                "scanned": progress.scanned,
                "updated_at": time.time(),
            }
            await asyncio.to_thread(self._write, doc)

    async def clear(self, table: str) -> None:
        """Forget the table's progress."""
        async with self._lock:
            doc = await asyncio.to_thread(self._read)
            if doc.pop(table, None) is not None:
                await asyncio.to_thread(self._write, doc)


class DynamoDBProgressStore:
    """Progress as items of the DynamoDB checkpoint table: ``streamArn = backfill#<table>``, one a segment."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        """Bind to the checkpoint table (created by the checkpoint store's ``start``)."""
        self._client = client
        self.table = table

    @staticmethod
    def _hash(table: str) -> str:
        return f"backfill#{table}"

    async def _items(self, table: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "streamArn = :s",
            "ExpressionAttributeValues": {":s": {"S": self._hash(table)}},
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = await self._client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        """Return saved progress for the table (see ProgressStore)."""
        out: dict[int, SegmentProgress] = {}
        for item in await self._items(table):
            saved = int(item["segments"]["N"])
            if saved != segments:
                raise _mismatch(table, saved, segments)
            seg = int(item["segment"]["N"])
            last = item.get("lastKey", {}).get("S")
            out[seg] = SegmentProgress(
                seg,
                _decode_key(json.loads(last)) if last else None,
                bool(item.get("shardEnd", {}).get("BOOL", False)),
                int(item.get("scanned", {}).get("N", "0")),
            )
        return out

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        """Put the segment's item."""
        item: dict[str, Any] = {
            "streamArn": {"S": self._hash(table)},
            "shardId": {"S": f"segment#{progress.segment:05d}"},
            "segment": {"N": str(progress.segment)},
            "segments": {"N": str(segments)},
            "shardEnd": {"BOOL": progress.done},
            "scanned": {"N": str(progress.scanned)},
            "updatedAt": {"N": repr(time.time())},
        }
        if progress.last_key is not None:
            item["lastKey"] = {"S": json.dumps(_encode_key(progress.last_key), sort_keys=True)}
        await self._client.put_item(TableName=self.table, Item=item)

    async def clear(self, table: str) -> None:
        """Delete the table's segment items."""
        for item in await self._items(table):
            await self._client.delete_item(
                TableName=self.table, Key={"streamArn": item["streamArn"], "shardId": item["shardId"]}
            )


def default_progress_path(cfg: Config) -> Path:
    """Return the JSON progress file next to the SQLite checkpoints."""
    return cfg.checkpoint.path.parent / "backfill-progress.json"


# --- rate limit -----------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket shared by every segment: ``rate`` tokens/s, bursts up to ``capacity``.

    ``take`` may leave the bucket in debt (a Scan page is only counted after it returns); the next
    caller then waits until the debt is paid, so the long-run rate holds.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        """Start full."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def wait_ready(self) -> None:
        """Wait until the bucket is out of debt (at least one token)."""
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await self._sleep((1 - self._tokens) / self.rate)
                self._refill()

    def take(self, n: int) -> None:
        """Spend ``n`` tokens (the items a page returned)."""
        self._refill()
        self._tokens -= n


# --- records ---------------------------------------------------------------------------------------


def synthetic_record(
    item: Item,
    key_names: tuple[str, ...],
    *,
    read_time_s: float,
    safety_margin_s: float,
    segment: int,
) -> ChangeRecord:
    """Make a scanned item an INSERT change made ``safety_margin_s`` before its page was requested.

    The old image is the item itself: a scanned item is the source's state, whoever wrote it last, so
    it is classified as an application change (never skipped as an echo), and its version is bumped
    past a replication marker it carries, as a streamed change to it would be.
    """
    keys = {name: item[name] for name in key_names}
    created = read_time_s - safety_margin_s
    shard_id = f"backfill-{segment}"
    event: dict[str, Any] = {
        "eventID": f"backfill-{segment}",
        "eventName": "INSERT",
        "eventSource": "replicator:backfill",
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": keys,
            "NewImage": item,
            "SequenceNumber": BACKFILL_SEQUENCE,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    return ChangeRecord(
        event_name="INSERT",
        keys=keys,
        new_image=item,
        old_image=item,
        sequence_number=BACKFILL_SEQUENCE,
        approximate_creation_time_s=created,
        shard_id=shard_id,
        event=event,
    )


# --- the scan -------------------------------------------------------------------------------------


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
    ) -> None:
        """Wire the parts; no I/O."""
        self._client = source_client
        self.table = table
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
            await self.progress_store.clear(self.table)
        saved = await self.progress_store.load(self.table, segs)
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
        records = []
        for item in items:
            if self.tombstone_attribute in item:
                # A replicated delete kept as a tombstone: the key is deleted in the source.
                self.summary.tombstones += 1
                continue
            records.append(
                synthetic_record(
                    item,
                    self.key_names,
                    read_time_s=sent_at,
                    safety_margin_s=self.settings.safety_margin_s,
                    segment=segment,
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
                lambda: self.progress_store.save(self.table, segs, progress),
                policy=self._retry,
                metrics=self.metrics,
            )
            if self.on_page is not None:
                self.on_page(len(items))
            if progress.done:
                return


def _advance(bar: Any, task: Any, n: int) -> None:  # noqa: ANN401 - rich Progress and TaskID
    bar.advance(task, n)


async def table_key_names(client: DynamoDBClient, table: str) -> tuple[tuple[str, ...], int]:
    """Return the table's key attribute names (hash first) and its approximate item count."""
    desc = (await client.describe_table(TableName=table))["Table"]
    schema = sorted(desc["KeySchema"], key=lambda k: k["KeyType"] != "HASH")
    return tuple(k["AttributeName"] for k in schema), int(desc.get("ItemCount", 0))


async def run_backfill(
    cfg: Config,
    settings: BackfillSettings,
    *,
    metrics: Metrics | None = None,
    dead_letters: DeadLetterSink | None = None,
    progress_path: Path | None = None,
    show_progress: bool = False,
) -> BackfillSummary:
    """Open the clients, the progress store and the processor from ``cfg`` and run the backfill.

    ``dead_letters`` None: the configured ``failure.on_failure.destination`` (if any) is opened.
    """
    from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore  # noqa: PLC0415 - avoid import cycle
    from replicator.pipeline.processor import build_processor  # noqa: PLC0415 - same
    from replicator.sink.deadletter import from_config as dead_letters_from_config  # noqa: PLC0415 - same

    table = cfg.source.table
    if table is None:
        raise BackfillError("backfill needs source.table (a stream ARN alone does not name a table to scan)")
    metrics = metrics or Metrics()
    # Backfilled copies are old by design (their time is the scan's): a record-age limit meant for
    # stream lag must not dead-letter them.
    failure = cfg.failure.model_copy(update={"maximum_record_age_seconds": -1})
    cfg = cfg.model_copy(update={"failure": failure})
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, cfg)
        store: ProgressStore
        if progress_path is None and cfg.checkpoint.backend == "dynamodb":
            assert cfg.checkpoint.table is not None  # noqa: S101 - validated by the config model
            await DynamoDBCheckpointStore(clients.checkpoint_table(), cfg.checkpoint.table).start()
            store = DynamoDBProgressStore(clients.checkpoint_table(), cfg.checkpoint.table)
        else:
            store = JsonProgressStore(progress_path or default_progress_path(cfg))
        if dead_letters is None:
            dead_letters = await dead_letters_from_config(cfg, stack, metrics=metrics)
        processor = build_processor(cfg, target_client=clients.target, metrics=metrics, dead_letters=dead_letters)
        key_names, item_count = await table_key_names(clients.source, table)
        on_page: Callable[[int], None] | None = None
        if show_progress:
            from rich.progress import (  # noqa: PLC0415 - only for the interactive command
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            progress_bar = stack.enter_context(
                Progress(
                    TextColumn("[bold]backfill[/] {task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                )
            )
            # ItemCount is refreshed about every six hours: a guide for the bar, not a promise.
            task = progress_bar.add_task(table, total=item_count or None)
            on_page = functools.partial(_advance, progress_bar, task)

        backfill = Backfill(
            source_client=clients.source,
            table=table,
            key_names=key_names,
            processor=processor,
            progress_store=store,
            settings=settings,
            metrics=metrics,
            tombstone_attribute=cfg.replication.tombstone_attribute,
            on_page=on_page,
        )
        return await backfill.run()
