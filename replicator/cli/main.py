"""The ``replicator`` command line. Each command's work lives in its own module; this file only parses."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from replicator.cli import backfill, lambda_filters, redrive, status, verify
from replicator.cli.common import config_option, load_or_exit
from replicator.core.errors import ConfigError, ReplicatorError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="replicator")
def main() -> None:
    """Replicate a DynamoDB table's stream into a table in another region."""


@main.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the configuration (including filters and transforms) without running."""
    from replicator.pipeline.stages import Pipeline  # noqa: PLC0415 - keep CLI start-up light

    cfg = load_or_exit(config_path)
    try:
        pipeline = Pipeline.from_config(cfg)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
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
    from replicator.observe import logs  # noqa: PLC0415
    from replicator.runtime.service import Replicator  # noqa: PLC0415

    cfg = load_or_exit(config_path)
    logs.configure(cfg.logging.level, cfg.logging.format, log_item_contents=cfg.logging.log_item_contents)
    try:
        asyncio.run(_run_service(Replicator(cfg)))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ReplicatorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


async def _run_service(replicator: object) -> None:
    from replicator.runtime.service import Replicator  # noqa: PLC0415

    assert isinstance(replicator, Replicator)  # noqa: S101 - typed entry for the CLI only
    await replicator.run(stop_signals=(signal.SIGTERM, signal.SIGINT))


@main.command()
@click.option("--duration", "duration_s", type=float, default=20.0, show_default=True, help="Seconds of live traffic.")
@click.option("--rate", "rate_per_s", type=float, default=50.0, show_default=True, help="Source writes per second.")
@click.option("--keys", type=int, default=200, show_default=True, help="Distinct item keys in the workload.")
def demo(duration_s: float, rate_per_s: float, keys: int) -> None:
    """Two local regions on DynamoDB Local, live traffic, replication with lag shown, convergence checked."""
    try:
        from replicator_dev.demo import run_demo  # noqa: PLC0415 - the dev package is not in the image or zip
    except ModuleNotFoundError as exc:
        if exc.name != "replicator_dev":
            raise
        click.echo("error: the demo needs the development package: pip install -e ./dev (make demo does it)", err=True)
        sys.exit(2)

    sys.exit(run_demo(duration_s=duration_s, rate_per_s=rate_per_s, keys=keys))


for _module in (verify, status, redrive, lambda_filters, backfill):
    main.add_command(_module.command)
