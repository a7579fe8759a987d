"""docker/entrypoint.sh against the real ``replicator`` command (the installed one, in a subprocess).

The argument-shuffling tests in test_deploy_artifacts.py use a fake binary that accepts anything; these
prove that what the entrypoint builds is a command line the real CLI accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from replicator.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
REAL_CLI = Path(sys.executable).parent / "replicator"

# Port 9 refuses connections; the bad filter makes every config-loading command stop before connecting.
BAD_FILTER_CONFIG = """\
source: {region: us-east-1, table: src, endpoint_url: "http://127.0.0.1:9"}
target: {region: eu-west-1, table: dst, endpoint_url: "http://127.0.0.1:9"}
checkpoint: {backend: sqlite, path: CP}
metrics: {enabled: false}
filters:
  - {dynamodb: {NewImage: {n: {N: [{numeric: [">>", 1]}]}}}}
"""


def _config_commands_in_script() -> set[str]:
    match = re.search(r'^config_commands=" (.*) "$', ENTRYPOINT.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert match is not None
    return set(match.group(1).split())


def _config_commands_in_cli() -> set[str]:
    commands: dict[str, click.Command] = getattr(main, "commands", {})
    return {name for name, cmd in commands.items() if any(p.name == "config_path" for p in cmd.params)}


@pytest.fixture
def real_bin(tmp_path: Path) -> Path:
    """Make a PATH directory whose ``replicator`` is the installed CLI."""
    assert REAL_CLI.exists(), REAL_CLI
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "replicator").symlink_to(REAL_CLI)
    return bin_dir


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    """A config every command refuses at load time (exit 2, naming filters[0]), before any connection."""
    path = tmp_path / "config.yaml"
    path.write_text(BAD_FILTER_CONFIG.replace("CP", str(tmp_path / "cp.db")), encoding="utf-8")
    return path


def _entrypoint(real_bin: Path, *args: str, config: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": f"{real_bin}:/usr/bin:/bin", "HOME": str(real_bin), **env}
    if config is not None:
        environ["REPLICATOR_CONFIG"] = config
    return subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=60, env=environ, check=False
    )


def test_the_script_passes_config_to_exactly_the_commands_that_take_it() -> None:
    """The entrypoint's list of config-loading commands is the CLI's, command for command."""
    assert _config_commands_in_script() == _config_commands_in_cli()


@pytest.mark.parametrize("command", sorted(_config_commands_in_cli()))
def test_every_config_command_gets_the_mounted_config(real_bin: Path, bad_config: Path, command: str) -> None:
    """The real command loads the mounted file: it refuses the bad filter in it (exit 2, filters[0])."""
    result = _entrypoint(real_bin, command, config=str(bad_config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "filters[0]" in result.stderr
    assert not (bad_config.parent / "cp.db").exists()


@pytest.mark.parametrize("args", [[], ["--log-level", "debug"], ["replicator"], ["replicator", "run"]])
def test_default_command_is_run_with_the_config(real_bin: Path, bad_config: Path, args: list[str]) -> None:
    """No command (or options only) means run with the config; --log-level is a real option of run."""
    result = _entrypoint(real_bin, *args, config=str(bad_config))
    assert result.returncode == 2, result.stderr
    assert "filters[0]" in result.stderr
    assert "No such option" not in result.stderr


def test_help_and_version_pass_through(real_bin: Path, bad_config: Path) -> None:
    """--help and --version reach the real CLI unchanged."""
    help_result = _entrypoint(real_bin, "--help", config=str(bad_config))
    assert help_result.returncode == 0
    assert "Usage: replicator" in help_result.stdout
    version = _entrypoint(real_bin, "--version", config=str(bad_config))
    assert version.returncode == 0
    assert version.stdout.startswith("replicator, version ")


def test_usage_lines_in_the_header_work(real_bin: Path, tmp_path: Path) -> None:
    """Every `docker run IMAGE ...` line the script documents is accepted by the real CLI (--help appended)."""
    lines = re.findall(r"^#\s+docker run IMAGE(.*?)->", ENTRYPOINT.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert lines
    for line in lines:
        for variant in line.split("|"):
            args = variant.split()
            result = _entrypoint(real_bin, *args, "--help", config="")
            assert result.returncode == 0, (variant, result.stderr)
    del tmp_path


def test_commands_without_config_pass_through(real_bin: Path, bad_config: Path) -> None:
    """config-schema takes no --config: it runs as given and prints the schema."""
    result = _entrypoint(real_bin, "config-schema", config=str(bad_config))
    assert result.returncode == 0, result.stderr
    assert "properties" in json.loads(result.stdout)


def test_environment_only_configuration(real_bin: Path) -> None:
    """REPLICATOR_CONFIG="" configures from REPLICATOR_* variables alone."""
    result = _entrypoint(
        real_bin,
        "check-config",
        config="",
        REPLICATOR_SOURCE__REGION="us-east-1",
        REPLICATOR_SOURCE__TABLE="src",
        REPLICATOR_TARGET__REGION="eu-west-1",
        REPLICATOR_TARGET__TABLE="dst",
    )
    assert result.returncode == 0, result.stderr
    assert "us-east-1/src -> eu-west-1/dst" in result.stdout


def test_an_explicit_config_option_wins(real_bin: Path, bad_config: Path, tmp_path: Path) -> None:
    """`status --config OTHER` keeps the caller's file: the real CLI names it."""
    other = tmp_path / "other.yaml"
    result = _entrypoint(real_bin, "status", "--config", str(other), config=str(bad_config))
    assert result.returncode == 2
    assert str(other) in result.stderr
