"""Benchmark: replication lag, saturated throughput and cost per record, replicator vs the baseline.

Two DynamoDB Local processes stand for two regions. The system under test (the replicator, run as
``python -m replicator run --config ...``, or ``bench/baseline.py``) always runs as its own process, so
its CPU time and RSS are measured with psutil, apart from the harness's.

Phases (each system gets its own fresh tables; the systems never run at the same time):

1. preload: N changes (inserts, updates, deletes) are written to a source table with nothing reading
   its stream;
2. ceiling: the same N changes written by a plain concurrent aiobotocore writer (the replicator's
   ``target.max_concurrent_writes``) straight into a fresh target table: no stream, no conditions;
3. drain: each system starts on the preloaded stream (TRIM_HORIZON); the time from its start (its
   /metrics endpoint answering, or the baseline's ready line) to every record accounted for gives
   records/s, and the CPU time used meanwhile gives the cost per record;
4. lag: each system replicates a steady paced workload (``--rate`` writes/s) while the prober
   (``workload.LagProbe``) times source-acknowledged -> visible-in-target for a probe written every
   100 ms.

    python bench/run.py            # default run, a few minutes
    python bench/run.py --smoke    # about a minute, used by tests/integration/test_bench_smoke.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import workload
from replicator_dev.local.common import create_table, free_port
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.install import ensure_installed

BENCH_DIR = Path(__file__).resolve().parent
SOURCE_REGION = "us-east-1"
TARGET_REGION = "eu-west-1"
MB = 1024 * 1024
MIN_PROBES = 200
"""A lag figure on fewer probes is reported invalid, not as a result."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """One run's parameters."""

    rate: float
    lag_duration_s: float
    preload: int
    item_size: int
    concurrency: int
    env: dict[str, str]
    profile: bool
    systems: tuple[str, ...]
    half_ceiling: bool = True


class System:
    """A system under test running as a separate process, with a progress counter."""

    name = "?"

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        """Wrap a started process."""
        self.proc = proc
        self.log_path = log_path
        self.sampler = workload.ProcessSampler(proc.pid).start()

    def progress(self) -> tuple[int, float]:
        """Return records accounted for so far, and when that was observed (monotonic)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the process is up and about to read."""
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL after 20 s)."""
        self.sampler.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def check_alive(self) -> None:
        """Fail with the log's tail if the process died."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")


class ReplicatorProcess(System):
    """``python -m replicator run --config``; progress from its /metrics endpoint."""

    name = "replicator"

    @classmethod
    def start(
        cls,
        tmp: Path,
        label: str,
        *,
        source: DynamoDBLocal,
        target: DynamoDBLocal,
        table: str,
        target_table: str,
        settings: Settings,
    ) -> ReplicatorProcess:
        """Write a config and launch the service."""
        port = free_port()
        cfg = {
            "source": {"region": SOURCE_REGION, "table": table, "endpoint_url": source.endpoint_url},
            "target": {
                "region": TARGET_REGION,
                "table": target_table,
                "endpoint_url": target.endpoint_url,
                "max_concurrent_writes": settings.concurrency,
            },
            "checkpoint": {"backend": "sqlite", "path": str(tmp / f"{label}-checkpoints.db")},
            "metrics": {"host": "127.0.0.1", "port": port},
            "logging": {"level": "INFO", "format": "json"},
        }
        path = tmp / f"{label}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log_path = tmp / f"{label}.log"
        argv = [sys.executable, "-m", "replicator", "run", "--config", str(path)]
        env = {**os.environ, **settings.env}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        system = cls(proc, log_path)
        system.port = port
        if settings.profile:
            # py-spy samples on-CPU stacks only (idle excluded) without slowing the process much.
            out = BENCH_DIR / "results" / f"profile-{label}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--format",
                    "raw",
                    "-o",
                    str(out),
                    "--rate",
                    "250",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return system

    port: int = 0

    def _scrape(self) -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "replicator_records_total":
                    out[s.labels["outcome"]] = out.get(s.labels["outcome"], 0.0) + s.value
        return out

    def outcomes(self) -> dict[str, int]:
        """Return records by outcome (replicated, collapsed, ...)."""
        return {k: int(v) for k, v in (self._scrape() or {}).items()}

    def ready(self) -> bool:
        """/metrics answers: the service has opened its clients and is resolving the stream."""
        return self._scrape() is not None

    def progress(self) -> tuple[int, float]:
        """Every record that reached an outcome."""
        scraped = self._scrape() or {}
        return int(sum(scraped.values())), time.monotonic()


class BaselineProcess(System):
    """``bench/baseline.py``; progress from the lines it prints."""

    name = "baseline"

    @classmethod
    def start(
        cls,
        tmp: Path,
        label: str,
        *,
        source: DynamoDBLocal,
        target: DynamoDBLocal,
        stream_arn: str,
        target_table: str,
        settings: Settings,  # noqa: ARG003 - same signature as ReplicatorProcess.start
    ) -> BaselineProcess:
        """Launch the baseline."""
        log_path = tmp / f"{label}.log"
        argv = [
            sys.executable,
            str(BENCH_DIR / "baseline.py"),
            "--source-endpoint",
            source.endpoint_url,
            "--target-endpoint",
            target.endpoint_url,
            "--stream-arn",
            stream_arn,
            "--target-table",
            target_table,
            "--source-region",
            SOURCE_REGION,
            "--target-region",
            TARGET_REGION,
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        system = cls(proc, log_path)
        system._records = 0
        system._at = time.monotonic()
        system._ready = False
        threading.Thread(target=system._follow, daemon=True).start()
        return system

    _records: int
    _at: float
    _ready: bool

    def _follow(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101 - piped above
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "ready" in msg:
                self._ready = True
            else:
                self._records, self._at = msg["records"], msg["t"]

    def ready(self) -> bool:
        """Return whether the baseline printed its ready line."""
        return self._ready

    def progress(self) -> tuple[int, float]:
        """Return records handled, as of the baseline's last batch."""
        return self._records, self._at


def _start(
    system: str,
    tmp: Path,
    label: str,
    *,
    source: DynamoDBLocal,
    target: DynamoDBLocal,
    table: str,
    target_table: str,
    settings: Settings,
) -> System:
    if system == "replicator":
        return ReplicatorProcess.start(
            tmp,
            label,
            source=source,
            target=target,
            table=table,
            target_table=target_table,
            settings=settings,
        )
    arn = source.client().describe_table(TableName=table)["Table"]["LatestStreamArn"]
    return BaselineProcess.start(
        tmp, label, source=source, target=target, stream_arn=arn, target_table=target_table, settings=settings
    )


async def _wait(condition: Any, system: System, timeout_s: float, what: str, every_s: float = 0.02) -> None:  # noqa: ANN401
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        system.check_alive()
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(every_s)
    raise RuntimeError(f"{system.name}: timed out after {timeout_s} s waiting for {what}")


def _live_items(ops: list[workload.Op]) -> int:
    live: dict[str, bool] = {}
    for op in ops:
        live[op.key["pk"]["S"]] = op.item is not None
    return sum(live.values())


def _count_items(target: DynamoDBLocal, table: str) -> int:
    """Items in a table that are not tombstones."""
    client = target.client()
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Select": "COUNT",
        "FilterExpression": "attribute_not_exists(#d)",
        "ExpressionAttributeNames": {"#d": "_rep_deleted"},
    }
    total = 0
    while True:
        page = client.scan(**kwargs)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class Bench:
    """One benchmark run against two DynamoDB Local processes."""

    def __init__(
        self, settings: Settings, source: DynamoDBLocal, target: DynamoDBLocal, tmp: Path, console: Console
    ) -> None:
        """Hold the parts; ``run`` does the work."""
        self.s = settings
        self.source = source
        self.target = target
        self.tmp = tmp
        self.console = console

    def _tables(self, name: str) -> None:
        create_table(self.source.endpoint_url, name, stream_view_type="NEW_AND_OLD_IMAGES", region_name=SOURCE_REGION)
        create_table(self.target.endpoint_url, name, stream_view_type=None, region_name=TARGET_REGION)

    async def run(self) -> dict[str, Any]:
        """All phases; returns the results document."""
        session = workload.aio_session()
        cfg = workload.client_config(self.s.concurrency)
        async with (
            session.create_client(
                "dynamodb", region_name=SOURCE_REGION, endpoint_url=self.source.endpoint_url, config=cfg
            ) as src,
            session.create_client(
                "dynamodb", region_name=TARGET_REGION, endpoint_url=self.target.endpoint_url, config=cfg
            ) as tgt,
        ):
            results: dict[str, Any] = {"throughput": {}, "lag": {}}
            results["throughput"] = await self._throughput(src, tgt)
            for system in self.s.systems:
                self.console.print(f"lag: {system} at {self.s.rate:g} writes/s for {self.s.lag_duration_s:g} s ...")
                results["lag"][system] = await self._lag(system, src, tgt, rate=self.s.rate)
            if "replicator" in self.s.systems and self.s.half_ceiling:
                # Busy-shard lag at half the ceiling measured in this run, not only at a fixed 100 writes/s.
                half = round(results["throughput"]["ceiling"]["records_per_s"] / 2)
                self.console.print(f"lag: replicator at half the ceiling, {half:g} writes/s ...")
                results["lag_half_ceiling"] = {"replicator": await self._lag("replicator", src, tgt, rate=half)}
            return results

    async def _throughput(self, src: Any, tgt: Any) -> dict[str, Any]:  # noqa: ANN401 - aiobotocore
        n = self.s.preload
        # Updates and deletes touch keys last changed a page (1000 records) earlier: few same-key pairs per
        # page, so the drain measures writes, not collapsing (smaller preloads: a tenth of the run).
        ops = list(workload.operations(n, item_size=self.s.item_size, spread=min(1000, max(1, n // 10))))
        expected_items = _live_items(ops)
        table = "sat"
        create_table(self.source.endpoint_url, table, stream_view_type="NEW_AND_OLD_IMAGES", region_name=SOURCE_REGION)
        self.console.print(f"preload: {n} changes into the source stream ...")
        t = time.perf_counter()
        await workload.ordered_apply(src, table, ops, concurrency=self.s.concurrency)
        out: dict[str, Any] = {
            "preloaded": n,
            "preload_s": round(time.perf_counter() - t, 2),
            "expected_items": expected_items,
        }
        create_table(self.target.endpoint_url, "ceiling", stream_view_type=None, region_name=TARGET_REGION)
        self.console.print(f"ceiling: plain concurrent writer, concurrency {self.s.concurrency} ...")
        seconds = await workload.apply_ops(tgt, "ceiling", ops, concurrency=self.s.concurrency)
        out["ceiling"] = {
            "seconds": round(seconds, 3),
            "records_per_s": round(n / seconds, 1),
            "concurrency": self.s.concurrency,
        }
        for system in self.s.systems:
            self.console.print(f"drain: {system} ...")
            target_table = f"sat_{system}"
            create_table(self.target.endpoint_url, target_table, stream_view_type=None, region_name=TARGET_REGION)
            out[system] = await self._drain(system, table, target_table, n)
            out[system]["items_in_target"] = _count_items(self.target, target_table)
            out[system]["ratio_to_ceiling"] = round(out[system]["records_per_s"] / out["ceiling"]["records_per_s"], 3)
        return out

    async def _drain(self, system_name: str, table: str, target_table: str, n: int) -> dict[str, Any]:
        system = _start(
            system_name,
            self.tmp,
            f"drain-{system_name}",
            source=self.source,
            target=self.target,
            table=table,
            target_table=target_table,
            settings=self.s,
        )
        try:
            await _wait(system.ready, system, 60, "start-up", every_s=0.005)
            t0, cpu0 = time.monotonic(), system.sampler.cpu_s()
            await _wait(lambda: system.progress()[0] >= n, system, 600, f"{n} records", every_s=0.1)
            records, t1 = system.progress()
            if system_name != "replicator":
                t1 = min(t1, time.monotonic())
            cpu1 = system.sampler.cpu_s()
            outcomes = system.outcomes() if isinstance(system, ReplicatorProcess) else {}
        finally:
            system.stop()
        seconds = t1 - t0
        cpu = cpu1 - cpu0
        return {
            "records": records,
            "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds, 1),
            "cpu_s": round(cpu, 3),
            "cpu_ms_per_record": round(cpu / records * 1000, 4),
            "cpu_s_per_10k": round(cpu / records * 10_000, 3),
            "peak_rss_mb": round(system.sampler.peak_rss / MB, 1),
            "outcomes": outcomes,
        }

    async def _lag(self, system_name: str, src: Any, tgt: Any, *, rate: float) -> dict[str, Any]:  # noqa: ANN401 - aiobotocore
        del tgt  # the prober has its own clients (workload.ThreadedLagProbe)
        table = f"lag_{system_name}_{int(rate)}"
        self._tables(table)
        system = _start(
            system_name,
            self.tmp,
            f"lag-{system_name}",
            source=self.source,
            target=self.target,
            table=table,
            target_table=table,
            settings=self.s,
        )
        try:
            await _wait(system.ready, system, 60, "start-up")
            # One item through end to end: the system is reading before the clock starts.
            await src.put_item(TableName=table, Item={"pk": {"S": "warmup"}})

            def arrived() -> bool:
                return "Item" in self.target.client().get_item(TableName=table, Key={"pk": {"S": "warmup"}})

            await _wait(arrived, system, 60, "the warm-up item", every_s=0.05)
            before, _ = system.progress()
            cpu0 = system.sampler.cpu_s()
            system.sampler.peak_rss = 0
            stop = asyncio.Event()
            probe = workload.ThreadedLagProbe(
                self.source.endpoint_url, self.target.endpoint_url, table, regions=(SOURCE_REGION, TARGET_REGION)
            )
            # Updates and deletes touch keys written at least 2 s before: a delete never overtakes the put
            # of its key in the open-loop driver (a delete of a missing key would make no stream record).
            ops = workload.operations(10**9, item_size=self.s.item_size, seed=11, spread=int(2 * rate))
            load = asyncio.create_task(workload.paced_workload(src, table, ops, rate=rate, stop=stop))
            probe.start()
            await asyncio.sleep(self.s.lag_duration_s)
            stop.set()
            writes = await load
            await asyncio.to_thread(probe.stop)
            expected = before + writes + len(probe.lags_s) + probe.lost
            # Every change accounted for (the prober's probes included) before CPU is read.
            with contextlib.suppress(RuntimeError):
                await _wait(lambda: system.progress()[0] >= expected, system, 30, "catch-up", every_s=0.05)
            after, _ = system.progress()
            cpu = system.sampler.cpu_s() - cpu0
            peak = system.sampler.peak_rss
        finally:
            system.stop()
        records = after - before
        return {
            "writes_per_s": rate,
            "duration_s": self.s.lag_duration_s,
            "workload_writes": writes,
            "probes": len(probe.lags_s),
            "probes_lost": probe.lost,
            "valid": len(probe.lags_s) >= MIN_PROBES,
            "records": records,
            "expected_records": expected - before,
            **workload.percentiles(probe.lags_s),
            "cpu_s": round(cpu, 3),
            "cpu_s_per_10k": round(cpu / max(records, 1) * 10_000, 3),
            "peak_rss_mb": round(peak / MB, 1),
        }


def _targets(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lag = res["lag"].get("replicator")
    thr = res["throughput"].get("replicator")
    base = res["throughput"].get("baseline")
    out: dict[str, dict[str, Any]] = {}
    if lag and lag["p99_ms"] is not None:
        out["lag_p99_under_500ms"] = {"value": lag["p99_ms"], "holds": lag["p99_ms"] < 500, "valid": lag["valid"]}  # noqa: PLR2004
        out["lag_p50_under_250ms"] = {"value": lag["p50_ms"], "holds": lag["p50_ms"] < 250, "valid": lag["valid"]}  # noqa: PLR2004
    half = res.get("lag_half_ceiling", {}).get("replicator")
    if half and half["p99_ms"] is not None:
        out["lag_p99_under_500ms_at_half_ceiling"] = {
            "value": half["p99_ms"],
            "writes_per_s": half["writes_per_s"],
            "holds": half["p99_ms"] < 500,  # noqa: PLR2004 - the target
            "valid": half["valid"],
        }
    if thr:
        out["throughput_at_least_90pct_of_ceiling"] = {
            "value": thr["ratio_to_ceiling"],
            "holds": thr["ratio_to_ceiling"] >= 0.9,  # noqa: PLR2004 - the target
        }
    if thr and base:
        ratio = thr["cpu_ms_per_record"] / base["cpu_ms_per_record"]
        out["cpu_per_record_at_most_third_of_baseline"] = {"value": round(ratio, 3), "holds": ratio <= 1 / 3}
    if lag:
        peak = max(lag["peak_rss_mb"], (thr or {}).get("peak_rss_mb", 0))
        out["rss_under_150mb"] = {"value": peak, "holds": peak < 150}  # noqa: PLR2004 - the target
    return out


def _fmt(value: Any) -> str:  # noqa: ANN401
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"  # noqa: PLR2004
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(doc: dict[str, Any], console: Console) -> None:
    """Print the figures side by side."""
    systems = [s for s in ("replicator", "baseline") if s in doc["results"]["lag"]]
    table = Table(
        title=f"replicator bench — {doc['date']} — nproc {doc['machine']['nproc']}, "
        f"load {doc['machine']['load_before'][0]:.2f} -> {doc['machine']['load_after'][0]:.2f}"
    )
    table.add_column("figure")
    for s in systems:
        table.add_column(s, justify="right")
    lag = doc["results"]["lag"]
    thr = doc["results"]["throughput"]
    rate = doc["settings"]["rate"]
    for key, label in (
        ("p50_ms", "lag p50 (ms)"),
        ("p95_ms", "lag p95 (ms)"),
        ("p99_ms", "lag p99 (ms)"),
        ("max_ms", "lag max (ms)"),
    ):
        table.add_row(f"{label} @ {rate:g} writes/s", *(_fmt(lag[s][key]) for s in systems))
    table.add_row("probes (lost)", *(f"{lag[s]['probes']} ({lag[s]['probes_lost']})" for s in systems))
    half = doc["results"].get("lag_half_ceiling", {}).get("replicator")
    if half:
        table.add_row(
            f"lag p50 / p99 (ms) @ half the ceiling, {half['writes_per_s']:g} writes/s",
            f"{_fmt(half['p50_ms'])} / {_fmt(half['p99_ms'])}" + ("" if half["valid"] else " invalid"),
            *(["-"] * (len(systems) - 1)),
        )
        table.add_row("  probes (lost)", f"{half['probes']} ({half['probes_lost']})", *(["-"] * (len(systems) - 1)))
    table.add_row("CPU s / 10k records, live traffic", *(_fmt(lag[s]["cpu_s_per_10k"]) for s in systems))
    table.add_row("peak RSS, live traffic (MB)", *(_fmt(lag[s]["peak_rss_mb"]) for s in systems))
    table.add_row(
        f"drain of {thr['preloaded']:,} records (records/s)",
        *(_fmt(thr[s]["records_per_s"]) for s in systems),
    )
    table.add_row(
        f"  ratio to ceiling ({thr['ceiling']['records_per_s']:,.0f} writes/s)",
        *(_fmt(thr[s]["ratio_to_ceiling"]) for s in systems),
    )
    table.add_row("CPU ms / record, drain", *(_fmt(thr[s]["cpu_ms_per_record"]) for s in systems))
    table.add_row("CPU s / 10k records, drain", *(_fmt(thr[s]["cpu_s_per_10k"]) for s in systems))
    table.add_row("peak RSS, drain (MB)", *(_fmt(thr[s]["peak_rss_mb"]) for s in systems))
    table.add_row(
        f"items in target (expected {thr['expected_items']:,})",
        *(_fmt(thr[s]["items_in_target"]) for s in systems),
    )
    console.print(table)
    for name, t in doc["targets"].items():
        verdict = "[green]holds[/]" if t["holds"] else "[red]misses[/]"
        if not t.get("valid", True):
            verdict = f"[yellow]invalid (< {MIN_PROBES} probes)[/]"
        console.print(f"  {verdict}  {name}: {t['value']}")


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    """Command line -> settings."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a short run (about a minute) for CI")
    p.add_argument("--rate", type=float, default=100.0, help="workload writes/s in the lag phase")
    p.add_argument("--lag-duration", type=float, default=None, help="seconds of live traffic per system (default 30)")
    p.add_argument("--preload", type=int, default=None, help="changes preloaded for the drain (default 10000)")
    p.add_argument("--item-size", type=int, default=400, help="approximate item size in bytes")
    p.add_argument("--concurrency", type=int, default=64, help="target.max_concurrent_writes and the ceiling's writers")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="REPLICATOR_X__Y=V",
        help="extra environment for the replicator process (config overrides)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile the replicator with py-spy (pip install py-spy) into bench/results/profile-*.txt",
    )
    p.add_argument(
        "--no-half-ceiling",
        action="store_true",
        help="skip the replicator's lag phase at half the measured ceiling (skipped with --smoke)",
    )
    p.add_argument("--only", choices=["replicator", "baseline"], default=None, help="measure one system only")
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep configs and process logs here (default: a temp dir)"
    )
    p.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/<timestamp>.json)")
    a = p.parse_args(argv)
    settings = Settings(
        rate=a.rate,
        lag_duration_s=a.lag_duration if a.lag_duration is not None else (5.0 if a.smoke else 30.0),
        preload=a.preload if a.preload is not None else (1000 if a.smoke else 10_000),
        item_size=a.item_size,
        concurrency=a.concurrency,
        env=dict(e.split("=", 1) for e in a.env),
        profile=a.profile,
        systems=(a.only,) if a.only else ("replicator", "baseline"),
        half_ceiling=not a.smoke and not a.no_half_ceiling,
    )
    return settings, a


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON."""
    settings, args = parse_args(argv)
    console = Console()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    ensure_installed()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    with (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir
        else tempfile.TemporaryDirectory(prefix="replicator-bench-") as tmp,
        DynamoDBLocal(region_name=SOURCE_REGION) as source,
        DynamoDBLocal(region_name=TARGET_REGION) as target,
    ):
        results = asyncio.run(Bench(settings, source, target, Path(tmp), console).run())
    now = dt.datetime.now(tz=dt.UTC)
    doc: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "nproc": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {**dataclasses.asdict(settings), "smoke": args.smoke},
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    doc["targets"] = _targets(results)
    out = args.output or BENCH_DIR / "results" / f"{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    if len(settings.systems) == 2:  # noqa: PLR2004 - both systems: the side-by-side table
        render(doc, console)
    else:
        console.print_json(data=results)
    console.print(f"results: {out}  ({doc['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
