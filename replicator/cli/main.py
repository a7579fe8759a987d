"""The ``replicator`` command line. Each command's work lives in its own module; this file only parses."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from replicator.cli import backfill, lambda_filters, redrive, status, verify
from replicator.cli.common import JSON_LOGS, LOG_LEVEL, config_option, load_or_exit, log_level_option
from replicator.cli.errors import report


class _Group(click.Group):
    """Turns whatever escapes a command into one line and a documented exit code (``cli.errors``)."""

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 - click's own signature
        """Run the command; report a failure instead of a traceback."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every command's failure is reported
            code = report(exc, debug=ctx.meta.get(LOG_LEVEL) == "DEBUG", json_logs=ctx.meta.get(JSON_LOGS, False))
            sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="replicator", prog_name="replicator")
@log_level_option
def main() -> None:
    """Replicate a DynamoDB table's stream into a table in another region.

    Exit status, for every command: 0 done; 1 the command ran and failed (AWS unreachable, no
    credentials, access denied, a missing table; verify: the tables differ; redrive: some dead
    letters failed again); 2 bad input (command line or configuration). --log-level debug shows the
    traceback of a failure.
    """


@main.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the configuration (including filters and transforms) without running."""
    from replicator.pipeline.stages import Pipeline  # noqa: PLC0415 - keep CLI start-up light

    cfg = load_or_exit(config_path)
    pipeline = Pipeline.from_config(cfg)
    for warning in pipeline.filters.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"ok: {cfg.source.region}/{cfg.source.table or cfg.source.stream_arn} -> {cfg.target.region}/{cfg.target.table}"
        f" ({len(cfg.filters)} filters, {len(cfg.transforms)} transforms, checkpoints: {cfg.checkpoint.backend})"
    )


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the replication service until SIGTERM or SIGINT."""
    from replicator.runtime.service import Replicator  # noqa: PLC0415

    cfg = load_or_exit(config_path)
    asyncio.run(_run_service(Replicator(cfg)))


async def _run_service(replicator: object) -> None:
    from replicator.runtime.service import Replicator  # noqa: PLC0415

    assert isinstance(replicator, Replicator)  # noqa: S101 - typed entry for the CLI only
    await replicator.run(stop_signals=(signal.SIGTERM, signal.SIGINT))


@main.command()
@click.option("--duration", "duration_s", type=float, default=20.0, show_default=True, help="Seconds of live traffic.")
@click.option(
    "--rate",
    "rate_per_s",
    type=float,
    default=50.0,
    show_default=True,
    help="Source writes per second (--regions 3: over all three).",
)
@click.option("--keys", type=int, default=200, show_default=True, help="Distinct item keys in the workload.")
@click.option(
    "--regions",
    type=click.Choice(["2", "3"]),
    default="2",
    show_default=True,
    help="2: one-way, source to target. 3: an active-active mesh, one worker per region writing to the other two.",
)
def demo(duration_s: float, rate_per_s: float, keys: int, regions: str) -> None:
    """Local regions on DynamoDB Local, live traffic, replication with lag shown, convergence checked."""
    try:
        from replicator_dev.demo import run_demo  # noqa: PLC0415 - the dev package is not in the image or zip
    except ModuleNotFoundError as exc:
        if exc.name != "replicator_dev":
            raise
        click.echo("error: the demo needs the development package: pip install -e ./dev (make demo does it)", err=True)
        sys.exit(2)

    sys.exit(run_demo(duration_s=duration_s, rate_per_s=rate_per_s, keys=keys, regions=int(regions)))


@main.command("config-schema")
def config_schema() -> None:
    """Print the configuration's JSON Schema (point an editor's YAML validation at it)."""
    from replicator.core.config_load import json_schema  # noqa: PLC0415 - keep CLI start-up light

    click.echo(json.dumps(json_schema(), indent=2))


for _module in (verify, status, redrive, lambda_filters, backfill):
    main.add_command(_module.command)
