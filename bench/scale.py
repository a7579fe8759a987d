"""Long-run scale benchmark: 1,000 shards rolling over, 3 leased workers, DynamoDB Local (no AWS).

    python bench/scale.py                  # ~10 minutes; JSON in bench/results/scale-*.json
    python bench/scale.py --smoke          # ~1 minute, 60 shards: checks that it runs and reports
    python bench/scale.py --reader '{"max_idle_poll_interval_s": 4}'   # another idle-polling setting

Three ``bench/scale_worker.py`` processes (the real Replicator, leases on a real checkpoint table on
DynamoDB Local, target table there too) read ``scale_stream.SimStream``, a stream computed from the
clock. Phases, each started once the previous one is done:

1. **take**: every shard of generation 0 is held by some worker (no records yet);
2. **idle** (``--idle-s``): nothing is written: worker CPU and GetRecords per idle shard are measured;
3. **probe** (``--probe-s``): 5% of shards are busy (``--busy-rate`` records/s each) and every idle
   shard wakes up once (one record): lag = target write acknowledged minus record appended, per kind;
4. **roll** (``--roll-s``): every shard rolls over every ``--lifetime-s`` (the accelerated 4 hours),
   closed shards stay listed for ``--retention-s`` (the accelerated 24 h); busy shards stay busy. RSS
   and lease-table items are sampled per rollover and the growth per rollover is extrapolated to the
   rollovers of a year (8760 h / 4 h = 2190);
5. **rest** (``--rest-s``): no more rollovers; the end state is measured.

At the end: peak RSS per worker, lease items vs open shards, and the rebalance time in the second half
of the rest (every shard rolls at the same instant here, so a rebalance right after a rollover takes
hundreds of children at once; on DynamoDB Streams rollovers are spread out).
A lag figure with fewer than 200 probes is reported as invalid.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replicator_dev.local.common import create_table, local_client
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.install import ensure_installed
from scale_stream import Schedule

BENCH_DIR = Path(__file__).resolve().parent
MB = 1024 * 1024
YEAR_ROLLOVERS = 8760 // 4
MIN_PROBES = 200
STREAMS_PRICE_PER_100K = 0.02
"""USD per 100,000 DynamoDB Streams read request units (GetRecords calls), us-east-1, on-demand page."""
STREAMS_FREE_PER_MONTH = 2_500_000
"""Streams read requests free each month (per account, per region)."""
ON_DEMAND_WRITE_PRICE_PER_MILLION = 0.625
"""USD per million write request units, on-demand table, us-east-1 (the list price since November 2024)."""
FAILOVER_TIME_S = 10.0


@dataclasses.dataclass
class Run:
    """The harness's view of one run."""

    args: argparse.Namespace
    workdir: Path
    endpoint: str
    schedule: Schedule = dataclasses.field(default_factory=Schedule)
    marks: dict[str, float] = dataclasses.field(default_factory=dict)
    item_counts: list[tuple[float, int]] = dataclasses.field(default_factory=list)

    def write_schedule(self) -> None:
        """Publish the schedule to the workers (atomically: they poll the file)."""
        path = self.workdir / "schedule.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self.schedule)))
        tmp.replace(path)

    def samples(self, worker: int) -> list[dict[str, Any]]:
        """Every sample a worker wrote so far (its final line included once it stopped)."""
        lines = (self.workdir / f"w{worker}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def _held(run: Run) -> int:
    total = 0
    for w in range(run.args.workers):
        with contextlib.suppress(FileNotFoundError, IndexError, json.JSONDecodeError):
            total += run.samples(w)[-1].get("held", 0)
    return total


def _count_items(run: Run, table: str) -> int:
    client = local_client("dynamodb", run.endpoint)
    count, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        page = client.scan(**kwargs)
        count += page["Count"]
        if "LastEvaluatedKey" not in page:
            return count
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _at(samples: list[dict[str, Any]], t: float) -> dict[str, Any]:
    return min((s for s in samples if "t" in s), key=lambda s: abs(s["t"] - t))


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _lag(values: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"probes": len(values), "valid": len(values) >= MIN_PROBES}
    if values:
        out |= {"p50_ms": round(_p(values, 0.5) * 1000, 1), "p99_ms": round(_p(values, 0.99) * 1000, 1)}  # type: ignore[operator]
    return out


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:  # noqa: PLR2004 - a line needs two points
        return 0.0
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


def _durations(events: list[list[float]], lo: float, hi: float) -> list[float]:
    return [d for t, d, *_ in events if lo <= t <= hi]


def _timing(values: list[float], reads: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": round((_p(values, 0.5) or 0) * 1000, 1),
        "p99_ms": round((_p(values, 0.99) or 0) * 1000, 1),
        "max_ms": round(max(values, default=0) * 1000, 1),
        "share_of_failover_time_p99": round((_p(values, 0.99) or 0) / FAILOVER_TIME_S, 4),
        "lease_read_p99_ms": round((_p(reads, 0.99) or 0) * 1000, 1),
    }


def measure(run: Run) -> dict[str, Any]:
    """Turn the workers' samples into the reported figures."""
    a, m = run.args, run.marks
    idle_shards = a.shards - len(range(0, a.shards, round(1 / a.busy_fraction)))
    workers = []
    lags: dict[str, list[list[float]]] = {"busy": [], "wake": []}
    idle_calls = idle_cpu = idle_lease_writes = 0.0
    rebalances: list[list[float]] = []
    refreshes: list[list[float]] = []
    rss_points: list[tuple[float, float]] = []
    # Steady state: from a retention, a lifetime and a cleanup interval after the first rollover on, closed
    # shards are deleted as fast as they close (before that, the table and the worker state fill up).
    steady = m["roll_start"] + a.retention_s + 2 * a.lifetime_s
    for w in range(a.workers):
        samples = run.samples(w)
        final = next((s for s in reversed(samples) if s.get("final")), {})
        s0, s1 = _at(samples, m["idle_start"]), _at(samples, m["idle_end"])
        idle_calls += s1["idle_calls"] - s0["idle_calls"]
        idle_cpu += s1["cpu_s"] - s0["cpu_s"]
        idle_lease_writes += s1.get("lease_writes", 0) - s0.get("lease_writes", 0)
        for kind in lags:
            lags[kind] += final.get("lags", {}).get(kind, [])
        rebalances += final.get("rebalances", [])
        refreshes += final.get("refreshes", [])
        rss_points.extend(
            ((s["t"] - m["roll_start"]) / a.lifetime_s, s["rss"] / MB) for s in samples if "t" in s and s["t"] >= steady
        )
        workers.append(
            {
                "peak_rss_mb": round(final.get("peak_rss", 0) / MB, 1),
                "rss_end_mb": round(samples[-2]["rss"] / MB, 1) if len(samples) > 1 else None,
                "held_at_take": s0["held"],
            }
        )
    idle_s = m["idle_end"] - m["idle_start"]
    per_shard_day = idle_calls / idle_shards / idle_s * 86400
    month_calls = per_shard_day * 30 * 1000
    lease_writes_per_s = idle_lease_writes / idle_s
    rollovers = (m["roll_end"] - m["roll_start"]) / a.lifetime_s
    rss_slope = _slope(rss_points) / a.workers
    items_steady = [
        ((t - m["roll_start"]) / a.lifetime_s, n) for t, n in run.item_counts if steady <= t <= m["roll_end"]
    ]
    items_end = run.item_counts[-1][1] if run.item_counts else None
    retained = a.retention_s / a.lifetime_s
    probe_phase = (m["probe_start"], m["roll_start"])
    roll_phase = (m["roll_start"], m["end"])
    return {
        "workers": workers,
        "idle": {
            "idle_shards": idle_shards,
            "seconds": round(idle_s, 1),
            "getrecords_per_idle_shard_day": round(per_shard_day),
            "cpu_s_per_idle_shard_hour": round(idle_cpu / idle_shards / idle_s * 3600, 3),
            "usd_per_month_1000_idle_shards": round(month_calls / 100_000 * STREAMS_PRICE_PER_100K, 2),
            "usd_per_month_1000_idle_shards_after_free_tier": round(
                max(0.0, month_calls - STREAMS_FREE_PER_MONTH) / 100_000 * STREAMS_PRICE_PER_100K, 2
            ),
            "lease_table_writes_per_s": round(lease_writes_per_s, 1),
            # Each lease write also writes the live index (projection ALL): two write request units.
            "lease_table_usd_per_month_on_demand": round(
                lease_writes_per_s * 2 * 86400 * 30 / 1e6 * ON_DEMAND_WRITE_PRICE_PER_MILLION, 2
            ),
        },
        "lag": {
            "busy_steady": _lag([d for t, d in lags["busy"] if probe_phase[0] <= t < probe_phase[1]]),
            "busy_rolling": _lag([d for t, d in lags["busy"] if roll_phase[0] <= t <= roll_phase[1]]),
            "wake": _lag([d for _, d in lags["wake"]]),
        },
        "roll": {
            "rollovers_run": round(rollovers, 1),
            "steady_from_rollover": round((steady - m["roll_start"]) / a.lifetime_s, 1),
            "lease_items_end": items_end,
            "open_shards": a.shards,
            "lease_items_per_open_shard_end": round(items_end / a.shards, 2) if items_end else None,
            "lease_items_max_steady": max((n for _, n in items_steady), default=None),
            "lease_items_bound_by_retention": round(a.shards * (1 + retained + 1)),
            "lease_items_growth_per_rollover_steady": round(_slope(items_steady), 1),
            "rss_growth_mb_per_100_rollovers_per_worker_steady": round(rss_slope * 100, 2),
            "rss_extrapolated_year_mb_per_worker": round(
                max(w["rss_end_mb"] or 0 for w in workers) + max(0.0, rss_slope) * (YEAR_ROLLOVERS - rollovers), 1
            ),
            "item_counts": run.item_counts,
        },
        "rebalance": {
            "idle": _timing(
                _durations(rebalances, m["idle_start"], m["idle_end"]),
                _durations(refreshes, m["idle_start"], m["idle_end"]),
            ),
            "rolling_steady": _timing(
                _durations(rebalances, steady, m["roll_end"]), _durations(refreshes, steady, m["roll_end"])
            ),
            "rest": _timing(
                _durations(rebalances, m["roll_end"], m["end"]), _durations(refreshes, m["roll_end"], m["end"])
            ),
        },
    }


def _wait(procs: list[subprocess.Popen[bytes]], until: float, what: str) -> None:
    while time.time() < until:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited during {what} (code {proc.returncode})")
        time.sleep(1.0)


def execute(run: Run) -> dict[str, Any]:
    """Start the workers, drive the phases, stop them; return the figures."""
    a = run.args
    checkpoint, target = "scale-leases", "scale-target"
    create_table(run.endpoint, target, stream_view_type=None)
    run.write_schedule()
    procs = []
    for w in range(a.workers):
        cmd = [
            sys.executable, str(BENCH_DIR / "scale_worker.py"), "--endpoint", run.endpoint,
            "--checkpoint-table", checkpoint, "--target-table", target, "--worker-id", f"w{w}",
            "--schedule", str(run.workdir / "schedule.json"), "--out", str(run.workdir / f"w{w}.jsonl"),
            "--shards", str(a.shards), "--busy-fraction", str(a.busy_fraction), "--busy-rate", str(a.busy_rate),
            "--lifetime-s", str(a.lifetime_s), "--retention-s", str(a.retention_s),
            "--cleanup-interval-s", str(a.lifetime_s), "--reader", a.reader, *(["--aligned"] if a.aligned else []),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stderr=(run.workdir / f"w{w}.err").open("wb")))
    try:
        deadline = time.time() + a.take_timeout_s
        while _held(run) < a.shards:
            _wait(procs, time.time() + 2, "take")
            if time.time() > deadline:
                raise RuntimeError(f"only {_held(run)} of {a.shards} shards held after {a.take_timeout_s} s")
        m = run.marks
        m["idle_start"] = time.time() + 2
        m["idle_end"] = m["idle_start"] + a.idle_s
        _wait(procs, m["idle_end"] + 1, "idle")
        s = run.schedule
        s.busy_start = s.wake_start = m["probe_start"] = time.time() + 1
        s.wake_end = s.wake_start + a.probe_s - 5
        run.write_schedule()
        _wait(procs, s.wake_start + a.probe_s, "probe")
        s.roll_start = m["roll_start"] = time.time() + 1
        run.write_schedule()
        end = m["roll_start"] + a.roll_s
        while time.time() < end:
            run.item_counts.append((time.time(), _count_items(run, checkpoint)))
            _wait(procs, min(end, time.time() + a.lifetime_s), "roll")
        s.roll_end = m["roll_end"] = time.time()
        run.write_schedule()
        # At rest: the last generation stays open; cleanup catches up, rebalances read the end state.
        _wait(procs, time.time() + a.rest_s, "rest")
        run.item_counts.append((time.time(), _count_items(run, checkpoint)))
        m["end"] = time.time()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return measure(run)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--smoke`` shrinks everything to about a minute."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="60 shards, short phases: runs and reports")
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--busy-fraction", type=float, default=0.05)
    p.add_argument("--busy-rate", type=float, default=2.0, help="records/s per busy shard")
    p.add_argument("--lifetime-s", type=float, default=20.0, help="real seconds per rollover (4 h simulated)")
    p.add_argument("--idle-s", type=float, default=60.0)
    p.add_argument("--probe-s", type=float, default=60.0)
    p.add_argument("--roll-s", type=float, default=360.0)
    p.add_argument("--rest-s", type=float, default=40.0, help="after the last rollover, before the end state")
    p.add_argument("--take-timeout-s", type=float, default=300.0)
    p.add_argument("--reader", default="{}", help="JSON merged into the workers' reader settings")
    p.add_argument("--aligned", action="store_true", help="every shard rolls over at the same instant (worst case)")
    p.add_argument("--output", type=Path)
    p.add_argument("--workdir", type=Path, help="keep the workers' samples here (default: a temporary folder)")
    a = p.parse_args(argv)
    if a.smoke:
        a.shards, a.idle_s, a.probe_s, a.roll_s, a.lifetime_s, a.rest_s = 60, 8.0, 10.0, 16.0, 4.0, 8.0
    a.retention_s = a.lifetime_s * 6  # 24 h of retention over 4 h of shard lifetime
    return a


def _table(doc: dict[str, Any]) -> str:
    r = doc["results"]
    lag = r["lag"]

    def lag_text(kind: str) -> str:
        x = lag[kind]
        if not x["valid"]:
            return f"INVALID ({x['probes']} probes < {MIN_PROBES})"
        return f"p99 {x['p99_ms']} ms, p50 {x['p50_ms']} ms ({x['probes']} probes)"

    roll, idle, reb = r["roll"], r["idle"], r["rebalance"]

    def timing(x: dict[str, Any]) -> str:
        return (
            f"p50 {x['p50_ms']} / p99 {x['p99_ms']} / max {x['max_ms']} ms ({x['count']}); "
            f"p99 / failover {x['share_of_failover_time_p99']}; lease read p99 {x['lease_read_p99_ms']} ms"
        )

    rss_growth = roll["rss_growth_mb_per_100_rollovers_per_worker_steady"]
    lease_writes = f"{idle['lease_table_writes_per_s']}, {idle['lease_table_usd_per_month_on_demand']}"
    items_steady = f"{roll['lease_items_max_steady']} / {roll['lease_items_bound_by_retention']}"
    rows = [
        ("peak RSS per worker (MB)", ", ".join(str(w["peak_rss_mb"]) for w in r["workers"])),
        ("RSS growth per worker, steady (MB / 100 rollovers)", rss_growth),
        ("RSS per worker after a year (extrapolated, MB)", roll["rss_extrapolated_year_mb_per_worker"]),
        ("CPU per idle shard-hour (s)", idle["cpu_s_per_idle_shard_hour"]),
        ("GetRecords per idle shard-day", idle["getrecords_per_idle_shard_day"]),
        ("USD/month, 1,000 idle shards (before free tier)", idle["usd_per_month_1000_idle_shards"]),
        ("lease-table writes/s (idle), USD/month on-demand", lease_writes),
        ("rollovers run (steady from rollover)", f"{roll['rollovers_run']} ({roll['steady_from_rollover']})"),
        ("lease items at the end / open shards", f"{roll['lease_items_end']} / {roll['open_shards']}"),
        ("lease items max (steady) / bound by retention", items_steady),
        ("lease items growth per rollover (steady)", roll["lease_items_growth_per_rollover_steady"]),
        ("rebalance, idle", timing(reb["idle"])),
        ("rebalance, rolling (steady)", timing(reb["rolling_steady"])),
        ("rebalance, rest", timing(reb["rest"])),
        ("busy-shard lag, no rollovers", lag_text("busy_steady")),
        ("busy-shard lag, rolling over", lag_text("busy_rolling")),
        ("wake-up lag (first record of an idle shard)", lag_text("wake")),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    args = parse_args(argv)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    ensure_installed()
    started = time.monotonic()
    load_before = os.getloadavg()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir
        else tempfile.TemporaryDirectory(prefix="replicator-scale-") as tmp,
        DynamoDBLocal() as ddb,
    ):
        results = execute(Run(args, Path(tmp), ddb.endpoint_url))
    now = dt.datetime.now(tz=dt.UTC)
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(["bench/scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "nproc": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "price": {
            "usd_per_100k_streams_read_requests": STREAMS_PRICE_PER_100K,
            "free_per_month": STREAMS_FREE_PER_MONTH,
            "region": "us-east-1",
            "as_of": "2026-11-29",
        },
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    out = args.output or BENCH_DIR / "results" / f"scale-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    sys.stdout.write(_table(doc) + f"\nresults: {out}  ({doc['wall_s']} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
