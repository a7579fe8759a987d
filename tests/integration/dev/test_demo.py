"""`replicator demo` (what `make demo` runs) stays green: a short run converges and cleans up."""

from __future__ import annotations

import re
import subprocess
import sys


def test_short_demo_converges_and_exits_zero() -> None:
    """A 4-second demo replicates live traffic, shows lag, and checks target == source (exit 0)."""
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "demo", "--duration", "4", "--rate", "40"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "converged" in result.stdout
    assert "probe lag p50" in result.stdout
    # The outcome rows add up every target's series (replicator_records_total{target,outcome}).
    replicated = [int(n) for n in re.findall(r"\breplicated\b\W+(\d+)", result.stdout)]
    assert replicated, result.stdout[-3000:]
    assert replicated[-1] > 0, result.stdout[-3000:]


def test_three_region_mesh_demo_converges_and_exits_zero() -> None:
    """`demo --regions 3` (a smoke run): three regions write and replicate to each other, lag per target, converged."""
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "demo", "--regions", "3", "--duration", "3", "--rate", "15"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "converged: all 3 regions" in result.stdout
    assert "us-east-1 → eu-west-1" in result.stdout
    assert "per application write" in result.stdout
