"""Does a leased worker's memory grow with rollovers? tracemalloc over many, in one process (no AWS, ~6 minutes).

    python bench/memory_growth.py [--chains 40] [--rollovers 80]

The real ``Replicator`` with leases reads a scripted stream (``tests/scripted_stream.py``) of ``--chains``
shard chains; every rollover closes each chain's open shard (one change each) and opens its child, and the
stream lists only the last 3 generations; the lease table is ``tests/fake_lease_table.py`` with a retention
of 0.3 s, so finished leases are deleted as they would be after 24 h. The harness keeps only what is listed
(trimmed shards' records are dropped, the target keeps each key's last write).

Memory allocated since tracing started (half way) is compared between the half-way rollover and the last, by
the file that allocated it: the harness's own files apart, what remains is what the worker keeps. Prints the
figures and writes JSON to ``bench/results/memory-growth-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_lease_table import FakeLeaseTable
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator

BENCH_DIR = Path(__file__).resolve().parent
LISTED = 3
HARNESS = ("scripted_stream.py", "fake_lease_table.py", "memory_growth.py", "<string>")
"""Files whose allocations are the harness's (``<string>``: the scripted shards' generated dataclass code)."""


async def _run(chains: int, rollovers: int) -> tuple[tracemalloc.Snapshot, tracemalloc.Snapshot, int]:
    reader = {"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05}
    cfg = Config(
        source={"region": "us-east-1", "table": "Orders"},  # type: ignore[arg-type]
        target={"region": "eu-west-1", "table": "Orders"},  # type: ignore[arg-type]
        checkpoint={"backend": "dynamodb", "table": "leases"},  # type: ignore[arg-type]
        metrics={"enabled": False},  # type: ignore[arg-type]
        reader=reader,  # type: ignore[arg-type]
        leases={  # type: ignore[arg-type]
            "enabled": True,
            "failover_time_s": 60,
            "renew_interval_s": 0.1,
            "finished_retention_s": 0.3,
            "cleanup_interval_s": 0.2,
        },
        worker_id="w1",
    )
    stream, target = ScriptedStream(), RecordingTarget()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target), checkpoint=FakeLeaseTable())  # type: ignore[arg-type]
    replicator = Replicator(cfg, metrics=Metrics(), clients=clients)
    for i in range(chains):
        stream.add_shard(f"c{i}g0")
    task = asyncio.create_task(replicator.run())
    half = rollovers // 2
    first = last = None
    try:
        for gen in range(1, rollovers + 1):
            for i in range(chains):
                stream.put(f"c{i}g{gen - 1}", f"k{i}", gen)
                stream.close(f"c{i}g{gen - 1}")
                stream.add_shard(f"c{i}g{gen}", parent=f"c{i}g{gen - 1}")
                if gen >= LISTED:
                    trimmed = f"c{i}g{gen - LISTED}"
                    stream.hidden.add(trimmed)
                    stream.shards[trimmed].records.clear()
            while not all(target.values_of(f"k{i}")[-1:] == [gen] for i in range(chains)):
                if task.done():
                    task.result()
                    raise RuntimeError("the worker stopped")
                await asyncio.sleep(0.01)
            last_writes = {key: (op, key, item) for op, key, item in target.writes}
            target.writes[:] = list(last_writes.values())
            await asyncio.sleep(0.3)  # cleanup sweeps run; readers of the new generation start
            if gen == half // 2:
                tracemalloc.start(1)
            if gen in (half, rollovers):
                gc.collect()
                snapshot = tracemalloc.take_snapshot()
                first, last = (snapshot, last) if gen == half else (first, snapshot)
    finally:
        replicator.stop()
        await task
    if first is None or last is None:
        raise RuntimeError("no snapshots: --rollovers must be at least 4")
    return first, last, rollovers - half


def main() -> int:
    """Run, print, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", type=int, default=40)
    p.add_argument("--rollovers", type=int, default=80)
    a = p.parse_args()
    first, last, measured = asyncio.run(_run(a.chains, a.rollovers))
    by_file = {
        stat.traceback[0].filename: stat.size_diff for stat in last.compare_to(first, "filename") if stat.size_diff
    }
    harness = sum(size for name, size in by_file.items() if name.endswith(HARNESS))
    worker = {name: size for name, size in by_file.items() if not name.endswith(HARNESS)}
    top = sorted(worker.items(), key=lambda kv: -abs(kv[1]))[:10]
    doc = {
        "date": dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds"),
        "chains": a.chains,
        "rollovers_measured": measured,
        "shard_rollovers_measured": measured * a.chains,
        "worker_growth_bytes": sum(worker.values()),
        "harness_growth_bytes": harness,
        "worker_top_files": top,
    }
    out = BENCH_DIR / "results" / f"memory-growth-{dt.datetime.now(tz=dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    sys.stdout.write(
        f"shard rollovers measured: {measured * a.chains} ({measured} rollovers x {a.chains} chains)\n"
        f"growth of memory the worker's code allocated: {sum(worker.values()) / 1024:.1f} KiB\n"
        f"growth of the harness's own memory: {harness / 1024:.1f} KiB\n"
        + "".join(f"  {size / 1024:+.1f} KiB  {name}\n" for name, size in top)
        + f"results: {out}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
