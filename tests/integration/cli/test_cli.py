"""The command line as an operator runs it: bad config refused by key, run drains and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from replicator_dev.local.common import create_table
from support import scan


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


GOOD = {"source": {"region": "us-east-1", "table": "Orders"}, "target": {"region": "eu-west-1", "table": "Orders"}}


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        ({"source": {"region": "us-east-1", "table": "Orders"}}, {}, "target: required key is missing"),
        (
            {**GOOD, "starting_position": "EARLIEST"},
            {},
            "starting_position: Input should be 'TRIM_HORIZON' or 'LATEST'",
        ),
        ({**GOOD, "metrics": {"port": 70000}}, {}, "metrics.port: Input should be less than or equal to 65535"),
        ({**GOOD, "checkpoint": {"backend": "dynamodb"}}, {}, "checkpoint.table is required"),
        ({**GOOD, "targte": {}}, {}, "targte: unknown key"),
        (GOOD, {"REPLICATOR_TARGET__MAX_CONCURRENT_WRITES": "lots"}, "target.max_concurrent_writes"),
        (
            {**GOOD, "filters": [{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">>", 1]}]}}}}]},
            {},
            "filters[0] at",
        ),
        ({**GOOD, "transforms": [{"type": "rename", "attributes": {"_rep_version": "x"}}]}, {}, "transforms[0]"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, config, env, expected) -> None:
    """check-config exits 2 and names the offending key (file or environment)."""
    result = _cli("check-config", "--config", str(_write(tmp_path / "c.yaml", config)), env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_good_config_passes_and_env_overrides(tmp_path) -> None:
    """A valid file passes; REPLICATOR_<SECTION>__<KEY> overrides it."""
    result = _cli(
        "check-config", "--config", str(_write(tmp_path / "c.yaml", GOOD)), env={"REPLICATOR_TARGET__TABLE": "Other"}
    )
    assert result.returncode == 0, result.stderr
    assert "eu-west-1/Other" in result.stdout


def test_numeric_filter_on_number_attribute_warns(tmp_path) -> None:
    """A numeric pattern on an N value can never match (N is a string in the event): a warning says so."""
    config = {**GOOD, "filters": [{"dynamodb": {"NewImage": {"total": {"N": [{"numeric": [">", 10]}]}}}}]}
    result = _cli("check-config", "--config", str(_write(tmp_path / "c.yaml", config)))
    assert result.returncode == 0
    assert "warning" in result.stderr
    assert "filters[0]" in result.stderr


def test_run_replicates_then_exits_zero_on_sigterm(region_a, region_b, unique_name, tmp_path) -> None:
    """`replicator run` replicates, serves /metrics, and on SIGTERM drains and exits 0 well inside 30 s."""
    name = unique_name()
    create_table(region_a.endpoint_url, name)
    create_table(region_b.endpoint_url, name, stream_view_type=None)
    config = {
        "source": {"region": "us-east-1", "table": name, "endpoint_url": region_a.endpoint_url},
        "target": {"region": "eu-west-1", "table": name, "endpoint_url": region_b.endpoint_url},
        "checkpoint": {"path": str(tmp_path / "cp.db")},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "logging": {"format": "json"},
    }
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", "run", "--config", str(_write(tmp_path / "c.yaml", config))],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        src = region_a.client()
        for i in range(20):
            src.put_item(TableName=name, Item={"pk": {"S": f"k{i}"}})
        deadline = time.monotonic() + 60
        while len(scan(region_b.client(), name)) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(scan(region_b.client(), name)) == 20
        port = _metrics_port(tmp_path / "run.log")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'replicator_records_total{outcome="replicated",target="eu-west-1"}' in body
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def _metrics_port(log_path: Path) -> int:
    import json  # noqa: PLC0415

    for line in log_path.read_text().splitlines():
        if '"metrics_listening"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError("metrics_listening was not logged")
