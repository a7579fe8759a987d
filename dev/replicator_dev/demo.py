"""``replicator demo``: the main job on embedded DynamoDB Local, end to end, in under a minute.

Two DynamoDB Local processes stand for two regions. The source table gets a NEW_AND_OLD_IMAGES stream
and a generated workload of inserts, updates and deletes while the replicator runs in this process;
a prober writes a marked item every half second and times how long it takes to appear in the target
(lag measured from outside the replicator, not from its own metrics). At the end the target must
equal the source item by item, or the demo exits 1.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.compare import compare_items, scan_items
from replicator.runtime.service import Replicator
from replicator_dev.demo_mesh import MESH_REGIONS, run_mesh_demo
from replicator_dev.local.common import create_table, exit_on_sigterm, local_client
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.install import ensure_installed

SOURCE_REGION = "us-east-1"
TARGET_REGION = "eu-west-1"
TABLE = "Orders"
PROBE_KEY_PREFIX = "probe#"
MESH_REGION_COUNT = len(MESH_REGIONS)


def run_demo(*, duration_s: float, rate_per_s: float, keys: int, regions: int = 2) -> int:
    """Run the demo; return the process exit code (0: target equals source).

    ``regions`` 3: a full active-active mesh of three regions instead (``demo_mesh``).
    """
    console = Console()
    exit_on_sigterm()  # a SIGTERM must still run the cleanup that stops the DynamoDB Local processes
    # DynamoDB Local accepts any credentials; the demo must not need (or touch) real ones.
    for name, value in (("AWS_ACCESS_KEY_ID", "demo"), ("AWS_SECRET_ACCESS_KEY", "demo")):
        os.environ[name] = value
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    console.print("[bold]replicator demo[/]: installing DynamoDB Local if needed ...")
    ensure_installed()
    if regions == MESH_REGION_COUNT:
        with tempfile.TemporaryDirectory(prefix="replicator-demo-") as tmp:
            return run_mesh_demo(console, Path(tmp), duration_s=duration_s, rate_per_s=rate_per_s, keys=keys)
    with (
        tempfile.TemporaryDirectory(prefix="replicator-demo-") as tmp,
        DynamoDBLocal(region_name=SOURCE_REGION) as source,
        DynamoDBLocal(region_name=TARGET_REGION) as target,
    ):
        console.print(
            f"source region {SOURCE_REGION}: {source.endpoint_url}   "
            f"target region {TARGET_REGION}: {target.endpoint_url}"
        )
        create_table(source.endpoint_url, TABLE, stream_view_type="NEW_AND_OLD_IMAGES", region_name=SOURCE_REGION)
        create_table(target.endpoint_url, TABLE, stream_view_type=None, region_name=TARGET_REGION)
        cfg = Config(
            source={"region": SOURCE_REGION, "table": TABLE, "endpoint_url": source.endpoint_url},  # type: ignore[arg-type]
            target={"region": TARGET_REGION, "table": TABLE, "endpoint_url": target.endpoint_url},  # type: ignore[arg-type]
            checkpoint={"backend": "sqlite", "path": Path(tmp) / "checkpoints.db"},  # type: ignore[arg-type]
            metrics={"host": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
            logging={"level": "WARNING"},  # type: ignore[arg-type]
        )
        demo = _Demo(cfg, source.endpoint_url, target.endpoint_url, console)
        return asyncio.run(demo.run(duration_s=duration_s, rate_per_s=rate_per_s, keys=keys))


class _Demo:
    def __init__(self, cfg: Config, source_url: str, target_url: str, console: Console) -> None:
        self.cfg = cfg
        self.console = console
        self.src = local_client("dynamodb", source_url, region_name=SOURCE_REGION)
        self.tgt = local_client("dynamodb", target_url, region_name=TARGET_REGION)
        self.metrics = Metrics()
        self.writes = 0
        self.probe_lags_s: list[float] = []
        self.done = False

    async def run(self, *, duration_s: float, rate_per_s: float, keys: int) -> int:
        from replicator.observe import logs  # noqa: PLC0415

        logs.configure("WARNING", "console")
        replicator = Replicator(self.cfg, metrics=self.metrics)
        service = asyncio.create_task(replicator.run())
        started = asyncio.create_task(replicator.started.wait())
        await asyncio.wait([service, started], return_when=asyncio.FIRST_COMPLETED)
        if service.done():
            started.cancel()
            service.result()  # raises what stopped the service before it started
        assert replicator.http is not None  # noqa: S101 - metrics are enabled in the demo config
        self.console.print(f"replicator running; metrics at http://127.0.0.1:{replicator.http.port}/metrics")
        workload = asyncio.create_task(self._workload(duration_s, rate_per_s, keys))
        prober = asyncio.create_task(self._prober())
        try:
            with Live(self._table(replicator, "live traffic"), console=self.console, refresh_per_second=4) as live:
                while not workload.done():
                    live.update(self._table(replicator, "live traffic"))
                    await asyncio.sleep(0.25)
                await workload
                self.done = True
                await prober
                caught_up = await self._wait_caught_up(replicator, live)
                live.update(self._table(replicator, "caught up" if caught_up else "NOT caught up"))
        finally:
            replicator.stop()
            await service
        return self._check_convergence()

    async def _workload(self, duration_s: float, rate_per_s: float, keys: int) -> None:
        rng = random.Random(42)  # noqa: S311 - a reproducible workload, not security
        interval = 1.0 / rate_per_s
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration_s:
            key = {"pk": {"S": f"order#{rng.randrange(keys):05d}"}}
            roll = rng.random()
            if roll < 0.1:  # noqa: PLR2004 - 10% deletes
                await asyncio.to_thread(self.src.delete_item, TableName=TABLE, Key=key)
            else:
                item = {
                    **key,
                    "status": {"S": rng.choice(["new", "paid", "shipped"])},
                    "total": {"N": f"{rng.randrange(100000) / 100:.2f}"},
                    "lines": {
                        "L": [{"M": {"sku": {"S": f"sku-{rng.randrange(50)}"}, "qty": {"N": str(rng.randrange(1, 5))}}}]
                    },
                    "seq": {"N": str(n)},
                }
                await asyncio.to_thread(self.src.put_item, TableName=TABLE, Item=item)
            n += 1
            self.writes = n
            next_at = start + n * interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _prober(self) -> None:
        """Time source write acknowledged -> item visible in the target, from outside the replicator."""
        i = 0
        while not self.done:
            key = {"pk": {"S": f"{PROBE_KEY_PREFIX}{i % 5}"}}
            token = f"{time.time_ns()}"
            await asyncio.to_thread(self.src.put_item, TableName=TABLE, Item={**key, "token": {"S": token}})
            acked = time.monotonic()
            while time.monotonic() - acked < 30:  # noqa: PLR2004 - give up on one probe after 30 s
                got = await asyncio.to_thread(self.tgt.get_item, TableName=TABLE, Key=key, ConsistentRead=True)
                if got.get("Item", {}).get("token", {}).get("S") == token:
                    self.probe_lags_s.append(time.monotonic() - acked)
                    break
                await asyncio.sleep(0.01)
            i += 1
            await asyncio.sleep(0.5)

    async def _wait_caught_up(self, replicator: Replicator, live: Live) -> bool:
        deadline = time.monotonic() + 60
        last_total = -1.0
        stable = 0
        while time.monotonic() < deadline:
            live.update(self._table(replicator, "draining"))
            total = self._sample("replicator_records_read_total") or 0.0
            stable = stable + 1 if total == last_total and self._max_iterator_age() < 1 else 0
            last_total = total
            if stable >= 4:  # noqa: PLR2004 - a second of nothing new
                return True
            await asyncio.sleep(0.25)
        return False

    def _sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        # Summed over the labels not given: every shard, and every target (replicator_records_total{target}).
        wanted = (labels or {}).items()
        total = 0.0
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == name and wanted <= sample.labels.items():
                    total += sample.value
        return total

    def _max_iterator_age(self) -> float:
        ages = [
            sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "replicator_iterator_age_seconds"
        ]
        return max(ages, default=0.0)

    def _table(self, replicator: Replicator, phase: str) -> Table:
        del replicator
        table = Table(title=f"replicator demo — {phase}", show_header=True)
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("source writes (workload)", str(self.writes))
        table.add_row("stream records read", f"{self._sample('replicator_records_read_total') or 0:.0f}")
        for outcome in ("replicated", "collapsed", "superseded", "echo_skipped", "dead_lettered"):
            value = self._sample("replicator_records_total", {"outcome": outcome}) or 0
            table.add_row(f"  {outcome}", f"{value:.0f}")
        table.add_row("iterator age, max over shards (s)", f"{self._max_iterator_age():.2f}")
        if self.probe_lags_s:
            lags = sorted(self.probe_lags_s)
            table.add_row("probe lag p50 (ms)", f"{statistics.median(lags) * 1000:.0f}")
            table.add_row("probe lag max (ms)", f"{lags[-1] * 1000:.0f}")
            table.add_row("probes", str(len(lags)))
        return table

    def _check_convergence(self) -> int:
        source_items = scan_items(self.src, TABLE)
        target_items = scan_items(self.tgt, TABLE)
        report = compare_items(source_items, target_items, self.cfg.replication)
        if report.equal:
            self.console.print(
                f"[bold green]converged[/]: target equals source, {report.compared} items compared "
                "(replication markers excluded; tombstones count as deleted)"
            )
            return 0
        self.console.print(f"[bold red]DIVERGED[/]: {report.summary()}")
        return 1
