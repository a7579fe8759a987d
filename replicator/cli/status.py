"""``replicator status``: a table of the stream's shards, from the checkpoint store and the stream."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from replicator.cli.common import config_option, load_or_exit


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def command(config_path: Path | None, *, as_json: bool) -> None:
    """Show every shard: open or closed, progress, lease owner, checkpoint, and how far behind it is.

    One line per shard (shard ids and sequence numbers abbreviated to their distinct ends), then a
    summary: shards by state, the worst lag, the owners. --json has the full values. Needs no running
    worker: reads the checkpoint store and the stream only, and writes nothing.
    """
    from rich.console import Console  # noqa: PLC0415 - keep CLI start-up light

    from replicator.ops.status import render_table, status_from_config, summary_line  # noqa: PLC0415

    cfg = load_or_exit(config_path)
    report = asyncio.run(status_from_config(cfg))
    if as_json:
        click.echo(report.to_json())
    else:
        # The table fits 100 columns (ids abbreviated; --json has them whole): piped output gets 100.
        console = Console() if sys.stdout.isatty() else Console(width=100)
        console.print(render_table(report))
        console.print(summary_line(report), soft_wrap=True)
