"""``replicator lambda-filters``: the config's filters as an event source mapping's FilterCriteria.

With the Lambda deployment, the mapping drops unwanted records before the function is invoked (they
cost no invocation); the handler runs the same filters again, so both modes keep one implementation.

With ``targets:`` one mapping feeds every target: it must let through every record that any target
wants, so its criteria are the OR of each target's effective filters (its own, else the top-level ones),
each distinct pattern once, and none at all when some target has no filter. Each target's own filters
still apply in the function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from replicator.cli.common import config_option, load_or_exit

if TYPE_CHECKING:
    from replicator.core.config import Config

_NO_FILTERS = "no filters configured: leave FilterCriteria out of the event source mapping"


_SUBSET_MODE = (
    "filter_mode subset: the handler must see the changes whose OldImage matched (deletes, MODIFYs leaving"
    " the subset), which FilterCriteria would drop; leave FilterCriteria out and let the handler filter"
)


def _criteria(config_path: Path | None) -> tuple[dict[str, Any], list[str]]:
    from replicator.pipeline.filters import compile_filters, lambda_filter_criteria  # noqa: PLC0415 - CLI start-up

    cfg = load_or_exit(config_path)  # the whole configuration, transforms included, or exit 2
    quota = cfg.filters_per_event_source_mapping
    warnings: list[str] = []
    for target in cfg.targets:
        warnings.extend(compile_filters(cfg.for_target(target).filters, max_filters=quota).warnings)
    warnings = list(dict.fromkeys(warnings))
    patterns, unfiltered = _any_target_wants(cfg)
    if unfiltered is not None and cfg.fan_out:
        note = f"target {unfiltered!r} has no filters (it replicates every record): {_NO_FILTERS}"
        return {"Filters": []}, [*warnings, note]
    if cfg.filter_mode == "subset" and patterns:
        return {"Filters": []}, [*warnings, _SUBSET_MODE]
    if len(patterns) > quota:
        over = (
            f"the targets' filters are {len(patterns)} distinct patterns together, above"
            f" filters_per_event_source_mapping ({quota}): {_NO_FILTERS} (each target filters in the function),"
            " or raise the quota (up to 10) and set filters_per_event_source_mapping"
        )
        return {"Filters": []}, [*warnings, over]
    return lambda_filter_criteria(patterns, max_filters=quota), warnings


def _any_target_wants(cfg: Config) -> tuple[list[Any], str | None]:
    """The OR of every target's effective filters (each pattern once), and a target without any (if one)."""
    if not cfg.fan_out:
        return list(cfg.filters), None
    patterns: list[Any] = []
    seen: set[str] = set()
    for target in cfg.targets:
        own = cfg.for_target(target).filters
        if not own:
            return [], target.target_id
        for pattern in own:
            text = json.dumps(pattern, sort_keys=True)
            if text not in seen:
                seen.add(text)
                patterns.append(pattern)
    return patterns, None


def render_yaml(criteria: dict[str, Any]) -> str:
    """Render ``FilterCriteria:`` for an ``AWS::Serverless::Function`` DynamoDB event's Properties."""
    # Each Pattern stays one JSON string on one line (Lambda parses it); a huge width stops folding.
    return yaml.safe_dump({"FilterCriteria": criteria}, sort_keys=False, width=2**31 - 1, default_flow_style=False)


@click.command("lambda-filters")
@config_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "yaml"]),
    default="json",
    show_default=True,
    help="json: the FilterCriteria object (for the CLI or the API); yaml: a snippet for the SAM template.",
)
def command(config_path: Path | None, output_format: str) -> None:
    """Print the event source mapping FilterCriteria equivalent to the configuration's filters."""
    criteria, warnings = _criteria(config_path)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    why_none = _SUBSET_MODE if _SUBSET_MODE in warnings else _NO_FILTERS
    if not criteria["Filters"] and why_none == _NO_FILTERS and not any(_NO_FILTERS in w for w in warnings):
        click.echo(f"note: {_NO_FILTERS}", err=True)
    if output_format == "json":
        click.echo(json.dumps(criteria, indent=2))
    elif criteria["Filters"]:
        click.echo(render_yaml(criteria), nl=False)
    else:
        click.echo(f"# {why_none}")
