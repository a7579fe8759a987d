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

    Needs no running worker: reads the checkpoint store and the stream only, and writes nothing.
    """
    from rich.console import Console  # noqa: PLC0415 - keep CLI start-up light

    from replicator.ops.status import render_table, status_from_config  # noqa: PLC0415

    cfg = load_or_exit(config_path)
    report = asyncio.run(status_from_config(cfg))
    if as_json:
        click.echo(report.to_json())
    else:
        # Piped or captured output gets a wide console so shard ids and sequence numbers stay on one line.
        console = Console() if sys.stdout.isatty() else Console(width=250)
        console.print(render_table(report))
