"""Benchmark: what idle polling costs against how late a waking shard's first record is (issue 15, item 2).

For each candidate ``reader.max_idle_poll_interval_s`` (the cap of the idle backoff, ``runtime/polling.py``),
on DynamoDB Local (one JVM for the source, one for the target):

1. ``--shards`` source tables, each with a stream (DynamoDB Local gives each stream one shard), are read by
   the replicator's own ``ShardReader`` (in this process), whose processor writes every record
   to the target table;
2. idle cost: once every shard has backed off to the cap, GetRecords calls (``replicator_get_records_calls``)
   are counted over ``--idle-window`` seconds: calls per idle shard-day = calls / shards / window * 86,400;
3. wake delay: each shard, again and again, stays idle long enough to reach the cap, plus a random part of
   the cap (so the record lands at a random phase of the poll), then gets one PutItem on the source; the
   delay is PutItem acknowledged -> the record written to the target by the reader. At least ``--probes``
   probes per candidate; fewer than 200 makes the candidate's figures invalid (reported as such).

    python bench/idle_poll.py                       # candidates 1, 2, 4, 5, 8 s: about 10 minutes
    python bench/idle_poll.py --candidates 1,4 --probes 200
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiobotocore.session import get_session
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import workload
from replicator_dev.local.common import create_table
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.install import ensure_installed

from replicator.aws.clients import client_config
from replicator.core.config import ReaderConfig
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.polling import IdleBackoff
from replicator.source.shards import Shard
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from collections.abc import Sequence

    from replicator.core.records import ChangeRecord

BENCH_DIR = Path(__file__).resolve().parent
REGION = "us-east-1"
S_PER_DAY = 86_400
MIN_PROBES = 200
PRICE_PER_MILLION_READS_USD = 0.20
"""DynamoDB Streams read request units, us-east-1 (about $0.02 per 100,000), outside Lambda/Global Tables."""


class _Store:
    """Checkpoints kept nowhere: each candidate starts its readers from LATEST."""

    async def save(self, *_: Any, **__: Any) -> None:  # noqa: ANN401
        return None


class _ProbeProcessor:
    """Writes each record's new image to the target, then notes when each probe token got there."""

    def __init__(self, target: Any, table: str, seen: dict[str, asyncio.Future[float]]) -> None:  # noqa: ANN401
        self.target = target
        self.table = table
        self.seen = seen

    async def process(self, records: Sequence[ChangeRecord]) -> None:
        for record in records:
            if record.new_image is not None:
                await self.target.put_item(TableName=self.table, Item=record.new_image)
        now = time.monotonic()
        for record in records:
            token = (record.new_image or {}).get("token", {}).get("S")
            waiter = self.seen.get(token or "")
            if waiter is not None and not waiter.done():
                waiter.set_result(now)


def _growth_s(fast_s: float, cap_s: float) -> float:
    """Seconds of empty reads until the backoff reaches the cap (the waits before it, summed)."""
    backoff, total = IdleBackoff(fast_s=fast_s, max_s=cap_s), 0.0
    while backoff.idle_s < backoff.max_s:
        total += backoff.after_empty()
    return total


async def measure(  # noqa: PLR0915 - one candidate's whole set-up reads best in one place
    cap_s: float,
    shards: list[tuple[str, str, str]],
    *,
    source: Any,  # noqa: ANN401 - aiobotocore
    streams: Any,  # noqa: ANN401
    target: Any,  # noqa: ANN401
    idle_window_s: float,
    probes: int,
    positions: dict[str, str | None],
    console: Console,
) -> dict[str, Any]:
    """One candidate cap: idle GetRecords per shard-day, and the wake-up delays."""
    metrics = Metrics()
    state = WorkerState(metrics)
    stop = asyncio.Event()
    seen: dict[str, asyncio.Future[float]] = {}
    cfg = ReaderConfig(max_idle_poll_interval_s=cap_s)
    api = StreamsSource(streams, source)
    readers = [
        ShardReader(
            api=api,
            stream_arn=arn,
            shard=Shard(shard_id, None, "0"),
            checkpoint=None,
            store=_Store(),  # type: ignore[arg-type]
            processor=_ProbeProcessor(target, "probes", seen),  # type: ignore[arg-type]
            state=state,
            metrics=metrics,
            # TRIM_HORIZON (the seed record), then after the last record the previous candidate read.
            settings=ReaderSettings(reader=cfg, batch_size=1000, initial_position="TRIM_HORIZON"),
            retry_policy=RetryPolicy(max_attempts=None, max_delay_s=2),
            stop=stop,
        )
        for _, arn, shard_id in shards
    ]
    for reader, (table, _, _) in zip(readers, shards, strict=True):
        reader.position = positions.get(table)
    tasks = [asyncio.create_task(r.run()) for r in readers]

    def calls() -> float:
        return sum(
            metrics.registry.get_sample_value("replicator_get_records_calls_total", {"result": r}) or 0.0
            for r in ("records", "empty")
        )

    settle_s = _growth_s(cfg.poll_interval_s, cap_s) + cap_s + 1.0
    try:
        await asyncio.sleep(settle_s)
        before, t0 = calls(), time.monotonic()
        await asyncio.sleep(idle_window_s)
        idle_calls, window = calls() - before, time.monotonic() - t0
        per_shard_day = idle_calls / len(shards) / window * S_PER_DAY
        console.print(f"  cap {cap_s:g} s: {per_shard_day:,.0f} GetRecords per idle shard-day; probing ...")
        delays: list[float] = []
        lost = 0
        rng = random.Random(int(cap_s * 1000))  # noqa: S311 - timing jitter, not security

        async def prober(table: str) -> None:
            nonlocal lost
            i = 0
            while len(delays) < probes:
                # Long enough to be back at the cap, then a random phase of the cap's poll period.
                await asyncio.sleep(settle_s + rng.uniform(0, cap_s))
                if len(delays) >= probes:
                    return
                token = f"{table}-{i}-{time.time_ns()}"
                i += 1
                waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                seen[token] = waiter
                await source.put_item(TableName=table, Item={"pk": {"S": token}, "token": {"S": token}})
                acked = time.monotonic()
                try:
                    arrived = await asyncio.wait_for(waiter, timeout=30 + cap_s)
                except TimeoutError:
                    lost += 1
                    continue
                finally:
                    seen.pop(token, None)
                delays.append(max(0.0, arrived - acked))

        await asyncio.gather(*(prober(table) for table, _, _ in shards))
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for reader, (table, _, _) in zip(readers, shards, strict=True):
            positions[table] = reader.position
    failed = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    if failed:
        raise RuntimeError(f"readers failed: {failed[:3]}")
    pct = workload.percentiles(delays)
    valid = len(delays) >= MIN_PROBES
    return {
        "max_idle_poll_interval_s": cap_s,
        "idle_window_s": round(window, 1),
        "idle_get_records": int(idle_calls),
        "get_records_per_idle_shard_day": round(per_shard_day),
        "usd_per_month_1000_idle_shards": round(per_shard_day * 1000 * 30 / 1e6 * PRICE_PER_MILLION_READS_USD, 2),
        "wake_delay": {**pct, "probes": len(delays), "lost": lost, "valid": valid},
    }


async def run(args: argparse.Namespace, source_db: DynamoDBLocal, target_db: DynamoDBLocal, console: Console) -> Any:  # noqa: ANN401
    """Every candidate, on the same tables."""
    shards: list[tuple[str, str, str]] = []
    for i in range(args.shards):
        table = f"idle{i:03d}"
        arn = create_table(source_db.endpoint_url, table, region_name=REGION)["LatestStreamArn"]
        # DynamoDB Local (3.x) answers TrimmedDataAccess to an iterator chained along a shard that was
        # empty when it was issued, once several streams get records: one record first avoids it.
        source_db.client().put_item(TableName=table, Item={"pk": {"S": "seed"}})
        desc = source_db.client("dynamodbstreams").describe_stream(StreamArn=arn)["StreamDescription"]
        open_shards = [s for s in desc["Shards"] if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        shards.append((table, arn, open_shards[-1]["ShardId"]))
    create_table(target_db.endpoint_url, "probes", stream_view_type=None, region_name=REGION)
    session = get_session()
    cfg = client_config(max_pool_connections=max(64, 2 * args.shards))
    async with (
        session.create_client("dynamodb", region_name=REGION, endpoint_url=source_db.endpoint_url, config=cfg) as src,
        session.create_client(
            "dynamodbstreams", region_name=REGION, endpoint_url=source_db.endpoint_url, config=cfg
        ) as streams,
        session.create_client("dynamodb", region_name=REGION, endpoint_url=target_db.endpoint_url, config=cfg) as tgt,
    ):
        results = []
        positions: dict[str, str | None] = {}
        for cap_s in args.candidates:
            console.print(f"candidate max_idle_poll_interval_s {cap_s:g} ({args.shards} shards) ...")
            results.append(
                await measure(
                    cap_s,
                    shards,
                    source=src,
                    streams=streams,
                    target=tgt,
                    idle_window_s=args.idle_window,
                    probes=args.probes,
                    positions=positions,
                    console=console,
                )
            )
        return results


def render(doc: dict[str, Any], console: Console) -> None:
    """The trade-off table."""
    table = Table(
        title=f"idle polling — {doc['date']} — load {doc['machine']['load_before'][0]:.2f} -> "
        f"{doc['machine']['load_after'][0]:.2f}"
    )
    for col in (
        "cap (s)",
        "GetRecords / idle shard-day",
        "vs 1 s cap",
        "$ / month, 1,000 idle shards",
        "wake p50 (ms)",
        "wake p99 (ms)",
        "wake max (ms)",
        "probes (lost)",
    ):
        table.add_column(col, justify="right")
    base = next((r for r in doc["results"] if r["max_idle_poll_interval_s"] == 1.0), None)
    for r in doc["results"]:
        w = r["wake_delay"]
        ratio = r["get_records_per_idle_shard_day"] / base["get_records_per_idle_shard_day"] if base else None
        table.add_row(
            f"{r['max_idle_poll_interval_s']:g}",
            f"{r['get_records_per_idle_shard_day']:,}",
            f"{ratio:.2f}" if ratio is not None else "-",
            f"{r['usd_per_month_1000_idle_shards']:,.2f}",
            f"{w['p50_ms']}" if w["valid"] else "invalid",
            f"{w['p99_ms']}" if w["valid"] else "invalid",
            f"{w['max_ms']}",
            f"{w['probes']} ({w['lost']})",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run, print, write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", default="1,2,4,5,8", help="comma-separated caps in seconds (1 = before the backoff)")
    p.add_argument("--shards", type=int, default=40, help="idle shards (tables) read at once")
    p.add_argument("--probes", type=int, default=MIN_PROBES, help="wake-up probes per candidate (>= 200 to be valid)")
    p.add_argument("--idle-window", type=float, default=30.0, help="seconds over which idle GetRecords are counted")
    p.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/idle-poll-<ts>.json)")
    args = p.parse_args(argv)
    args.candidates = [float(c) for c in args.candidates.split(",")]
    console = Console()
    # The readers' debug lines (a checkpoint per probe) would bury the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    ensure_installed()
    started, load_before = time.monotonic(), os.getloadavg()
    with DynamoDBLocal(region_name=REGION) as source_db, DynamoDBLocal(region_name=REGION) as target_db:
        results = asyncio.run(run(args, source_db, target_db, console))
    now = dt.datetime.now(tz=dt.UTC)
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/idle_poll.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "nproc": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "settings": {
            "shards": args.shards,
            "probes": args.probes,
            "idle_window_s": args.idle_window,
            "poll_interval_s": ReaderConfig().poll_interval_s,
        },
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    out = args.output or BENCH_DIR / "results" / f"idle-poll-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    render(doc, console)
    console.print(f"results: {out}  ({doc['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
