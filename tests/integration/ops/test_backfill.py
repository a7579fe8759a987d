"""Backfill on DynamoDB Local: copies a table, resumes after a crash, and never lets a stale copy win."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from replicator_dev.local.common import create_table

from replicator.cli.main import main
from replicator.core.config import CheckpointConfig, Config
from replicator.observe.metrics import Metrics
from replicator.ops.backfill import (
    Backfill,
    BackfillSettings,
    JsonProgressStore,
    run_backfill,
    table_key_names,
)
from replicator.ops.compare import compare_items
from replicator.ops.verify import verify
from replicator.runtime.service import Replicator
from replicator.runtime.wiring import build_processor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

    from replicator.core.records import ChangeRecord
    from replicator.pipeline.processor import BatchProcessor, BatchResult


def _config(region_a: DynamoDBLocal, region_b: DynamoDBLocal, src: str, dst: str, tmp_path: Path) -> Config:
    return Config(
        source={"region": "us-east-1", "table": src, "endpoint_url": region_a.endpoint_url},
        target={"region": "us-west-2", "table": dst, "endpoint_url": region_b.endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "state" / "checkpoints.db")},
        metrics={"enabled": False},
        reader={"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.1, "shard_discovery_interval_s": 1},
        starting_position="LATEST",
    )


def _tables(region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name: Callable[[str], str]) -> tuple[str, str]:
    src, dst = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, src)
    create_table(region_b.endpoint_url, dst)
    return src, dst


def _scan(ddb: DynamoDBLocal, table: str) -> list[dict[str, Any]]:
    client = ddb.client()
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def _put_items(ddb: DynamoDBLocal, table: str, count: int, *, prefix: str = "k") -> None:
    client = ddb.client()
    for i in range(count):
        client.put_item(
            TableName=table, Item={"pk": {"S": f"{prefix}{i:04d}"}, "v": {"N": "0"}, "pad": {"S": "x" * 50}}
        )


def _compare(cfg: Config, region_a: DynamoDBLocal, region_b: DynamoDBLocal) -> Any:
    assert cfg.source.table is not None
    return compare_items(_scan(region_a, cfg.source.table), _scan(region_b, cfg.target.table), cfg.replication)


async def _eventually_equal(
    cfg: Config, region_a: DynamoDBLocal, region_b: DynamoDBLocal, timeout_s: float = 20
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        report = await asyncio.to_thread(_compare, cfg, region_a, region_b)
        if report.equal or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def _streaming(cfg: Config, region_a: DynamoDBLocal, region_b: DynamoDBLocal) -> AsyncIterator[Replicator]:
    """Run the streaming service; yields once it demonstrably replicates (a sentinel arrived)."""
    replicator = Replicator(cfg, shutdown_timeout_s=5)
    task = asyncio.create_task(replicator.run())
    try:
        await asyncio.wait_for(replicator.started.wait(), 20)
        # LATEST is taken when the reader starts: keep writing a sentinel until one arrives.
        target = region_b.client()
        assert cfg.source.table is not None
        deadline = time.monotonic() + 20
        attempt = 0
        while time.monotonic() < deadline:
            # A put that changes nothing makes no stream record: change the value every time.
            attempt += 1
            item = {"pk": {"S": "sentinel"}, "v": {"N": str(attempt)}}
            await asyncio.to_thread(region_a.client().put_item, TableName=cfg.source.table, Item=item)
            await asyncio.sleep(0.5)
            got = await asyncio.to_thread(target.get_item, TableName=cfg.target.table, Key={"pk": {"S": "sentinel"}})
            if "Item" in got:
                break
        else:
            pytest.fail("streaming never replicated the sentinel")
        yield replicator
    finally:
        replicator.stop()
        await asyncio.wait_for(task, 20)


async def test_backfill_copies_a_table_with_rate_limit_and_resumes_after_a_crash(
    region_a, region_b, unique_name, tmp_path
) -> None:
    """A backfill killed part-way (rate-limited) resumes from its saved segments and completes the copy."""
    src, dst = _tables(region_a, region_b, unique_name)
    await asyncio.to_thread(_put_items, region_a, src, 300)
    cfg = _config(region_a, region_b, src, dst, tmp_path)
    progress_file = tmp_path / "progress.json"

    first = asyncio.create_task(
        run_backfill(cfg, BackfillSettings(segments=3, rate_per_s=60), progress_path=progress_file)
    )
    deadline = time.monotonic() + 20
    while not progress_file.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file
        await asyncio.sleep(0.02)
    first.cancel()  # the "crash": in-flight pages are lost, saved pages are not
    with pytest.raises(asyncio.CancelledError):
        await first
    saved = json.loads(progress_file.read_text())[src]
    scanned_before = sum(s["scanned"] for s in saved["progress"].values())
    assert 0 < scanned_before < 300
    assert not all(s["done"] for s in saved["progress"].values())
    partial = await asyncio.to_thread(_scan, region_b, dst)
    assert scanned_before <= len(partial) < 300

    started = time.monotonic()
    summary = await run_backfill(cfg, BackfillSettings(segments=3, rate_per_s=100), progress_path=progress_file)
    elapsed = time.monotonic() - started
    assert summary.segments_resumed >= 1
    assert summary.scanned + scanned_before >= 300
    assert summary.scanned < 300  # saved pages were not scanned again
    # 100 items/s after a burst of 100: the rest cannot have taken less than (rest - 100) / 100 s.
    assert elapsed >= (summary.scanned - 100) / 100 - 0.1
    report = await asyncio.to_thread(_compare, cfg, region_a, region_b)
    assert report.equal, report.summary()
    verified = await verify(cfg)
    assert not verified.diverged
    assert verified.source_items == 300

    again = await run_backfill(cfg, BackfillSettings(segments=3), progress_path=progress_file)
    assert again.scanned == 0
    assert again.segments_already_done == 3


async def test_resuming_with_another_segment_count_is_refused(region_a, region_b, unique_name, tmp_path) -> None:
    """Saved progress for 3 segments cannot silently be reused by a 4-segment scan."""
    src, dst = _tables(region_a, region_b, unique_name)
    await asyncio.to_thread(_put_items, region_a, src, 5)
    cfg = _config(region_a, region_b, src, dst, tmp_path)
    progress_file = tmp_path / "progress.json"
    await run_backfill(cfg, BackfillSettings(segments=3), progress_path=progress_file)
    from replicator.ops.backfill import BackfillError  # noqa: PLC0415 - used here only

    with pytest.raises(BackfillError, match="--segments 3"):
        await run_backfill(cfg, BackfillSettings(segments=4), progress_path=progress_file)
    restarted = await run_backfill(cfg, BackfillSettings(segments=4, restart=True), progress_path=progress_file)
    assert restarted.scanned == 5


class _HeldProcessor:
    """Delegates to a real processor, but only once ``release`` is set: holds a scanned page back."""

    def __init__(self, inner: BatchProcessor, release: asyncio.Event, scanned: asyncio.Event) -> None:
        self.inner = inner
        self.release = release
        self.scanned = scanned

    async def process(self, records: list[ChangeRecord]) -> BatchResult:
        self.scanned.set()
        await self.release.wait()
        return await self.inner.process(records)


@pytest.mark.parametrize(("margin_s", "stale_wins"), [(60.0, False), (-1.0, True)])
async def test_a_copy_scanned_before_a_change_never_overwrites_the_streamed_change(  # noqa: PLR0917 - fixtures
    region_a, region_b, unique_name, tmp_path, margin_s, stale_wins
) -> None:
    """Backfill reads v1, the app writes v2, streaming replicates it, then backfill writes v1: superseded.

    DynamoDB Local rounds stream timestamps down to the minute, so v2's version may be up to 60 s older
    than its write: the default margin (60 s) covers that. Versioned one second after its read instead,
    the stale copy wins: the race the margin exists for, and the check that this test can fail.
    """
    src, dst = _tables(region_a, region_b, unique_name)
    source, target = region_a.client(), region_b.client()
    source.put_item(TableName=src, Item={"pk": {"S": "race"}, "v": {"N": "1"}})
    cfg = _config(region_a, region_b, src, dst, tmp_path)
    async with _streaming(cfg, region_a, region_b):
        metrics = Metrics()
        from replicator.aws.clients import open_clients  # noqa: PLC0415 - used here only

        async with contextlib.AsyncExitStack() as stack:
            clients = await open_clients(stack, cfg)
            release, scanned = asyncio.Event(), asyncio.Event()
            held = _HeldProcessor(
                build_processor(cfg, target_client=clients.target, metrics=metrics, dead_letters=None),
                release,
                scanned,
            )
            key_names, _ = await table_key_names(clients.source, src)
            backfill = Backfill(
                source_client=clients.source,
                table=src,
                key_names=key_names,
                processor=held,  # type: ignore[arg-type]
                progress_store=JsonProgressStore(tmp_path / "p.json"),
                settings=BackfillSettings(segments=1, safety_margin_s=margin_s),
                metrics=metrics,
                tombstone_attribute=cfg.replication.tombstone_attribute,
            )
            run = asyncio.create_task(backfill.run())
            await asyncio.wait_for(scanned.wait(), 10)  # v1 (and the sentinel) have been read
            await asyncio.to_thread(source.put_item, TableName=src, Item={"pk": {"S": "race"}, "v": {"N": "2"}})
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                got = await asyncio.to_thread(target.get_item, TableName=dst, Key={"pk": {"S": "race"}})
                if got.get("Item", {}).get("v") == {"N": "2"}:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("streaming never replicated v2")
            release.set()
            summary = await asyncio.wait_for(run, 15)
        final = target.get_item(TableName=dst, Key={"pk": {"S": "race"}})["Item"]
    if stale_wins:
        assert final["v"] == {"N": "1"}
        assert summary.written >= 1
    else:
        assert final["v"] == {"N": "2"}
        assert summary.superseded >= 1
        report = await asyncio.to_thread(_compare, cfg, region_a, region_b)
        assert report.equal, report.summary()


async def test_backfill_while_streaming_and_writing_converges(region_a, region_b, unique_name, tmp_path) -> None:
    """Streaming, a live workload (updates, deletes, inserts) and a backfill at once end with equal tables."""
    src, dst = _tables(region_a, region_b, unique_name)
    await asyncio.to_thread(_put_items, region_a, src, 400)
    cfg = _config(region_a, region_b, src, dst, tmp_path)
    rng = random.Random(8)  # noqa: S311 - a reproducible workload, not security

    def workload(stop_at: float) -> int:
        client = region_a.client()
        n = 0
        while time.monotonic() < stop_at:
            key = {"S": f"k{rng.randrange(500):04d}"}  # keys >= 400 are new inserts
            if rng.random() < 0.15:
                client.delete_item(TableName=src, Key={"pk": key})
            else:
                client.put_item(TableName=src, Item={"pk": key, "v": {"N": str(n)}})
            n += 1
        return n

    async with _streaming(cfg, region_a, region_b):
        writes = asyncio.create_task(asyncio.to_thread(workload, time.monotonic() + 5))
        summary = await run_backfill(
            cfg, BackfillSettings(segments=4, rate_per_s=150, page_size=25), progress_path=tmp_path / "p.json"
        )
        assert await writes > 100
        report = await _eventually_equal(cfg, region_a, region_b)
    assert report.equal, report.summary()
    verified = await verify(cfg)
    assert not verified.diverged, verified.differences[:5]
    assert summary.scanned >= 300
    assert summary.written > 0
    # Pages scanned while the workload ran found keys the stream had already written newer copies of.
    assert summary.superseded > 0


def test_cli_backfill_prints_a_summary(region_a, region_b, unique_name, tmp_path) -> None:
    """``replicator backfill --config`` copies the table and prints scanned/written counts."""
    src, dst = _tables(region_a, region_b, unique_name)
    _put_items(region_a, src, 20)
    config = tmp_path / "replicator.yaml"
    config.write_text(
        json.dumps(
            {
                "source": {"region": "us-east-1", "table": src, "endpoint_url": region_a.endpoint_url},
                "target": {"region": "us-west-2", "table": dst, "endpoint_url": region_b.endpoint_url},
                "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "state" / "cp.db")},
            }
        )
    )
    result = CliRunner().invoke(main, ["backfill", "--config", str(config), "--segments", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "scanned      20" in result.output
    assert "written      20" in result.output
    assert (tmp_path / "state" / "backfill-progress.json").exists()
    assert len(_scan(region_b, dst)) == 20


async def test_progress_in_the_dynamodb_checkpoint_table_resumes(region_a, region_b, unique_name, tmp_path) -> None:
    """With checkpoint.backend dynamodb, progress lives in the checkpoint table; a re-run skips done work."""
    src, dst = _tables(region_a, region_b, unique_name)
    await asyncio.to_thread(_put_items, region_a, src, 40)
    checkpoints = unique_name("cp")
    cfg = _config(region_a, region_b, src, dst, tmp_path).model_copy(
        update={"checkpoint": CheckpointConfig(backend="dynamodb", table=checkpoints)}
    )
    first = await run_backfill(cfg, BackfillSettings(segments=2, page_size=7))
    assert first.scanned == 40
    assert first.written == 40
    items = region_b.client().query(
        TableName=checkpoints,
        KeyConditionExpression="streamArn = :s",
        ExpressionAttributeValues={":s": {"S": f"backfill#{src}"}},
    )["Items"]
    assert sorted(i["shardId"]["S"] for i in items) == ["segment#00000", "segment#00001"]
    assert all(i["shardEnd"]["BOOL"] for i in items)
    again = await run_backfill(cfg, BackfillSettings(segments=2))
    assert (again.scanned, again.segments_already_done) == (0, 2)
