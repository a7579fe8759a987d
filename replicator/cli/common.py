"""What every sub-command shares: the ``--config`` option and loading it.

Every command takes the service's ``--config`` and loads it the same way (``config_option``,
``load_or_exit``): a bad file or value exits 2 with a message naming the key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from replicator.core.config import Config

F = TypeVar("F", bound=Callable[..., object])


def config_option(func: F) -> F:
    """The ``--config FILE`` option every command shares."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="YAML config file; REPLICATOR_<SECTION>__<KEY> variables override it. "
        "Omit to configure from the environment.",
    )(func)


def load_or_exit(config_path: Path | None) -> Config:
    """Load the configuration and compile its filters and transforms, or print what is wrong and exit 2.

    Compiling here, before a command opens any client, makes a bad filter or transform fail at once,
    naming its index and path, whatever the command.
    """
    from replicator.core.config import load_config  # noqa: PLC0415 - keep CLI start-up light
    from replicator.pipeline.stages import Pipeline  # noqa: PLC0415 - same

    try:
        cfg = load_config(config_path)
        Pipeline.from_config(cfg)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    return cfg
