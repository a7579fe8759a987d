"""``replicator verify``: compare the source and target tables, optionally repair the differences."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from replicator.cli.common import config_option, load_or_exit
from replicator.core.codec import json_default
from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from replicator.ops.verify import VerifyReport

EXIT_DIVERGED = 1


class _RichProgress:
    """Adapts replicator.ops.verify's progress calls to rich bars (one per phase)."""

    def __init__(self, progress: Progress) -> None:
        """Wrap a started rich Progress."""
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def _task(self, phase: str) -> TaskID:
        if phase not in self._tasks:
            self._tasks[phase] = self._progress.add_task(f"{phase:>6}", total=None)
        return self._tasks[phase]

    def total(self, phase: str, count: int | None) -> None:
        """Size the phase's bar (an estimate for scans)."""
        self._progress.update(self._task(phase), total=count)

    def advance(self, phase: str, count: int) -> None:
        """Move the phase's bar."""
        task = self._task(phase)
        self._progress.advance(task, count)
        total = self._progress.tasks[self._tasks[phase]].total
        completed = self._progress.tasks[self._tasks[phase]].completed
        if total is not None and completed > total:
            # ItemCount is only an estimate: grow the bar instead of overflowing it.
            self._progress.update(task, total=completed)


def _print_report(report: VerifyReport, *, repair: bool, max_keys: int, target_id: str | None = None) -> None:
    """Print one comparison; ``target_id`` (several targets): its title, and the first column of each key line."""
    from rich.console import Console  # noqa: PLC0415 - keep CLI start-up light
    from rich.table import Table  # noqa: PLC0415

    out = Console(stderr=True)
    table = Table(title="verify" if target_id is None else f"verify: target {target_id}", show_header=False)
    rows = [
        ("source items (live)", report.source_items),
        ("source tombstones", report.source_tombstones),
        ("filtered by the pipeline", report.filtered),
        ("target items (live)", report.target_items),
        ("target tombstones", report.target_tombstones),
        ("missing in target", report.count("missing_in_target")),
        ("missing in source (extra in target)", report.count("missing_in_source")),
        ("different", report.count("different")),
        ("transform failed", report.count("transform_failed")),
    ]
    if repair:
        rows += [
            ("repaired", report.repaired),
            ("repair lost to a newer version", report.repair_superseded),
            ("repair failed", report.repair_failed),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    table.add_row("seconds", f"{report.duration_s:.1f}")
    out.print(table)
    # Keys only (never other attribute values), one difference per line on stdout, for scripts.
    prefix = "" if target_id is None else f"{target_id}\t"
    for diff in report.differences[:max_keys]:
        click.echo(f"{prefix}{diff.kind}\t{json.dumps(diff.keys, sort_keys=True, default=json_default)}")
    if len(report.differences) > max_keys:
        click.echo(f"... and {len(report.differences) - max_keys} more differing keys", err=True)


@click.command("verify")
@config_option
@click.option("--repair", is_flag=True, help="Rewrite differing items through the conditional writer.")
@click.option(
    "--segments",
    type=click.IntRange(1, 1_000_000),
    default=4,
    show_default=True,
    help="Parallel Scan segments per table.",
)
@click.option(
    "--ignore-attribute",
    "ignore_attributes",
    multiple=True,
    help="Leave this attribute out of the comparison (repeatable); markers are always left out.",
)
@click.option("--max-keys", type=int, default=1000, show_default=True, help="Print at most this many differing keys.")
@click.option(
    "--target",
    "target_name",
    default=None,
    metavar="NAME",
    help="With targets: compare the source with this target only (default: with each, one report each).",
)
def command(
    config_path: Path | None,
    *,
    target_name: str | None,
    repair: bool,
    segments: int,
    ignore_attributes: tuple[str, ...],
    max_keys: int,
) -> None:
    """Compare source and target tables item by item; exit 1 when they differ.

    Both tables are scanned in parallel segments with consistent reads. Replication markers are left
    out of the comparison and tombstones count as absent. With filters or transforms configured, each
    source item is first run through the same pipeline (as a synthetic INSERT record), so a filtered or
    transformed replica verifies against what replication would have written.

    Differing keys go to stdout, one per line (kind, then the key as DynamoDB JSON); no other
    attribute values are printed. With --repair, differing items are rewritten from the source through
    the same last-writer-wins writer as replication (items missing from the source get a versioned
    delete); the exit status is then 0 only if every difference was repaired. Run it while both sides
    are quiet: a write in flight shows up as a difference.

    With targets (several), the source is compared with each target in turn (or the one --target names),
    one report each; each key line starts with the target's name; exit 1 when any target differs.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from replicator.ops.verify import verify  # noqa: PLC0415

    cfg = load_or_exit(config_path)
    ids = [t.target_id for t in cfg.targets]
    if target_name is not None and target_name not in ids:
        raise ConfigError(f"--target {target_name!r}: the configuration has no such target; its targets: {ids}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    diverged = False
    for target in cfg.targets:
        if target_name is not None and target.target_id != target_name:
            continue
        with Progress(*columns, transient=True, console=_stderr_console()) as progress:
            report = asyncio.run(
                verify(
                    cfg.for_target(target),
                    segments=segments,
                    repair=repair,
                    ignore_attributes=frozenset(ignore_attributes),
                    progress=_RichProgress(progress),
                )
            )
        named = target.target_id if cfg.fan_out else None
        _print_report(report, repair=repair, max_keys=max_keys, target_id=named)
        remaining = report.unrepaired if repair else len(report.differences)
        where = "" if named is None else f"target {named}: "
        if remaining:
            click.echo(f"{where}diverged: {remaining} differing keys", err=True)
            diverged = True
        else:
            click.echo(f"{where}ok: tables match", err=True)
    if diverged:
        sys.exit(EXIT_DIVERGED)


def _stderr_console() -> Any:  # noqa: ANN401 - rich Console
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=True)
