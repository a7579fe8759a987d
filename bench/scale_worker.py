"""One worker of ``bench/scale.py``: the real Replicator with leases, on the simulated stream (bench only).

The worker's checkpoint (lease) table and target table are on DynamoDB Local; its source is
``scale_stream.SimStream`` in this process. Every second it appends a sample (RSS, CPU time, GetRecords
counters, leases held) to ``--out``; at SIGTERM it stops like the service does and appends the lag probes
(from the target writes: write acknowledged minus record appended) and the rebalance timings.

    python bench/scale_worker.py --endpoint URL --checkpoint-table T --target-table T --worker-id w1 \
        --schedule schedule.json --out w1.jsonl [--reader '{"max_idle_poll_interval_s": 1.0}']
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_stream import Schedule, SimStream

from replicator.aws.clients import Clients, TargetClient, open_checkpoint_client, open_target_client
from replicator.checkpoint.lease_table import LeaseItem
from replicator.checkpoint.leases import LeaseManager
from replicator.core.config import Config
from replicator.observe.logs import configure
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator
from replicator.source.shards import ShardTree

if TYPE_CHECKING:
    from replicator.aws.lean import LeanDynamoDB


class ProbedTarget:
    """The target's write transport, noting each write's lag (acknowledged minus appended to the stream)."""

    def __init__(self, client: Any) -> None:  # noqa: ANN401 - the lean transport or an aiobotocore client
        """Wrap the transport."""
        self._client = client
        self.lags: dict[str, list[tuple[float, float]]] = {"busy": [], "wake": []}
        """(acknowledged at, lag) of every probed record, by kind."""

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - delegates every other call
        """Everything else is the client's."""
        return getattr(self._client, name)

    async def put_item(self, **params: Any) -> Any:  # noqa: ANN401 - botocore's shapes
        """Write, then note the lag of a probed record."""
        out = await self._client.put_item(**params)
        item = params["Item"]
        if "t" in item and "kind" in item:
            now = time.time()
            self.lags[item["kind"]["S"]].append((now, now - float(item["t"]["N"])))
        return out


class CountedTable:
    """The checkpoint (lease) table's client, counting its writes (renewals, takes, checkpoints, deletes)."""

    def __init__(self, client: Any) -> None:  # noqa: ANN401 - the lean table or an aiobotocore client
        """Wrap the client."""
        self._client = client
        self.writes = 0

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - delegates every other call
        """Everything else is the client's."""
        return getattr(self._client, name)

    async def put_item(self, **params: Any) -> Any:  # noqa: ANN401 - botocore's shapes
        """Count, then write."""
        self.writes += 1
        return await self._client.put_item(**params)

    async def update_item(self, **params: Any) -> Any:  # noqa: ANN401 - botocore's shapes
        """Count, then write."""
        self.writes += 1
        return await self._client.update_item(**params)

    async def delete_item(self, **params: Any) -> Any:  # noqa: ANN401 - botocore's shapes
        """Count, then write."""
        self.writes += 1
        return await self._client.delete_item(**params)


REBALANCES: list[tuple[float, float, int]] = []
"""(when, seconds, live leases read) of every rebalance of this process's lease manager."""
REFRESHES: list[tuple[float, float, int]] = []
"""(when, seconds, live leases read) of every lease-table read (the part of a rebalance that scales)."""


def _time_rebalances() -> None:
    rebalance, refresh = LeaseManager.rebalance, LeaseManager.refresh

    async def timed_rebalance(self: LeaseManager, tree: ShardTree) -> list[str]:
        started = time.perf_counter()
        try:
            return await rebalance(self, tree)
        finally:
            REBALANCES.append((time.time(), time.perf_counter() - started, len(self.table.items)))

    async def timed_refresh(self: LeaseManager) -> dict[str, LeaseItem]:
        started = time.perf_counter()
        try:
            return await refresh(self)
        finally:
            REFRESHES.append((time.time(), time.perf_counter() - started, len(self.table.items)))

    LeaseManager.rebalance = timed_rebalance  # type: ignore[method-assign]
    LeaseManager.refresh = timed_refresh  # type: ignore[method-assign]


def _read_schedule(stream: SimStream, path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        stream.schedule = Schedule(**json.loads(path.read_text()))


async def _follow_schedule(stream: SimStream, path: Path) -> None:
    while True:
        _read_schedule(stream, path)
        await asyncio.sleep(0.5)


async def _sample(replicator: Replicator, stream: SimStream, table: CountedTable, out: TextIO) -> None:
    proc = psutil.Process()
    while True:
        cpu = proc.cpu_times()
        held = replicator.state.count("owned")
        sample = {
            "t": time.time(),
            "rss": proc.memory_info().rss,
            "cpu_s": cpu.user + cpu.system,
            "held": held,
            "lease_writes": table.writes,
            **stream.counters.__dict__,
        }
        out.write(json.dumps(sample) + "\n")
        out.flush()
        await asyncio.sleep(1.0)


async def main(a: argparse.Namespace) -> None:
    """Run one worker until SIGTERM."""
    stream = SimStream(
        stagger=not a.aligned,
        shards=a.shards,
        busy_fraction=a.busy_fraction,
        busy_rate=a.busy_rate,
        lifetime_s=a.lifetime_s,
        retention_s=a.retention_s,
    )
    cfg = Config(
        source={"region": "us-east-1", "table": "Scale"},
        target={"region": "us-east-1", "table": a.target_table, "endpoint_url": a.endpoint},
        checkpoint={"backend": "dynamodb", "table": a.checkpoint_table},
        starting_position="TRIM_HORIZON",
        metrics={"enabled": False},
        worker_id=a.worker_id,
        reader=json.loads(a.reader),
        replication={"skip_echoes": False},
        leases={
            "enabled": True,
            "finished_retention_s": a.retention_s,
            "cleanup_interval_s": a.cleanup_interval_s,
        },
    )
    configure("WARNING", "json")
    _time_rebalances()
    # The target and checkpoint clients the service opens (lean paths included); DynamoDB Local takes any key.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    async with contextlib.AsyncExitStack() as stack:
        opened = await open_target_client(stack, cfg)
        target = ProbedTarget(opened.lean or opened.client)
        probed = TargetClient(opened.client, cast("LeanDynamoDB", target)) if opened.lean else TargetClient(target)
        checkpoint = CountedTable(await open_checkpoint_client(stack, cfg))
        clients = Clients(source=stream, streams=stream, target=probed, checkpoint=checkpoint)  # type: ignore[arg-type]
        replicator = Replicator(cfg, metrics=Metrics(), clients=clients)
        with Path(a.out).open("a", encoding="utf-8") as out:  # noqa: ASYNC230 - once, before the worker starts
            helpers = [
                asyncio.create_task(_follow_schedule(stream, Path(a.schedule))),
                asyncio.create_task(_sample(replicator, stream, checkpoint, out)),
            ]
            try:
                await replicator.run(stop_signals=(signal.SIGTERM, signal.SIGINT))
            finally:
                for task in helpers:
                    task.cancel()
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                out.write(
                    json.dumps(
                        {
                            "final": True,
                            "peak_rss": peak,
                            "lags": target.lags,
                            "rebalances": REBALANCES,
                            "refreshes": REFRESHES,
                        }
                    )
                )
                out.write("\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``bench/scale.py`` builds it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--checkpoint-table", required=True)
    p.add_argument("--target-table", required=True)
    p.add_argument("--worker-id", required=True)
    p.add_argument("--schedule", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--busy-fraction", type=float, default=0.05)
    p.add_argument("--busy-rate", type=float, default=2.0)
    p.add_argument("--lifetime-s", type=float, default=20.0)
    p.add_argument("--retention-s", type=float, default=120.0)
    p.add_argument("--cleanup-interval-s", type=float, default=20.0)
    p.add_argument("--reader", default="{}", help="JSON merged into the reader settings (idle polling...)")
    p.add_argument("--aligned", action="store_true", help="every shard rolls over at the same instant")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
