"""``replicator redrive``: replay dead letters from a JSONL file or an SQS queue."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from replicator.cli.common import config_option, load_or_exit


@click.command("redrive")
@config_option
@click.option(
    "--source",
    default=None,
    help="A JSONL file (path or file:// URL) or an SQS queue URL; default: failure.on_failure.destination.",
)
@click.option(
    "--target",
    "target_name",
    default=None,
    metavar="NAME",
    help="With targets: replay letters that name no target (written before letters named one) to this target. "
    "Letters naming a target always go to that one.",
)
@click.option("--dry-run", is_flag=True, help="Run the pipeline only: report what would happen; write, delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def command(
    config_path: Path | None,
    source: str | None,
    target_name: str | None,
    *,
    dry_run: bool,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Replay dead letters through the same pipeline and conditional writer (safe: last writer wins).

    Each letter is replayed to the target it names, never to another. Exit status: 0 when every dead letter
    reached an outcome, 1 when some failed again or were left (naming a target not in the configuration,
    or no target while it has several: pass --target), or the run failed; 2 on bad input (an unknown --target).
    """
    from replicator.ops.redrive import redrive, report_json  # noqa: PLC0415 - keep CLI start-up light

    cfg = load_or_exit(config_path)
    report = asyncio.run(
        redrive(
            cfg,
            source=source,
            dry_run=dry_run,
            show_progress=not no_progress and sys.stderr.isatty(),
            target_name=target_name,
        )
    )
    if as_json:
        click.echo(report_json(report))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(0 if report.ok else 1)
