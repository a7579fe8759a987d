"""Benchmark: target writes against a table that throttles above a set rate (issue 15, item 3).

DynamoDB Local never throttles, so the target is ``replicator_dev.local.throttling_proxy`` in front of it:
writes beyond ``--ceiling`` per second get ``ProvisionedThroughputExceededException``. For each mode:

- ``unthrottled``: the proxy never throttles (what the pipeline drains on this machine, for reference);
- ``independent``: ``target.adaptive_concurrency: false``, every one of the 64 writers backs off alone
  (the behaviour before the write gate);
- ``aimd``: the default, one concurrency limit for the worker, cut by 0.7 on a throttle;
- ``aimd+cap``: also ``target.max_writes_per_s`` at 90% of the ceiling;

the replicator (its own process, ``python -m replicator run``) drains ``--preload`` changes through the
throttling proxy: records/s against the ceiling, and the share of write calls throttled (counted by the
proxy). Then throttling stops and a paced workload (``--rate`` writes/s) runs with the lag prober for
``--lag-duration`` s: the lag must not stay collapsed once the target accepts writes again (fewer than
200 probes: reported invalid).

    python bench/throttle.py                    # about 6 minutes
    python bench/throttle.py --modes aimd --ceiling 100
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import run as harness
import workload
from replicator_dev.local.common import create_table
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.install import ensure_installed
from replicator_dev.local.throttling_proxy import ThrottlingProxy

BENCH_DIR = Path(__file__).resolve().parent
MIN_PROBES = 200
MODES = ("unthrottled", "independent", "aimd", "aimd+cap")


def _mode_env(mode: str, ceiling: float) -> dict[str, str]:
    if mode == "independent":
        return {"REPLICATOR_TARGET__ADAPTIVE_CONCURRENCY": "false"}
    if mode == "aimd+cap":
        return {"REPLICATOR_TARGET__MAX_WRITES_PER_S": str(0.9 * ceiling)}
    return {}


def _scrape(system: harness.ReplicatorProcess, names: tuple[str, ...]) -> dict[str, float]:
    import urllib.request  # noqa: PLC0415 - only here

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{system.port}/metrics", timeout=2) as resp:
        for family in text_string_to_metric_families(resp.read().decode()):
            for s in family.samples:
                if s.name in names:
                    out[s.name] = out.get(s.name, 0.0) + s.value
    return out


async def one_mode(
    mode: str,
    args: argparse.Namespace,
    *,
    source: DynamoDBLocal,
    target: DynamoDBLocal,
    tmp: Path,
    console: Console,
    src: Any,  # noqa: ANN401 - aiobotocore
) -> dict[str, Any]:
    """Drain through the throttling proxy, then lag after throttling stops."""
    table = f"thr_{mode.replace('+', '_')}"
    create_table(source.endpoint_url, table, region_name=harness.SOURCE_REGION)
    create_table(target.endpoint_url, table, stream_view_type=None, region_name=harness.TARGET_REGION)
    ops = list(workload.operations(args.preload, item_size=400, spread=min(1000, max(1, args.preload // 10))))
    await workload.ordered_apply(src, table, ops, concurrency=32)
    settings = harness.Settings(
        rate=args.rate,
        lag_duration_s=args.lag_duration,
        preload=args.preload,
        item_size=400,
        concurrency=64,
        env=_mode_env(mode, args.ceiling),
        profile=False,
        systems=("replicator",),
    )
    with ThrottlingProxy(target.endpoint_url, args.ceiling) as proxy:
        proxy.throttling = mode != "unthrottled"
        system = harness.ReplicatorProcess.start(
            tmp, mode, source=source, target=proxy, table=table, target_table=table, settings=settings
        )
        try:
            await harness._wait(system.ready, system, 60, "start-up", every_s=0.01)  # noqa: SLF001
            t0 = time.monotonic()
            await harness._wait(  # noqa: SLF001
                lambda: system.progress()[0] >= args.preload, system, 900, "the drain", every_s=0.1
            )
            seconds = time.monotonic() - t0
            accepted, throttled = proxy.counts()
            metrics = _scrape(system, ("replicator_throttles_total", "replicator_target_concurrency_limit"))
            console.print(f"  {mode}: drained {args.preload} in {seconds:.1f} s; throttling off, lag probes ...")
            proxy.throttling = False
            before, _ = system.progress()
            stop = asyncio.Event()
            probe = workload.ThreadedLagProbe(
                source.endpoint_url, target.endpoint_url, table, regions=(harness.SOURCE_REGION, harness.TARGET_REGION)
            )
            load_ops = workload.operations(10**9, item_size=400, seed=11, spread=int(2 * args.rate))
            load = asyncio.create_task(workload.paced_workload(src, table, load_ops, rate=args.rate, stop=stop))
            probe.start()
            await asyncio.sleep(args.lag_duration)
            stop.set()
            await load
            await asyncio.to_thread(probe.stop)
            limit_after = _scrape(system, ("replicator_target_concurrency_limit",))
        finally:
            system.stop()
    calls = accepted + throttled
    lag = workload.percentiles(probe.lags_s)
    return {
        "mode": mode,
        "ceiling_writes_per_s": args.ceiling,
        "drain": {
            "records": args.preload,
            "seconds": round(seconds, 2),
            "records_per_s": round(args.preload / seconds, 1),
            "writes_accepted_per_s": round(accepted / seconds, 1),
            "ratio_to_ceiling": round(accepted / seconds / args.ceiling, 3),
            "write_calls": calls,
            "throttled_calls": throttled,
            "throttled_share": round(throttled / max(calls, 1), 3),
            "replicator_throttles": metrics.get("replicator_throttles_total"),
            "concurrency_limit_at_end": metrics.get("replicator_target_concurrency_limit"),
        },
        "after_throttling": {
            "writes_per_s": args.rate,
            "records": system.progress()[0] - before if system.proc.poll() is None else None,
            "concurrency_limit_at_end": limit_after.get("replicator_target_concurrency_limit"),
            **lag,
            "probes": len(probe.lags_s),
            "probes_lost": probe.lost,
            "valid": len(probe.lags_s) >= MIN_PROBES,
        },
    }


async def run(
    args: argparse.Namespace, source: DynamoDBLocal, target: DynamoDBLocal, tmp: Path, console: Console
) -> Any:  # noqa: ANN401
    """Every mode in turn."""
    session = workload.aio_session()
    cfg = workload.client_config(64)
    async with (
        session.create_client(
            "dynamodb", region_name=harness.SOURCE_REGION, endpoint_url=source.endpoint_url, config=cfg
        ) as src,
    ):
        results = []
        for mode in args.modes:
            console.print(f"mode {mode}: ceiling {args.ceiling:g} writes/s, {args.preload} changes ...")
            results.append(await one_mode(mode, args, source=source, target=target, tmp=tmp, console=console, src=src))
        return results


def render(doc: dict[str, Any], console: Console) -> None:
    """One row per mode."""
    table = Table(
        title=f"throttled target — {doc['date']} — ceiling {doc['settings']['ceiling']:g} writes/s — load "
        f"{doc['machine']['load_before'][0]:.2f} -> {doc['machine']['load_after'][0]:.2f}"
    )
    for col in (
        "mode",
        "drain (rec/s)",
        "writes/s",
        "/ ceiling",
        "throttled share",
        "limit at end",
        "lag p50 after (ms)",
        "lag p99 after (ms)",
        "probes (lost)",
    ):
        table.add_column(col, justify="right")
    for r in doc["results"]:
        d, a = r["drain"], r["after_throttling"]
        table.add_row(
            r["mode"],
            f"{d['records_per_s']:,.1f}",
            f"{d['writes_accepted_per_s']:,.1f}",
            f"{d['ratio_to_ceiling']:.2f}",
            f"{d['throttled_share']:.1%} ({d['throttled_calls']:,} of {d['write_calls']:,})",
            f"{d['concurrency_limit_at_end'] or '-'}",
            f"{a['p50_ms']}" if a["valid"] else "invalid",
            f"{a['p99_ms']}" if a["valid"] else "invalid",
            f"{a['probes']} ({a['probes_lost']})",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run, print, write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--ceiling", type=float, default=50.0, help="writes/s the proxy lets through")
    p.add_argument("--preload", type=int, default=3000, help="changes drained through the throttling target")
    p.add_argument("--rate", type=float, default=40.0, help="workload writes/s once throttling stops")
    p.add_argument("--lag-duration", type=float, default=15.0, help="seconds of lag probing after throttling")
    p.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/throttle-<ts>.json)")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}")
    console = Console()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    ensure_installed()
    started, load_before = time.monotonic(), os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="replicator-throttle-") as tmp,
        DynamoDBLocal(region_name=harness.SOURCE_REGION) as source,
        DynamoDBLocal(region_name=harness.TARGET_REGION) as target,
    ):
        results = asyncio.run(run(args, source, target, Path(tmp), console))
    now = dt.datetime.now(tz=dt.UTC)
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/throttle.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "nproc": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    out = args.output or BENCH_DIR / "results" / f"throttle-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    render(doc, console)
    console.print(f"results: {out}  ({doc['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
