"""The status table at 100 columns: one line per shard, abbreviated ids, and a summary line."""

from __future__ import annotations

import io

from rich.console import Console

from replicator.ops.status import ShardRow, StatusReport, render_table, summary_line

SEQ = "4" * 48 + "12345678"  # 56 digits, as DynamoDB Streams writes them
OWNER_A = "ip-10-0-12-34.eu-west-1.compute.internal:4242"


def _row(n: int, progress: str, owner: str | None, age_s: float | None, *, closed: bool = False) -> ShardRow:
    return ShardRow(
        shard_id=f"shardId-0000000170000000000{n}-abcdef{n:02d}",
        parent_shard_id=f"shardId-0000000160000000000{n}-0123ab{n:02d}",
        closed=closed,
        progress=progress,  # type: ignore[arg-type]
        owner=owner,
        checkpoint=SEQ[:-2] + f"{n:02d}" if progress != "not_started" else None,
        checkpoint_updated_at_s=1.7e9,
        iterator_age_s=age_s,
        records_behind=None if age_s is None else 1000,
        more_behind=age_s is not None,
        note=None,
    )


REPORT = StatusReport(
    stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-11-29T00:00:00.000",
    rows=[
        _row(1, "done", OWNER_A, None, closed=True),
        _row(2, "done", "worker-b:1", None, closed=True),
        _row(3, "in_progress", OWNER_A, 185.0),
        _row(4, "in_progress", "worker-b:1", 12.0),
        _row(5, "waiting_on_parent", None, None),
        _row(6, "not_started", None, 3.0),
    ],
)


def _render(width: int = 100) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    console.print(render_table(REPORT))
    return out.getvalue().splitlines()


def test_each_shard_is_one_line_within_100_columns() -> None:
    """56-digit sequence numbers and long shard ids no longer wrap: one line per shard, none over 100."""
    lines = _render()
    assert max(len(line) for line in lines) <= 100
    for row in REPORT.rows:
        tail = row.shard_id[-8:]
        hits = [line for line in lines if tail in line]
        assert len(hits) == 1, (tail, lines)
        if row.checkpoint is not None:
            assert row.checkpoint[-8:] in hits[0]


def test_summary_line_counts_states_worst_lag_and_owners() -> None:
    """Shards by state, the worst lag (and its shard), and the owners with their unfinished shard counts."""
    line = summary_line(REPORT)
    assert "6 shards (4 open, 2 closed): 2 done, 2 in progress, 1 waiting on parent, 1 not started" in line
    assert "worst lag 3m05s" in line
    assert f"owners: {OWNER_A} 1, worker-b:1 1" in line
    assert REPORT.summary()["worst_lag_s"] == 185.0


def test_json_carries_the_summary_and_full_values() -> None:
    """--json keeps the full shard ids and sequence numbers, and the summary."""
    doc = REPORT.as_json()
    assert doc["shards"][0]["checkpoint"] == REPORT.rows[0].checkpoint
    assert doc["summary"]["by_progress"] == {"done": 2, "in_progress": 2, "waiting_on_parent": 1, "not_started": 1}
    assert doc["summary"]["owners"] == {OWNER_A: 1, "worker-b:1": 1}
