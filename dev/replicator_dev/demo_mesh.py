"""``replicator demo --regions 3``: a full active-active mesh of three local regions.

Three DynamoDB Local processes stand for three regions, each with the same table and a NEW_AND_OLD_IMAGES
stream. One worker per region reads its region's stream once and writes every change to the two other
regions (``targets:``), with the active-active settings of docs/conflicts.md (``timestamp_attribute``,
``source_tombstones``). Live traffic goes to all three regions over one key space, so writes conflict;
a prober per region times how long its marked item takes to appear in each other region (lag per
target, measured from outside the workers). At the end the three tables must hold the same live items,
or the demo exits 1, and what the mesh cost per application write is printed (docs/topologies.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from rich.console import Group
from rich.live import Live
from rich.table import Table

from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.compare import compare_items, scan_items
from replicator.runtime.service import Replicator
from replicator_dev.local.common import create_table, local_client
from replicator_dev.local.dynamodb_local import DynamoDBLocal

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

MESH_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
TABLE = "Orders"
TIMESTAMP = "updatedAt"
PROBE_INTERVAL_S = 0.5
PROBE_GIVE_UP_S = 30.0
CATCH_UP_LIMIT_S = 90.0


def run_mesh_demo(console: Console, tmp: Path, *, duration_s: float, rate_per_s: float, keys: int) -> int:
    """Start three regions and their workers, run the traffic; return the exit code (0: converged)."""
    with contextlib.ExitStack() as stack:
        endpoints = {
            region: stack.enter_context(DynamoDBLocal(region_name=region)).endpoint_url for region in MESH_REGIONS
        }
        for region, url in endpoints.items():
            console.print(f"region {region}: {url}")
            create_table(url, TABLE, stream_view_type="NEW_AND_OLD_IMAGES", region_name=region)
        demo = _Mesh(endpoints, tmp, console)
        return asyncio.run(demo.run(duration_s=duration_s, rate_per_s=rate_per_s, keys=keys))


def mesh_config(source: str, endpoints: dict[str, str], checkpoints: Path) -> Config:
    """One region's worker: its table's stream, written to every other region's table."""
    return Config.model_validate(
        {
            "source": {"region": source, "table": TABLE, "endpoint_url": endpoints[source]},
            "targets": [
                {"region": other, "table": TABLE, "endpoint_url": url}
                for other, url in endpoints.items()
                if other != source
            ],
            "replication": {"timestamp_attribute": TIMESTAMP, "timestamp_unit": "ms", "source_tombstones": True},
            "checkpoint": {"backend": "sqlite", "path": str(checkpoints)},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "WARNING"},
        }
    )


class _Mesh:
    def __init__(self, endpoints: dict[str, str], tmp: Path, console: Console) -> None:
        self.console = console
        self.cfg = {region: mesh_config(region, endpoints, tmp / f"{region}.db") for region in endpoints}
        self.client = {region: local_client("dynamodb", url, region_name=region) for region, url in endpoints.items()}
        self.metrics = {region: Metrics() for region in endpoints}
        self.writes = dict.fromkeys(endpoints, 0)
        self.deletes = dict.fromkeys(endpoints, 0)
        self.lags_s: dict[tuple[str, str], list[float]] = {
            (src, dst): [] for src in endpoints for dst in endpoints if src != dst
        }
        self.done = False

    async def run(self, *, duration_s: float, rate_per_s: float, keys: int) -> int:
        from replicator.observe import logs  # noqa: PLC0415

        logs.configure("WARNING", "console")
        workers = {region: Replicator(cfg, metrics=self.metrics[region]) for region, cfg in self.cfg.items()}
        services = [asyncio.create_task(w.run()) for w in workers.values()]
        try:
            for worker, service in zip(workers.values(), services, strict=True):
                started = asyncio.create_task(worker.started.wait())
                await asyncio.wait([service, started], return_when=asyncio.FIRST_COMPLETED)
                if service.done():
                    started.cancel()
                    service.result()  # raises what stopped the worker before it started
            self.console.print("3 workers running, each reading its region's stream once and writing to the other two")
            rate = rate_per_s / len(self.cfg)
            traffic = [
                asyncio.create_task(self._workload(r, duration_s, rate, keys, i)) for i, r in enumerate(self.cfg)
            ]
            probers = [asyncio.create_task(self._prober(region)) for region in self.cfg]
            with Live(self._table("live traffic"), console=self.console, refresh_per_second=4) as live:
                while not all(t.done() for t in traffic):
                    live.update(self._table("live traffic"))
                    await asyncio.sleep(0.25)
                await asyncio.gather(*traffic)
                self.done = True
                await asyncio.gather(*probers)
                caught_up = await self._wait_caught_up(live)
                live.update(self._table("caught up" if caught_up else "NOT caught up"))
        finally:
            for worker in workers.values():
                worker.stop()
            await asyncio.gather(*services, return_exceptions=True)
        self._print_cost()
        return self._check_convergence()

    def _write(self, region: str, rng: random.Random, key: dict[str, Any], n: int) -> str | None:
        """One application write keeping the timestamp contract (docs/conflicts.md); lost races are retried.

        Return what was done (put or delete), None when every attempt lost a race.
        """
        client = self.client[region]
        delete = rng.random() < 0.1  # noqa: PLR2004 - 10% deletes (of live items)
        item = {
            **key,
            "status": {"S": rng.choice(["new", "paid", "shipped"])},
            "total": {"N": f"{rng.randrange(100000) / 100:.2f}"},
            "region": {"S": region},
            "seq": {"N": str(n)},
        }
        for _ in range(10):
            current = client.get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item")
            is_live = current is not None and "_rep_deleted" not in current
            old_ts = int(current[TIMESTAMP]["N"]) if current and TIMESTAMP in current else 0
            ts = {"N": str(max(int(time.time() * 1000), old_ts + 1))}
            try:
                if is_live and delete:
                    client.delete_item(
                        TableName=TABLE,
                        Key=key,
                        # Not a tombstone that arrived since the read (docs/topologies.md, "Known gap").
                        ConditionExpression=f"{TIMESTAMP} = :old AND attribute_not_exists(#del)",
                        ExpressionAttributeNames={"#del": "_rep_deleted"},
                        ExpressionAttributeValues={":old": {"N": str(old_ts)}},
                    )
                    return "delete"
                client.put_item(
                    TableName=TABLE,
                    Item={**item, TIMESTAMP: ts},
                    ConditionExpression=f"attribute_not_exists({TIMESTAMP}) OR {TIMESTAMP} < :ts",
                    ExpressionAttributeValues={":ts": ts},
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue
            return "put"
        return None

    async def _workload(self, region: str, duration_s: float, rate_per_s: float, keys: int, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not security
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration_s:
            key = {"pk": {"S": f"order#{rng.randrange(keys):05d}"}}
            done = await asyncio.to_thread(self._write, region, rng, key, n)
            self.writes[region] += done is not None
            self.deletes[region] += done == "delete"
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate_per_s - time.monotonic()))

    async def _prober(self, region: str) -> None:
        """Time a write in ``region`` until it is visible in each other region (lag per target)."""
        i = 0
        others = [r for r in self.cfg if r != region]
        while not self.done:
            key = {"pk": {"S": f"probe#{region}#{i % 5}"}}
            token = str(time.time_ns())
            item = {**key, "token": {"S": token}, TIMESTAMP: {"N": str(int(time.time() * 1000))}}
            await asyncio.to_thread(self.client[region].put_item, TableName=TABLE, Item=item)
            self.writes[region] += 1
            acked = time.monotonic()
            await asyncio.gather(*(self._await_probe(region, other, key, token, acked) for other in others))
            i += 1
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _await_probe(self, src: str, dst: str, key: dict[str, Any], token: str, acked: float) -> None:
        while time.monotonic() - acked < PROBE_GIVE_UP_S:
            got = await asyncio.to_thread(self.client[dst].get_item, TableName=TABLE, Key=key, ConsistentRead=True)
            if got.get("Item", {}).get("token", {}).get("S") == token:
                self.lags_s[(src, dst)].append(time.monotonic() - acked)
                return
            await asyncio.sleep(0.01)

    async def _wait_caught_up(self, live: Live) -> bool:
        """Wait until no worker reads anything new for a second and every shard is caught up."""
        deadline = time.monotonic() + CATCH_UP_LIMIT_S
        last: list[float] = []
        stable = 0
        while time.monotonic() < deadline:
            live.update(self._table("draining"))
            now = [_sum(m, "replicator_records_read_total") for m in self.metrics.values()]
            ages = [_max(m, "replicator_iterator_age_seconds") for m in self.metrics.values()]
            stable = stable + 1 if now == last and max(ages) < 1 else 0
            last = now
            if stable >= 4:  # noqa: PLR2004 - a second of nothing new
                return True
            await asyncio.sleep(0.25)
        return False

    def _table(self, phase: str) -> Group:
        workers = Table(title=f"3-region mesh: {phase}", show_header=True)
        for column in ("worker", "app writes", "read", "replicated", "superseded", "echoes skipped"):
            workers.add_column(column, justify="left" if column == "worker" else "right")
        for src, metrics in self.metrics.items():
            outcomes = ("replicated", "superseded", "echo_skipped")
            counts = [f"{_sum(metrics, 'replicator_records_total', outcome=o):.0f}" for o in outcomes]
            workers.add_row(
                src, str(self.writes[src]), f"{_sum(metrics, 'replicator_records_read_total'):.0f}", *counts
            )
        lag = Table(title="lag per target (probe: write in source, seen in target)", show_header=True)
        for column in ("source → target", "p50 (ms)", "max (ms)", "probes"):
            lag.add_column(column, justify="left" if column == "source → target" else "right")
        for (src, dst), lags in self.lags_s.items():
            p50, top = (f"{statistics.median(lags) * 1000:.0f}", f"{max(lags) * 1000:.0f}") if lags else ("-", "-")
            lag.add_row(f"{src} → {dst}", p50, top, str(len(lags)))
        return Group(workers, lag)

    def _print_cost(self) -> None:
        """What the mesh cost per application write, from the workers' own metrics."""
        writes = sum(self.writes.values())
        if not writes:
            return
        figures = {
            "records read (own writes + echoes)": ("replicator_records_read_total", {}),
            "GetRecords calls": ("replicator_get_records_calls_total", {}),
            "conditional writes won (replicated)": ("replicator_records_total", {"outcome": "replicated"}),
            "conditional writes lost (superseded)": ("replicator_records_total", {"outcome": "superseded"}),
            "collapsed in a batch (not written)": ("replicator_records_total", {"outcome": "collapsed"}),
        }
        self.console.print()
        self.console.print(f"cost of {writes} application writes ({sum(self.deletes.values())} deletes), per write:")
        for name, (sample, labels) in figures.items():
            total = sum(_sum(m, sample, **labels) for m in self.metrics.values())
            self.console.print(f"  {name}: {total:.0f} ({total / writes:.2f} per application write)")

    def _check_convergence(self) -> int:
        regions = list(self.cfg)
        replication = self.cfg[regions[0]].replication
        first = [i for i in scan_items(self.client[regions[0]], TABLE) if replication.tombstone_attribute not in i]
        failed = False
        for other in regions[1:]:
            report = compare_items(first, scan_items(self.client[other], TABLE), replication)
            if not report.equal:
                self.console.print(f"[bold red]DIVERGED[/] {regions[0]} vs {other}: {report.summary()}")
                failed = True
        if failed:
            return 1
        self.console.print(
            f"[bold green]converged[/]: all 3 regions hold the same {len(first)} live items "
            "(replication markers excluded; tombstones count as deleted)"
        )
        return 0


def _sum(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _max(metrics: Metrics, name: str) -> float:
    return max((s.value for f in metrics.registry.collect() for s in f.samples if s.name == name), default=0.0)
