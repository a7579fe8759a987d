"""``replicator status``: every shard of the stream, its checkpoint, owner and how far behind it is.

Reads only the checkpoint store and the stream, so it works whether the worker is running, stopped or
was never started. How far behind: for a shard not yet done, an iterator just after its checkpoint
(or at the configured starting position when it has none) and one GetRecords page: the age of the
next record to replicate, and how many records that page held (a full page means at least that many).
Nothing is written anywhere: the checkpoint table or file is not created when missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any, Literal

from replicator.core.errors import ShardGoneError, TrimmedDataError, error_code
from replicator.core.records import US_PER_S
from replicator.core.retry import RetryPolicy, retrying
from replicator.observe.metrics import Metrics
from replicator.source.api import ChangeSource, IteratorType
from replicator.source.factory import open_source
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from rich.table import Table

    from replicator.aws.clients import Clients
    from replicator.checkpoint import Checkpoint, CheckpointStore
    from replicator.core.config import Config

Progress = Literal["done", "in_progress", "waiting_on_parent", "not_started"]
PAGE_LIMIT = 1000
"""GetRecords' maximum page: the records-behind estimate counts at most this many."""


@dataclasses.dataclass(frozen=True, slots=True)
class ShardRow:
    """One shard's line in the status table."""

    shard_id: str
    parent_shard_id: str | None
    closed: bool
    progress: Progress
    owner: str | None
    checkpoint: str | None
    checkpoint_updated_at_s: float | None
    iterator_age_s: float | None
    """Age of the next record to replicate; 0 when none is waiting; None when not estimated."""
    records_behind: int | None
    """Records in the one page read after the checkpoint; None when not estimated."""
    more_behind: bool = False
    """The page was full: at least ``records_behind`` records are waiting."""
    note: str | None = None
    targets: dict[str, str] = dataclasses.field(default_factory=dict)
    """Fan-out: each target's own checkpoint (target id to sequence number); ``checkpoint`` is the slowest."""

    def as_json(self) -> dict[str, Any]:
        """Return the row as JSON-ready data (field names as in the dataclass)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class StatusReport:
    """The stream and its shards, parents before children."""

    stream_arn: str
    rows: list[ShardRow]
    checkpoint_note: str | None = None

    def summary(self) -> dict[str, Any]:
        """Shards by progress and open/closed, the worst lag (age of the oldest waiting record), owners."""
        by_progress = {p: sum(1 for r in self.rows if r.progress == p) for p in _PROGRESS_LABELS}
        lagging = [r for r in self.rows if r.iterator_age_s is not None]
        worst = max(lagging, key=lambda r: r.iterator_age_s or 0.0, default=None)
        owners: dict[str, int] = {}
        for row in self.rows:
            if row.owner is not None and row.progress != "done":
                owners[row.owner] = owners.get(row.owner, 0) + 1
        return {
            "shards": len(self.rows),
            "open": sum(1 for r in self.rows if not r.closed),
            "closed": sum(1 for r in self.rows if r.closed),
            "by_progress": by_progress,
            "worst_lag_s": worst.iterator_age_s if worst is not None else None,
            "worst_lag_shard_id": worst.shard_id if worst is not None else None,
            "owners": dict(sorted(owners.items())),
        }

    def as_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "stream_arn": self.stream_arn,
            "checkpoint_note": self.checkpoint_note,
            "summary": self.summary(),
            "shards": [row.as_json() for row in self.rows],
        }

    def to_json(self) -> str:
        """Return the report as one JSON document."""
        return json.dumps(self.as_json(), indent=2)


async def collect_status(
    api: ChangeSource,
    checkpoints: Mapping[str, Checkpoint],
    *,
    stream_arn: str,
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON",
    clock: Callable[[], float] = time.time,
    page_limit: int = PAGE_LIMIT,
) -> list[ShardRow]:
    """Describe every shard of the stream with its checkpoint and an estimate of how far behind it is."""
    metrics = Metrics()  # retries of a one-shot command are not exported anywhere
    policy = RetryPolicy(max_attempts=5, max_delay_s=2.0)
    shards = await retrying("DescribeStream", lambda: api.list_shards(stream_arn), policy=policy, metrics=metrics)
    tree = ShardTree()
    tree.update(shards)
    rows = []
    for shard in _lineage_order(shards):
        cp = checkpoints.get(shard.shard_id)
        progress = _progress(tree, shard, cp, checkpoints)
        age: float | None = None
        behind: int | None = None
        more = False
        note = None
        if progress in ("in_progress", "not_started"):
            try:
                estimate = await _estimate(
                    api,
                    stream_arn,
                    shard,
                    cp,
                    starting_position,
                    clock=clock,
                    limit=page_limit,
                    policy=policy,
                )
            except TrimmedDataError:
                note = "records after the checkpoint were trimmed (older than 24 h): they are lost"
            except ShardGoneError:
                note = "shard no longer in the stream"
            else:
                if estimate is None:
                    note = "starts at LATEST: nothing waiting"
                    age, behind = 0.0, 0
                else:
                    age, behind, more = estimate
        rows.append(
            ShardRow(
                shard_id=shard.shard_id,
                parent_shard_id=shard.parent_shard_id,
                closed=shard.closed,
                progress=progress,
                owner=cp.owner if cp is not None else None,
                checkpoint=cp.sequence_number if cp is not None else None,
                checkpoint_updated_at_s=cp.updated_at_s if cp is not None else None,
                iterator_age_s=age,
                records_behind=behind,
                more_behind=more,
                note=note,
                targets=dict(cp.targets) if cp is not None else {},
            )
        )
    return rows


def _lineage_order(shards: list[Shard]) -> list[Shard]:
    """Parents before children, otherwise by starting sequence number (the age of the shard)."""
    return sorted(shards, key=lambda s: (s.starting_sequence_number or "").rjust(40, "0"))


def _progress(tree: ShardTree, shard: Shard, cp: Checkpoint | None, checkpoints: Mapping[str, Checkpoint]) -> Progress:
    if cp is not None and cp.shard_end:
        return "done"
    if tree.parent_pending(shard, checkpoints):
        return "waiting_on_parent"
    if cp is None:
        return "not_started"
    return "in_progress"


async def _estimate(
    api: ChangeSource,
    stream_arn: str,
    shard: Shard,
    cp: Checkpoint | None,
    starting_position: Literal["TRIM_HORIZON", "LATEST"],
    *,
    clock: Callable[[], float],
    limit: int,
    policy: RetryPolicy,
) -> tuple[float, int, bool] | None:
    """Age of the next record after the checkpoint, records in one page, and whether the page was full."""
    metrics = Metrics()
    sequence = cp.sequence_number if cp is not None else None
    kind: IteratorType
    if sequence is not None:
        kind = "AFTER_SEQUENCE_NUMBER"
    elif shard.parent_shard_id is not None or starting_position == "TRIM_HORIZON":
        # A child shard is always read from its start (service.py), whatever the starting position.
        kind = "TRIM_HORIZON"
    else:
        return None
    iterator = await retrying(
        "GetShardIterator",
        lambda: api.get_iterator(stream_arn, shard.shard_id, kind, sequence),
        policy=policy,
        metrics=metrics,
    )
    records, _ = await retrying("GetRecords", lambda: api.get_records(iterator, limit), policy=policy, metrics=metrics)
    if not records:
        return 0.0, 0, False
    age_s = clock() - records[0].approximate_creation_time_us / US_PER_S
    return max(0.0, age_s), len(records), len(records) >= limit


async def load_checkpoints(store: CheckpointStore, stream_arn: str) -> tuple[dict[str, Checkpoint], str | None]:
    """Every checkpoint of the stream; a missing table reads as none (with a note), nothing is created."""
    try:
        return await store.load_all(stream_arn), None
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return {}, "the checkpoint table does not exist yet: no shard has been started"
        raise


async def status_from_config(cfg: Config, *, clients: Clients | None = None) -> StatusReport:
    """Open clients (unless given), resolve the stream, read checkpoints, and collect every shard's row."""
    from replicator.aws.clients import open_clients  # noqa: PLC0415 - aiobotocore only when talking to AWS
    from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore  # noqa: PLC0415
    from replicator.checkpoint.sqlite import SqliteCheckpointStore  # noqa: PLC0415

    async with contextlib.AsyncExitStack() as stack:
        if clients is None:
            clients = await open_clients(stack, cfg)
        api = await open_source(stack, cfg, clients)
        stream = await api.resolve(table=cfg.source.table, stream_arn=cfg.source.stream_arn)
        cp_cfg = cfg.checkpoint
        checkpoints: dict[str, Checkpoint] = {}
        note: str | None = None
        if cp_cfg.backend == "dynamodb":
            assert cp_cfg.table is not None  # noqa: S101 - validated by the config model
            checkpoints, note = await load_checkpoints(
                DynamoDBCheckpointStore(clients.checkpoint_table(), cp_cfg.table), stream.arn
            )
        elif cp_cfg.path.exists():
            store = SqliteCheckpointStore(cp_cfg.path)
            await store.start()
            try:
                checkpoints, note = await load_checkpoints(store, stream.arn)
            finally:
                await store.close()
        else:
            note = f"checkpoint file {cp_cfg.path} does not exist yet: no shard has been started"
        rows = await collect_status(api, checkpoints, stream_arn=stream.arn, starting_position=cfg.starting_position)
        return StatusReport(stream_arn=stream.arn, rows=rows, checkpoint_note=note)


_PROGRESS_LABELS = {
    "done": "done",
    "in_progress": "in progress",
    "waiting_on_parent": "waiting on parent",
    "not_started": "not started",
}


def format_age(seconds: float | None) -> str:
    """Render an age as ``0s``, ``42s``, ``3m05s``, ``2h07m`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:  # noqa: PLR2004 - seconds in a minute
        return f"{s}s"
    if s < 3600:  # noqa: PLR2004 - seconds in an hour
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def abbreviate(text: str | None, keep: int) -> str:
    """The last ``keep`` characters behind an ellipsis: shard ids and sequence numbers differ at the end."""
    if text is None:
        return "-"
    return text if len(text) <= keep else "\u2026" + text[-(keep - 1) :]


def _short_shard(shard_id: str) -> str:
    return abbreviate(shard_id.removeprefix("shardId-"), 14)


def _short_owner(owner: str | None) -> str:
    if owner is None:
        return "-"
    # host:pid keeps its start (the host) and its end (the pid).
    return owner if len(owner) <= 18 else owner[:9] + "\u2026" + owner[-8:]  # noqa: PLR2004 - column width


def summary_line(report: StatusReport) -> str:
    """One line: shards by state, the worst lag and where, and the owners with their shard counts."""
    summary = report.summary()
    states = ", ".join(f"{n} {_PROGRESS_LABELS[p]}" for p, n in summary["by_progress"].items() if n)
    parts = [f"{summary['shards']} shards ({summary['open']} open, {summary['closed']} closed): {states or 'none'}"]
    if summary["worst_lag_shard_id"] is not None:
        parts.append(f"worst lag {format_age(summary['worst_lag_s'])} ({_short_shard(summary['worst_lag_shard_id'])})")
    owners = summary["owners"]
    parts.append("owners: " + (", ".join(f"{o} {n}" for o, n in owners.items()) if owners else "none"))
    return "; ".join(parts)


def render_table(report: StatusReport) -> Table:
    """Render the report as a rich table: one line per shard within 100 columns (ids abbreviated).

    Full shard ids and sequence numbers are in ``--json``; notes follow the table, one per shard.
    """
    from rich import box  # noqa: PLC0415 - only the terminal output needs rich
    from rich.table import Table  # noqa: PLC0415

    notes = [f"{_short_shard(r.shard_id)}: {r.note}" for r in report.rows if r.note]
    caption = "\n".join(filter(None, [report.checkpoint_note, *notes])) or None
    table = Table(title=f"stream {report.stream_arn}", caption=caption, box=box.SIMPLE_HEAD, caption_justify="left")
    for name in ("shard", "state", "progress", "owner", "checkpoint", "behind", "age"):
        table.add_column(
            name, no_wrap=True, overflow="ellipsis", justify="right" if name in ("behind", "age") else "left"
        )
    for row in report.rows:
        behind = "-" if row.records_behind is None else f"{row.records_behind}{'+' if row.more_behind else ''}"
        table.add_row(
            _short_shard(row.shard_id),
            "closed" if row.closed else "open",
            _PROGRESS_LABELS[row.progress] + (" *" if row.note else ""),
            _short_owner(row.owner),
            abbreviate(row.checkpoint, 11),
            behind,
            format_age(row.iterator_age_s),
        )
    return table
