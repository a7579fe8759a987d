"""Backfill wiring: clients, progress store, processor and progress bar from the configuration.

With ``targets:`` (``run_backfill_targets``) the source is copied into each target in turn (or into the
one ``--target`` names), each exactly as a single-target backfill of ``Config.for_target`` (its own
filters, transforms and dead letters) with its own saved progress (``<table>@<target id>``): a target
whose copy failed resumes on its own. Each target costs one scan of the source.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import structlog

from replicator.aws.clients import open_clients
from replicator.core.errors import ConfigError
from replicator.observe.metrics import Metrics
from replicator.ops.backfill.progress import (
    BackfillError,
    DynamoDBProgressStore,
    JsonProgressStore,
    ProgressStore,
    default_progress_path,
)
from replicator.ops.backfill.scan import Backfill, BackfillSettings, BackfillSummary
from replicator.ops.progress import open_progress_bar

if TYPE_CHECKING:
    from pathlib import Path

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.config import Config
    from replicator.sink.deadletter import DeadLetterSink

log = structlog.get_logger(__name__)


async def table_key_names(client: DynamoDBClient, table: str) -> tuple[tuple[str, ...], int]:
    """Return the table's key attribute names (hash first) and its approximate item count."""
    desc = (await client.describe_table(TableName=table))["Table"]
    schema = sorted(desc["KeySchema"], key=lambda k: k["KeyType"] != "HASH")
    return tuple(k["AttributeName"] for k in schema), int(desc.get("ItemCount", 0))


async def run_backfill(
    cfg: Config,
    settings: BackfillSettings,
    *,
    metrics: Metrics | None = None,
    dead_letters: DeadLetterSink | None = None,
    progress_path: Path | None = None,
    show_progress: bool = False,
    progress_key: str | None = None,
) -> BackfillSummary:
    """Open the clients, the progress store and the processor from ``cfg`` and run the backfill.

    ``dead_letters`` None: the configured ``failure.on_failure.destination`` (if any) is opened.
    Copies into ``cfg.target`` only: with several targets, see ``run_backfill_targets``.
    """
    from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore  # noqa: PLC0415 - avoid import cycle
    from replicator.runtime.wiring import build_processor  # noqa: PLC0415 - same
    from replicator.sink.deadletter import from_config as dead_letters_from_config  # noqa: PLC0415 - same

    table = cfg.source.table
    if table is None:
        raise BackfillError("backfill needs source.table (a stream ARN alone does not name a table to scan)")
    metrics = metrics or Metrics()
    # Backfilled copies are old by design (their time is the scan's): a record-age limit meant for
    # stream lag must not dead-letter them.
    failure = cfg.failure.model_copy(update={"maximum_record_age_seconds": -1})
    cfg = cfg.model_copy(update={"failure": failure})
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, cfg)
        store: ProgressStore
        if progress_path is None and cfg.checkpoint.backend == "dynamodb":
            assert cfg.checkpoint.table is not None  # noqa: S101 - validated by the config model
            await DynamoDBCheckpointStore(clients.checkpoint_table(), cfg.checkpoint.table).start()
            store = DynamoDBProgressStore(clients.checkpoint_table(), cfg.checkpoint.table)
        else:
            store = JsonProgressStore(progress_path or default_progress_path(cfg))
        if dead_letters is None:
            dead_letters = await dead_letters_from_config(cfg, stack, metrics=metrics)
        # The source client too: with the active-active config deletes are tombstoned in the source, as by ``run``.
        processor = build_processor(
            cfg,
            target_client=clients.target,
            metrics=metrics,
            dead_letters=dead_letters,
            source_client=clients.source,
        )
        key_names, item_count = await table_key_names(clients.source, table)
        # ItemCount is refreshed about every six hours: a guide for the bar, not a promise.
        on_page = open_progress_bar(stack, "backfill", table, total=item_count or None) if show_progress else None
        backfill = Backfill(
            source_client=clients.source,
            table=table,
            key_names=key_names,
            processor=processor,
            progress_store=store,
            settings=settings,
            metrics=metrics,
            tombstone_attribute=cfg.replication.tombstone_attribute,
            on_page=on_page,
            progress_key=progress_key,
        )
        return await backfill.run()


async def run_backfill_targets(
    cfg: Config,
    settings: BackfillSettings,
    *,
    target_name: str | None = None,
    progress_path: Path | None = None,
    show_progress: bool = False,
) -> dict[str, BackfillSummary]:
    """Copy the source into every target of ``cfg`` in turn (or the one ``target_name`` names), by target id.

    Raises ConfigError for a ``target_name`` the configuration does not have.
    """
    ids = [t.target_id for t in cfg.targets]
    if target_name is not None and target_name not in ids:
        raise ConfigError(f"--target {target_name!r}: the configuration has no such target; its targets: {ids}")
    summaries: dict[str, BackfillSummary] = {}
    for target in cfg.targets:
        if target_name is not None and target.target_id != target_name:
            continue
        log.info("backfill_target", target=target.target_id, table=target.table)
        summaries[target.target_id] = await run_backfill(
            cfg.for_target(target),
            settings,
            progress_path=progress_path,
            show_progress=show_progress,
            # One target alone keeps the key it always had; with several, each has its own.
            progress_key=None if not cfg.fan_out else f"{cfg.source.table}@{target.target_id}",
        )
    return summaries
