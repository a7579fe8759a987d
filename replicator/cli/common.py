"""What every sub-command shares: ``--config``, ``--log-level``, loading the config and configuring logs.

Every command takes the service's ``--config`` and loads it the same way (``config_option``,
``load_or_exit``): a bad file or value exits 2 with a message naming the key (``cli.errors``). Loading also configures
the logs (``logging`` in the config, ``--log-level`` over it), so a failure is reported in the same
format as the logs (see ``replicator.cli.errors``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from replicator.core.config import Config

F = TypeVar("F", bound=Callable[..., object])

LOG_LEVEL = "replicator.log_level"
"""``click`` context meta key: the ``--log-level`` given (upper case), if any."""
JSON_LOGS = "replicator.json_logs"
"""``click`` context meta key: True once the command's logs were configured as JSON."""

LOG_LEVELS = ("debug", "info", "warning", "error")


def _remember_log_level(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[LOG_LEVEL] = value.upper()


def log_level_option(func: F) -> F:
    """``--log-level``: overrides ``logging.level``; ``debug`` also shows the traceback of a failure."""
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_remember_log_level,
        help="Override logging.level; debug also prints the traceback of a failure.",
    )(func)


def config_option(func: F) -> F:
    """The ``--config FILE`` and ``--log-level`` options every command shares."""
    return log_level_option(
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            default=None,
            help="YAML config file; REPLICATOR_<SECTION>__<KEY> variables override it. "
            "Omit to configure from the environment.",
        )(func)
    )


def load_or_exit(config_path: Path | None) -> Config:
    """Load the configuration, compile its filters and transforms and configure the logs.

    Compiling here, before a command opens any client, makes a bad filter or transform fail at once,
    naming its index and path, whatever the command: the ConfigError reaches ``cli.errors`` (exit 2).
    """
    from replicator.core.config import load_config  # noqa: PLC0415 - keep CLI start-up light
    from replicator.core.errors import ConfigError  # noqa: PLC0415 - same
    from replicator.pipeline.stages import Pipeline  # noqa: PLC0415 - same

    cfg = load_config(config_path)
    # Each target's own, with targets: (one target: the top-level filters and transforms).
    for index, target in enumerate(cfg.targets):
        try:
            Pipeline.from_config(cfg.for_target(target))
        except ConfigError as exc:
            if target.filters is None and target.transforms is None:
                raise  # the top-level ones: the message names them already
            raise ConfigError(f"targets[{index}] ({target.target_id}): {exc}") from exc
    _configure_logs(cfg)
    return cfg


def _configure_logs(cfg: Config) -> None:
    from replicator.observe import logs  # noqa: PLC0415 - keep CLI start-up light

    ctx = click.get_current_context()
    level = ctx.meta.get(LOG_LEVEL, cfg.logging.level)
    logs.configure(level, cfg.logging.format, log_item_contents=cfg.logging.log_item_contents)
    ctx.meta[JSON_LOGS] = cfg.logging.format == "json" or (cfg.logging.format == "auto" and not sys.stderr.isatty())
