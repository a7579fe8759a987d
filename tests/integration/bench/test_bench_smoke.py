"""``bench/run.py --smoke``: the harness runs end to end and writes a complete, self-consistent JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LAG_FIELDS = {
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "samples",
    "probes",
    "probes_lost",
    "records",
    "expected_records",
    "workload_writes",
    "cpu_s",
    "cpu_s_per_10k",
    "peak_rss_mb",
}
DRAIN_FIELDS = {
    "records",
    "seconds",
    "records_per_s",
    "ratio_to_ceiling",
    "cpu_s",
    "cpu_ms_per_record",
    "cpu_s_per_10k",
    "peak_rss_mb",
    "items_in_target",
}


def test_bench_smoke_writes_consistent_results(tmp_path: Path) -> None:
    """Every figure is present for both systems and the record counts add up (no timing asserts)."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "lag p99" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["machine"]["nproc"] >= 1
    assert len(doc["machine"]["load_before"]) == 3
    thr, lag = doc["results"]["throughput"], doc["results"]["lag"]
    assert thr["ceiling"]["records_per_s"] > 0
    for system in ("replicator", "baseline"):
        assert set(thr[system]) >= DRAIN_FIELDS, system
        assert set(lag[system]) >= LAG_FIELDS, system
        # The drain accounted for exactly the preloaded changes and the target ends as the source did.
        assert thr[system]["records"] == thr["preloaded"]
        assert thr[system]["items_in_target"] == thr["expected_items"]
        # Live traffic: every workload write and probe came through; no probe was lost.
        assert lag[system]["probes"] > 0
        assert lag[system]["probes_lost"] == 0
        assert lag[system]["records"] == lag[system]["expected_records"]
        assert lag[system]["samples"] == lag[system]["probes"]
    outcomes = thr["replicator"]["outcomes"]
    assert sum(outcomes.values()) == thr["preloaded"]
    assert set(doc["targets"]) == {
        "lag_p99_under_500ms",
        "lag_p50_under_250ms",
        "throughput_at_least_90pct_of_ceiling",
        "cpu_per_record_at_most_third_of_baseline",
        "rss_under_150mb",
    }
