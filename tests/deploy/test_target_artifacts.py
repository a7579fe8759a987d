"""The shipped alert rules and dashboard by target: every per-target metric is grouped or filtered by ``target``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from replicator.observe.metrics import TARGET_METRICS, Metrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"

_TOKEN = re.compile(r"\breplicator_[a-z0-9_]+\b")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def _per_target_names() -> frozenset[str]:
    """Every sample name of a metric labelled by target (``observe.metrics.TARGET_METRICS``)."""
    metrics = Metrics()
    names = {
        family.name + suffix
        for attribute in TARGET_METRICS
        for family in getattr(metrics, attribute).family.describe()
        for suffix in _SUFFIXES
    }
    return frozenset(names)


def _per_target(expr: str) -> bool:
    return any(token in _per_target_names() for token in _TOKEN.findall(expr))


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_per_target_names_are_the_target_labelled_families() -> None:
    """The helper finds the outcome, latency and unavailable series, and not the shard's read counters."""
    names = _per_target_names()
    assert {
        "replicator_records_total",
        "replicator_replication_latency_seconds_bucket",
        "replicator_target_unavailable",
        "replicator_dead_letters_total",
    } <= names
    assert "replicator_records_read_total" not in names
    assert "replicator_iterator_age_seconds" not in names


def test_target_alerts_aggregate_by_target_and_name_it() -> None:
    """A rule on a per-target metric keeps target in every aggregation and names it in its summary."""
    target_rules = [rule for rule in _alert_rules() if _per_target(rule["expr"])]
    assert {rule["alert"] for rule in target_rules} >= {
        "ReplicatorTargetUnavailable",
        "ReplicatorDeadLettersGrowing",
        "ReplicatorNoProgress",
        "ReplicatorTargetLatencyHigh",
    }
    for rule in target_rules:
        clauses = _BY.findall(rule["expr"])
        assert clauses, rule["alert"]
        for clause in clauses:
            if not _per_target(rule["expr"].split(f"by ({clause})", 1)[1].split(")", 1)[0] + ")"):
                continue  # an aggregation of a shard metric (iterator age) in the same rule
            assert "target" in [label.strip() for label in clause.split(",")], (rule["alert"], clause)
        assert "{{ $labels.target }}" in rule["annotations"]["summary"], rule["alert"]


def test_shard_alerts_stay_per_worker_and_shard() -> None:
    """Rules on iterator age, checkpoints, trimmed data and scrapes do not group by target."""
    for rule in _alert_rules():
        if not _per_target(rule["expr"]):
            assert "target" not in rule["expr"], rule["alert"]


def test_rule_tests_fire_for_one_of_two_targets() -> None:
    """alerts_test.yml has, per target alert, a case with two targets' series where only one fires."""
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text(encoding="utf-8"))["tests"]
    covered = set()
    for test in tests:
        targets = {m.group(1) for s in test["input_series"] for m in [re.search(r'target="([^"]+)"', s["series"])] if m}
        if len(targets) < 2:
            continue
        for case in test["alert_rule_test"]:
            fired = {alert["exp_labels"].get("target") for alert in case["exp_alerts"]}
            if len(fired) == 1 and fired < targets:
                covered.add(case["alertname"])
    assert covered >= {
        "ReplicatorTargetUnavailable",
        "ReplicatorDeadLettersGrowing",
        "ReplicatorNoProgress",
        "ReplicatorTargetLatencyHigh",
    }


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_dashboard_has_a_target_variable_filtering_every_per_target_query() -> None:
    """$target lists the targets seen; every query of a per-target metric selects target=~"$target"."""
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    target = variables["target"]
    assert target["type"] == "query"
    assert re.fullmatch(r"label_values\(replicator_records_total\{[^}]*\}, target\)", target["definition"])
    assert target["includeAll"] is True
    assert target["allValue"] == ".*"  # also the series of calls that are no target's (no target label)
    for expr in _exprs(dashboard):
        for match in re.finditer(r"\b(replicator_[a-z0-9_]+)\{([^}]*)\}", expr):
            if match.group(1) in _per_target_names():
                assert 'target=~"$target"' in match.group(2), expr


def test_dashboard_shows_latency_outcomes_and_errors_by_target() -> None:
    """Latency p50/p99, outcomes, unavailable and target errors, each grouped by target."""
    exprs = " ".join(_exprs(_dashboard()))
    for q in ("0.5", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (target, le) (rate(replicator_replication_latency_seconds_bucket" in exprs
        )
    for needle in (
        "sum by (target, outcome) (rate(replicator_records_total",
        "max by (target, code) (replicator_target_unavailable",
        "sum by (target, scope, code) (rate(replicator_target_errors_total",
        "sum by (target) (rate(replicator_dead_letters_total",
    ):
        assert needle in exprs, needle
