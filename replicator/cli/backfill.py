"""``replicator backfill``: copy the source table's current items into the target (see ``replicator.ops.backfill``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from replicator.cli.common import config_option, load_or_exit


@click.command("backfill")
@config_option
@click.option(
    "--segments",
    type=click.IntRange(1, 1_000_000),
    default=4,
    show_default=True,
    help="Parallel Scan segments.",
)
@click.option(
    "--rate",
    "rate_per_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many items per second over all segments (token bucket). Default: no limit.",
)
@click.option(
    "--safety-margin",
    "safety_margin_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds taken off each page's read time in its items' version: above the stream clock's step.",
)
@click.option("--restart", is_flag=True, help="Forget saved progress and scan from the beginning.")
@click.option(
    "--progress-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="JSON file for segment progress (default: the DynamoDB checkpoint table, or beside SQLite ones).",
)
@click.option(
    "--target",
    "target_name",
    default=None,
    metavar="NAME",
    help="With targets: copy into this target only (default: into each target in turn).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def command(
    *,
    config_path: Path | None,
    segments: int,
    rate_per_s: float | None,
    safety_margin_s: float,
    restart: bool,
    progress_file: Path | None,
    target_name: str | None,
    no_progress: bool,
) -> None:
    """Scan the source table and write every item through the pipeline (resumable; run while streaming)."""
    from replicator.ops.backfill import BackfillSettings, run_backfill_targets  # noqa: PLC0415 - keep CLI start-up light

    cfg = load_or_exit(config_path)
    settings = BackfillSettings(
        segments=segments, rate_per_s=rate_per_s, safety_margin_s=safety_margin_s, restart=restart
    )
    summaries = asyncio.run(
        run_backfill_targets(
            cfg,
            settings,
            target_name=target_name,
            progress_path=progress_file,
            show_progress=not no_progress and sys.stderr.isatty(),
        )
    )
    for target_id, summary in summaries.items():
        if cfg.fan_out:
            click.echo(f"target {target_id}:")
        for line in summary.lines():
            click.echo(f"  {line}" if cfg.fan_out else line)
        if summary.dead_lettered:
            where = f" (target {target_id})" if cfg.fan_out else ""
            click.echo(f"warning: {summary.dead_lettered} items went to the dead-letter destination{where}", err=True)
