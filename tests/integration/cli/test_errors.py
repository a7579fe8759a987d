"""Failures as an operator meets them: one line saying what failed and what to do, documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

# Port 9 (discard) refuses connections at once.
UNREACHABLE = "http://127.0.0.1:9"
NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/replicator-tests/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/replicator-tests/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}
COMMANDS = ["run", "check-config", "status", "verify", "backfill", "redrive", "lambda-filters"]


def _cli(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **(env or {})},
        check=False,
    )


def _config(tmp_path: Path, endpoint: str, log_format: str = "console", **extra: object) -> Path:
    config = {
        "source": {"region": "us-east-1", "table": "Orders", "endpoint_url": endpoint},
        "target": {"region": "eu-west-1", "table": "Orders", "endpoint_url": endpoint},
        "checkpoint": {"path": str(tmp_path / "cp.db")},
        "metrics": {"enabled": False},
        "logging": {"format": log_format},
        **extra,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_status_without_credentials_says_so_and_exits_1(tmp_path: Path) -> None:
    """No traceback ending in NoCredentialsError: one line naming what to set."""
    result = _cli(
        "status",
        "--config",
        str(_config(tmp_path, UNREACHABLE)),
        env=NO_CREDENTIALS,
        drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    )
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result)
    assert "no AWS credentials" in line
    assert "AWS_PROFILE" in line


@pytest.mark.parametrize("command", ["backfill", "status", "verify"])
def test_unreachable_endpoint_is_one_line_and_exit_1(tmp_path: Path, command: str) -> None:
    """An unreachable endpoint: the same exit code and the same kind of message from every command."""
    result = _cli(command, "--config", str(_config(tmp_path, UNREACHABLE)))
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result)
    assert "cannot reach" in line
    assert "endpoint_url" in line


def test_debug_log_level_shows_the_traceback(tmp_path: Path) -> None:
    """--log-level debug keeps the traceback for whoever needs it, then the same one line."""
    result = _cli("status", "--config", str(_config(tmp_path, UNREACHABLE)), "--log-level", "debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: cannot reach")


def test_run_failing_at_start_with_json_logs_writes_only_json(region_a, tmp_path: Path) -> None:
    """`run` whose source table does not exist: every stderr line is JSON, the last names the failure."""
    result = _cli("run", "--config", str(_config(tmp_path, region_a.endpoint_url, log_format="json")))
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1]["event"] == "command_failed"
    assert lines[-1]["exit_code"] == 1
    assert "ResourceNotFoundException" in lines[-1]["error"] or "not found" in lines[-1]["error"]
    assert result.stdout == ""


def test_a_missing_input_file_is_bad_input(tmp_path: Path) -> None:
    """A redrive --source naming no file: exit 2 (bad input), one line naming the file."""
    missing = tmp_path / "nope.jsonl"
    result = _cli("redrive", "--config", str(_config(tmp_path, UNREACHABLE)), "--source", str(missing))
    assert result.returncode == 2, result.stderr
    assert str(missing) in _one_error_line(result)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_log_level_and_config(command: str) -> None:
    """--log-level and --config are accepted by every command that loads a configuration."""
    result = _cli(command, "--help")
    assert result.returncode == 0
    assert "--log-level" in result.stdout
    assert "--config" in result.stdout


def test_version_and_global_log_level() -> None:
    """`replicator --version` prints the version; --log-level is accepted before the command too."""
    version = _cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("replicator, version ")
    assert _cli("--log-level", "debug", "check-config", "--help").returncode == 0


def test_bad_command_line_is_exit_2() -> None:
    """A usage error is bad input: exit 2, as for a bad config."""
    assert _cli("status", "--no-such-option").returncode == 2
    assert _cli("no-such-command").returncode == 2


def _readme_config() -> dict[str, object]:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A minimal configuration", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded: dict[str, object] = yaml.safe_load(block)
    return loaded


def test_config_schema_validates_the_readme_example_and_refuses_typos() -> None:
    """`config-schema` prints a JSON Schema the README's example config satisfies; a misspelt key fails it."""
    result = _cli("config-schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    example = _readme_config()
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example, "targte": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example, "metrics": {"port": 70000}}, schema)
